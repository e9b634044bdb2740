"""Open Inference Protocol tensors ↔ numpy: datatypes, shapes, limits, NaN policy.

Decoding checks a request tensor against the model's declared input before and
after conversion, and raises ``InvalidInput`` with a message that names the input,
what was expected and what was sent.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from ..errors import InvalidInput

# Flat numbers straight into the model's float array, binary BYTES split into str, a JSON
# body's containers and tokens counted: the compiled module or its twin (whose fill_floats
# declines, leaving the general path to decide), chosen once as the binning kernel's is.
if os.environ.get("MLSERVE_NO_EXTENSIONS") == "1":
    from ._decode_py import decode_bytes as decode_bytes
    from ._decode_py import fill_floats
    from ._decode_py import json_counts as json_counts
else:
    try:
        from ._decode import decode_bytes as decode_bytes
        from ._decode import fill_floats
        from ._decode import json_counts as json_counts
    except ImportError as exc:  # pragma: no cover - a build without the extension
        logging.getLogger(__name__).warning("compiled JSON decode unavailable (%s)", exc)
        from ._decode_py import decode_bytes as decode_bytes
        from ._decode_py import fill_floats
        from ._decode_py import json_counts as json_counts

# The most elements one BYTES tensor may hold, JSON or binary (the JSON body scan counts a
# BYTES input at this too): each is a str object made on the event loop.
MAX_BYTES_ELEMENTS = 1 << 17

# V2 datatype → numpy dtype (BYTES: numpy object arrays of str, as onnxruntime wants).
V2_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}

# onnxruntime's type strings → V2 datatype.
ONNX_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

NUMPY_TO_V2: dict[np.dtype[Any], str] = {v: k for k, v in V2_TO_NUMPY.items()}
# dtype.char → V2 datatype for outputs ("U"/"S": fixed-width strings, also BYTES).
_CHAR_TO_V2 = {dtype.char: name for dtype, name in NUMPY_TO_V2.items()} | {
    "U": "BYTES",
    "S": "BYTES",
}
_INT_RANGE = {
    np.dtype(t).char: (int(np.iinfo(t).min), int(np.iinfo(t).max))
    for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
}
_FLOAT_MAX = {"f": float(np.finfo(np.float32).max), "e": float(np.finfo(np.float16).max)}

# Which kinds of JSON values numpy may infer for each datatype family.
_ACCEPTED_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b", "O": "U"}
_KIND_WORDS = {"f": "numbers", "i": "integers", "u": "integers", "b": "booleans", "O": "strings"}


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as declared in the ONNX graph; ``-1`` marks a free dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    # (index, size) of every fixed dimension, for the per-request shape check.
    fixed: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fixed = tuple((i, d) for i, d in enumerate(self.shape) if d != -1)
        object.__setattr__(self, "fixed", fixed)

    @property
    def dtype(self) -> np.dtype[Any]:
        return V2_TO_NUMPY[self.datatype]

    def shape_text(self) -> str:
        return "[" + ", ".join(str(d) for d in self.shape) + "]"

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class InputLimits:
    """Limits applied to every request tensor of one model version."""

    max_elements: int
    max_rows: int
    allow_nan: bool
    cast: str = "safe"  # model.toml [inputs] cast (runtime/columns.py)


def check_header(spec: TensorSpec, tensor: dict[str, Any], limits: InputLimits) -> tuple[int, ...]:
    """Validate datatype and claimed shape (before any data is touched); return the shape."""
    datatype = tensor.get("datatype")
    if datatype != spec.datatype:
        if not isinstance(datatype, str):
            raise InvalidInput(
                f"input {spec.name!r}: 'datatype' is missing or not a string", reason="datatype"
            )
        raise InvalidInput(
            f"input {spec.name!r} expects datatype {spec.datatype}, got {datatype[:32]}",
            reason="datatype",
        )
    shape = tensor.get("shape")
    if type(shape) is not list:
        raise _bad_dims(spec)
    for d in shape:
        if type(d) is not int or d < 0:
            raise _bad_dims(spec)
    if len(shape) != len(spec.shape):  # before any product: a hostile rank is cheap to refuse
        raise _wrong_shape(spec, shape)
    count = 1
    for d in shape:
        count *= d
    for i, want in spec.fixed:
        if shape[i] != want:
            raise _wrong_shape(spec, shape)
    if count > limits.max_elements:
        raise InvalidInput(
            f"input {spec.name!r} claims {count} elements, over the limit of {limits.max_elements}",
            reason="size",
        )
    if shape and shape[0] > limits.max_rows:
        raise InvalidInput(
            f"input {spec.name!r} has {shape[0]} rows, over the limit of {limits.max_rows}",
            reason="rows",
        )
    return tuple(shape)


def _wrong_shape(spec: TensorSpec, shape: list[Any]) -> InvalidInput:
    return InvalidInput(
        f"input {spec.name!r} expects shape {spec.shape_text()}, got {_shape_text(shape)}",
        reason="shape",
    )


def _bad_dims(spec: TensorSpec) -> InvalidInput:
    return InvalidInput(
        f"input {spec.name!r}: 'shape' must be a list of non-negative integers", reason="shape"
    )


def decode_json(spec: TensorSpec, tensor: dict[str, Any], limits: InputLimits) -> np.ndarray:
    """A V2 JSON tensor (flat or nested ``data``) as a numpy array of the model's dtype."""
    shape = check_header(spec, tensor, limits)
    data = tensor.get("data")
    if not isinstance(data, list):
        raise InvalidInput(f"input {spec.name!r}: 'data' must be a JSON array", reason="data")
    target = spec.dtype
    count = math.prod(shape)
    if data and type(data[0]) is not list and len(data) != count:  # flat: check before converting
        raise _count_mismatch(spec, shape, len(data))
    if target.kind == "O":
        return _decode_strings(spec, data, shape, count)
    if target.char in "fd" and data and type(data[0]) is not list:
        out = np.empty(count, dtype=target)
        filled = fill_floats(data, out)  # -1: not plain numbers; the general path decides
        if filled == 0 or (filled == 1 and limits.allow_nan):
            return out.reshape(shape)
        if filled == 1:
            raise _not_finite(spec)
    # numpy would infer a fixed-width str dtype as wide as the longest string for every
    # element: one long string among many short ones must not allocate count × its size.
    if data and not _numbers_only(data, len(shape)) and _leaf_types(data) & {str, bytes}:
        raise _wrong_kind(spec)
    try:
        # Infer first, then check the kind: np.array(["1.5"], dtype=float32) would accept
        # strings silently; a V2 FP32 tensor must carry JSON numbers.
        raw = np.array(data)
    except (ValueError, OverflowError, TypeError) as exc:
        raise _ragged(spec, exc) from None
    if raw.size != count:
        raise _count_mismatch(spec, shape, raw.size)
    if raw.ndim != 1 and raw.shape != shape and not _empty_prefix(raw.shape, shape):
        raise _nested_mismatch(spec, raw.shape, shape)
    if count and target.kind in "iu" and raw.dtype.kind in "fO":
        # numpy infers float64 or object for integers beyond int64: convert those exactly.
        raw = _big_integers(spec, data)
    if count and raw.dtype.kind not in _ACCEPTED_KINDS[target.kind]:
        raise _wrong_kind(spec)
    if target.kind in "iu" and count and raw.dtype != target:
        low, high = _INT_RANGE[target.char]
        if raw.min() < low or raw.max() > high:
            raise _out_of_range(spec)
    if target.kind != "f":
        # Integers and booleans: no NaN, no overflow.
        return raw.astype(target, copy=False).reshape(shape)
    # Floats, and JSON integers into floats (70000 overflows FP16): the NaN policy applies.
    try:
        array = raw.astype(target, copy=False).reshape(shape)
    except RuntimeWarning:  # overflow where warnings are errors; the server ignores it
        if not limits.allow_nan:
            raise _not_finite(spec) from None
        with np.errstate(over="ignore"):
            return raw.astype(target).reshape(shape)
    if count and not limits.allow_nan and not np.isfinite(array).all():
        raise _not_finite(spec)
    return array


