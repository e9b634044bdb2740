"""Triton's binary tensor data extension: raw little-endian tensor bytes ↔ numpy.

A request body is ``JSON header`` + ``binary blobs``; ``Inference-Header-Content-Length``
says where the JSON ends, and each input with ``parameters.binary_data_size`` takes
the next that many bytes. Fixed-width datatypes are the row-major element bytes
(BOOL one byte each); BYTES elements are each a 4-byte little-endian length and the
bytes. Numeric inputs become zero-copy numpy views of the request body.

BYTES are split in compiled code (``_decode.pyx`` ``decode_bytes``, through the shim in
``tensors.py``): the framing is checked without allocating, then each element becomes a str.
A tensor of millions of strings would still hold the event loop, so a BYTES tensor holds at
most ``MAX_BYTES_ELEMENTS``, whatever the model's ``max_elements`` (the timings behind the
limit are in docs/RELIABILITY.md, "The event loop is never held").
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from ..errors import InvalidInput
from .tensors import (
    MAX_BYTES_ELEMENTS,
    InputLimits,
    TensorSpec,
    check_bytes_count,
    check_header,
    decode_bytes,
)

__all__ = ["MAX_BYTES_ELEMENTS"]  # re-exported: the limit's home is tensors.py

_LENGTH = struct.Struct("<I")


def shared_memory_refused(name: str) -> InvalidInput:
    """The refusal of an input that names a shared-memory region (not served)."""
    return InvalidInput(
        f"input {name[:64]!r}: shared memory (parameters.shared_memory_region, Triton's "
        "extension) is not supported; send the tensor's data in the request",
        reason="binary",
    )


def binary_size(tensor: dict[str, Any]) -> int | None:
    """The tensor's ``binary_data_size`` parameter, validated, or ``None`` when JSON."""
    params = tensor.get("parameters")
    if not params or not isinstance(params, dict):
        return None
    size = params.get("binary_data_size")
    if size is None:
        if "shared_memory_region" in params:
            raise shared_memory_refused(str(tensor.get("name")))
        return None
    if type(size) is not int or size < 0:
        raise InvalidInput(
            f"input {str(tensor.get('name'))[:64]!r}: binary_data_size must be a non-negative "
            f"integer, got {str(size)[:32]}",
            reason="binary",
        )
    return size


def decode_binary(
    spec: TensorSpec, tensor: dict[str, Any], blob: memoryview, limits: InputLimits
) -> np.ndarray:
    """A tensor from its binary blob; the claimed shape is checked before anything else."""
    shape = check_header(spec, tensor, limits)
    count = math.prod(shape)
    if spec.datatype == "BYTES":
        return _decode_bytes(spec, shape, count, blob)
    dtype = spec.dtype.newbyteorder("<")
    expected = count * dtype.itemsize
    if len(blob) != expected:
        raise InvalidInput(
            f"input {spec.name!r}: binary_data_size is {len(blob)} bytes, shape "
            f"{list(shape)} of {spec.datatype} needs {expected}",
            reason="binary",
        )
    array = np.frombuffer(blob, dtype=dtype, count=count).reshape(shape)
    if spec.datatype == "BOOL" and count and array.view(np.uint8).max() > 1:
        raise InvalidInput(f"input {spec.name!r}: BOOL bytes must be 0 or 1", reason="binary")
    if spec.dtype.kind == "f" and not limits.allow_nan and count and not np.isfinite(array).all():
        raise InvalidInput(
            f"input {spec.name!r} holds NaN or infinite values, which this model does not allow "
            "(model.toml [inputs] allow_nan = true allows them)",
            reason="nan",
        )
    return array


def _decode_bytes(
    spec: TensorSpec, shape: tuple[int, ...], count: int, blob: memoryview
) -> np.ndarray:
    check_bytes_count(spec, count)
    decoded = decode_bytes(blob, count)
    if isinstance(decoded, np.ndarray):
        return decoded.reshape(shape)
    kind, *where = decoded
    name = spec.name
    if kind == "short":
        message = f"input {name!r}: BYTES data ends after {where[0]} of {count} elements"
    elif kind == "claims":
        message = (
            f"input {name!r}: BYTES element {where[0]} claims {where[1]} bytes, {where[2]} remain"
        )
    elif kind == "utf8":
        message = (
            f"input {name!r}: BYTES element {where[0]} is not valid UTF-8 "
            "(string tensors hold text)"
        )
    else:
        message = f"input {name!r}: {where[0]} bytes left over after {count} BYTES elements"
    raise InvalidInput(message, reason="binary")


def encode_binary(array: np.ndarray) -> bytes:
    """An output array's raw bytes in the extension's layout."""
    if array.dtype.kind in "OUS":
        parts = []
        for value in array.reshape(-1).tolist():
            raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts.append(_LENGTH.pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(little).tobytes()


def raw_shape(spec: TensorSpec, size: int) -> tuple[int, ...]:
    """The shape of a raw single-input body (header length 0): one free dimension, inferred."""
    if spec.datatype == "BYTES":
        raise InvalidInput(
            "a raw binary body (Inference-Header-Content-Length: 0) cannot carry BYTES",
            reason="binary",
        )
    free = [i for i, d in enumerate(spec.shape) if d == -1]
    fixed = math.prod(d for d in spec.shape if d != -1) * spec.dtype.itemsize
    if len(free) > 1:
        raise InvalidInput(
            f"input {spec.name!r} has shape {spec.shape_text()}: a raw binary body needs at "
            "most one free dimension",
            reason="binary",
        )
    if not free:
        if size != fixed:
            raise InvalidInput(
                f"input {spec.name!r} needs {fixed} bytes, the raw body has {size}",
                reason="binary",
            )
        return spec.shape
    if fixed == 0 or size % fixed:
        raise InvalidInput(
            f"input {spec.name!r} ({spec.shape_text()} {spec.datatype}): a raw body of {size} "
            f"bytes is not a whole number of {fixed}-byte rows",
            reason="binary",
        )
    shape = list(spec.shape)
    shape[free[0]] = size // fixed
    return tuple(shape)