def check_bytes_count(spec: TensorSpec, count: int) -> None:
    """At most ``MAX_BYTES_ELEMENTS`` strings a BYTES tensor, JSON or binary."""
    if count > MAX_BYTES_ELEMENTS:
        raise InvalidInput(
            f"input {spec.name!r} claims {count} BYTES elements, over the limit of "
            f"{MAX_BYTES_ELEMENTS} strings a tensor (send fewer rows a request)",
            reason="size",
        )


def _decode_strings(
    spec: TensorSpec, data: list[Any], shape: tuple[int, ...], count: int
) -> np.ndarray:
    """BYTES: an object array of the request's own str objects (no fixed-width copy)."""
    check_bytes_count(spec, count)
    try:
        raw = np.array(data, dtype=object)  # ragged nesting leaves lists as elements
    except ValueError as exc:
        raise _ragged(spec, exc) from None
    if raw.shape != shape and not (raw.ndim == 1 and raw.size == count):
        if _empty_prefix(raw.shape, shape):
            return np.empty(shape, dtype=object)
        if raw.ndim == 1 or raw.size != count:
            raise _count_mismatch(spec, shape, raw.size)
        raise _nested_mismatch(spec, raw.shape, shape)
    if count and set(map(type, raw.flat)) != {str}:
        raise _wrong_kind(spec)
    return raw.reshape(shape)


def _empty_prefix(found: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """Nested ``data`` of an empty tensor ends at its first zero dimension: ``[[], []]`` is
    all that JSON can say of shape ``[2, 0, 3]``."""
    return bool(found) and found[-1] == 0 and found == shape[: len(found)]


def _numbers_only(data: list[Any], rank: int) -> bool:
    """Whether flat or nested ``data`` (at most ``rank`` levels deep) holds only JSON numbers
    and booleans, at C speed: each level of lists is flattened by ``chain`` (checked to hold
    only lists, a cost per list, not per value) down to the innermost lists, whose values
    are summed."""
    level: list[Any] = data
    for _ in range(rank - 2):  # every level above the innermost lists
        if not level or type(level[0]) is not list:
            break
        if set(map(type, level)) != {list}:
            return False
        level = list(chain.from_iterable(level))
    try:
        if level and type(level[0]) is list:
            if set(map(type, level)) != {list}:
                return False
            sum(map(sum, level))
        else:
            sum(level)
    except (TypeError, OverflowError):  # a str, None, dict, deeper list, or huge int
        return False
    return True


def _leaf_types(data: list[Any]) -> set[type]:
    """The types of every non-list value in nested ``data`` (iterative: no recursion limit)."""
    kinds: set[type] = set()
    stack = [data]
    while stack:
        items = stack.pop()
        found = set(map(type, items))
        if list in found:
            found.discard(list)
            stack.extend(item for item in items if type(item) is list)
        kinds |= found
    return kinds


def _count_mismatch(spec: TensorSpec, shape: tuple[int, ...], held: int) -> InvalidInput:
    return InvalidInput(
        f"input {spec.name!r}: shape {_shape_text(list(shape))} needs "
        f"{math.prod(shape)} values, 'data' holds {held}",
        reason="data",
    )


def _ragged(spec: TensorSpec, exc: Exception) -> InvalidInput:
    return InvalidInput(
        f"input {spec.name!r}: 'data' is ragged or mixed ({_first_line(exc)})", reason="data"
    )


def _nested_mismatch(
    spec: TensorSpec, found: tuple[int, ...], shape: tuple[int, ...]
) -> InvalidInput:
    return InvalidInput(
        f"input {spec.name!r}: nested 'data' has shape {_shape_text(list(found))}, "
        f"'shape' says {_shape_text(list(shape))}",
        reason="data",
    )


def _wrong_kind(spec: TensorSpec) -> InvalidInput:
    return InvalidInput(
        f"input {spec.name!r} ({spec.datatype}) must hold JSON {_KIND_WORDS[spec.dtype.kind]}",
        reason="data",
    )


def _not_finite(spec: TensorSpec) -> InvalidInput:
    return InvalidInput(
        f"input {spec.name!r} holds NaN or infinite values (out of {spec.datatype} range), "
        "which this model does not allow (model.toml [inputs] allow_nan = true allows them)",
        reason="nan",
    )


def encode_json(name: str, array: np.ndarray, *, with_data: bool = True) -> dict[str, Any]:
    """An output array as a V2 JSON tensor; numeric data goes to orjson as a numpy array."""
    # By dtype.char first (cheap); equal dtypes may differ in char (long vs longlong).
    datatype = _CHAR_TO_V2.get(array.dtype.char) or NUMPY_TO_V2.get(array.dtype)
    if datatype is None:
        raise TypeError(f"output {name!r} has unsupported dtype {array.dtype}")
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if with_data:
        # orjson serialises C-contiguous numeric and bool arrays natively, not strings.
        flat = array.ravel()
        tensor["data"] = [_text(x) for x in flat.tolist()] if datatype == "BYTES" else flat
    return tensor


def _big_integers(spec: TensorSpec, data: list[Any]) -> np.ndarray:
    try:
        return np.array(_integer_leaves(spec, data), dtype=spec.dtype)
    except OverflowError:
        raise _out_of_range(spec) from None


def _integer_leaves(spec: TensorSpec, data: list[Any]) -> list[int]:
    """The leaves of nested ``data`` in order, each a JSON integer (not a bool)."""
    flat: list[Any] = []

    def walk(items: list[Any]) -> None:  # JSON nesting depth is bounded by the parser
        for item in items:
            if isinstance(item, list):
                walk(item)
            elif type(item) is int:
                flat.append(item)
            else:
                raise _wrong_kind(spec)

    walk(data)
    return flat


def _out_of_range(spec: TensorSpec) -> InvalidInput:
    info = np.iinfo(spec.dtype)
    return InvalidInput(
        f"input {spec.name!r}: values outside the {spec.datatype} range [{info.min}, {info.max}]",
        reason="data",
    )


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _shape_text(shape: list[int] | tuple[int, ...]) -> str:
    if len(shape) > 8:  # a hostile shape must not make a megabyte error message
        return "[" + ", ".join(str(d)[:20] for d in shape[:8]) + f", … ({len(shape)} dims)]"
    return "[" + ", ".join(str(d)[:20] for d in shape) + "]"


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
