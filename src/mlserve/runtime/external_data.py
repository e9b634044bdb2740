"""ONNX external data: tensors whose bytes live in another file must stay in the version.

An ONNX initializer (or a tensor in a node attribute, a subgraph, a function, a sparse
tensor) may keep its data in a file named by its ``external_data`` ``location`` entry,
relative to the model file. A hostile model could name ``../../etc/shadow``, an absolute
path, or a symlink beside it that leads out of the registry. onnxruntime ≥ 1.17 refuses
most of these itself, but its message carries absolute server paths and older builds do
not check at all, so every version is checked here before onnxruntime opens it.

The check reads ``model.onnx``'s protobuf wire format directly (``onnx`` is not a runtime
dependency): a model with no ``location`` bytes anywhere (nearly every model) costs one
``mmap.find``; only the others are walked, and only along the messages that can hold
tensors. Fields the walker does not know (groups included) are skipped; a file that names
``location`` somewhere but cannot be walked is refused, since where its external data lives
cannot be verified (onnxruntime might still read it).
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from ..errors import ModelLoadError

# Field numbers from onnx.proto: which fields of which message lead to tensors.
_MODEL = {7: "graph", 20: "training", 25: "function"}
_GRAPH = {1: "node", 5: "tensor", 15: "sparse"}
_NODE = {5: "attribute"}
_ATTRIBUTE = {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"}
_SPARSE = {1: "tensor", 2: "tensor"}
_FUNCTION = {7: "node", 11: "attribute"}
_TRAINING = {1: "graph", 2: "graph"}
_MESSAGES = {
    "graph": _GRAPH,
    "node": _NODE,
    "attribute": _ATTRIBUTE,
    "sparse": _SPARSE,
    "function": _FUNCTION,
    "training": _TRAINING,
}
_TENSOR_NAME, _TENSOR_EXTERNAL = 8, 13
_MAX_DEPTH = 64  # subgraphs within subgraphs; onnxruntime itself refuses far less


class _Malformed(Exception):
    """Not a protobuf this walker can read."""


def check_external_data(model_file: Path) -> None:
    """Raise ``ModelLoadError`` when a tensor of ``model_file`` keeps its data outside the
    model file's directory (an absolute location, ``..``, or a symlink leading out)."""
    try:
        with model_file.open("rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                return  # onnxruntime refuses an empty file with its own reason
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                if mm.find(b"location") < 0:
                    return  # no external data can be named without that key
                view = memoryview(mm)
                try:
                    references = _references(view)
                except _Malformed:
                    # Older onnxruntime builds may read what this walker cannot: refuse.
                    raise ModelLoadError(
                        f"{model_file.name}: cannot verify where its external data lives "
                        "(not a protobuf this check can read); external data must be a file "
                        "in the version directory"
                    ) from None
                finally:
                    view.release()
    except OSError as exc:
        raise ModelLoadError(f"{model_file.name} cannot be read: {exc.strerror}") from None
    base = os.path.realpath(model_file.parent)
    for tensor, location in references:
        _check_location(model_file.name, base, tensor, location)


def _check_location(model: str, base: str, tensor: str, location: str) -> None:
    what = f"{model}: tensor {tensor[:80]!r} keeps its data"
    if (
        "\x00" in location
        or os.path.isabs(location)
        or location.startswith(("/", "\\"))
        or (len(location) > 1 and location[1] == ":")  # C:\..., refused on every platform
    ):
        raise ModelLoadError(
            f"{what} at an absolute path; external data must be a file in the version directory"
        )
    resolved = os.path.realpath(os.path.join(base, location))
    if resolved != base and not resolved.startswith(base + os.sep):
        raise ModelLoadError(
            f"{what} outside the version directory (external data location "
            f"{location[:100]!r}); external data must be a file in the version directory"
        )


def _references(buf: memoryview) -> list[tuple[str, str]]:
    """(tensor name, location) of every tensor with an external data location."""
    found: list[tuple[str, str]] = []
    _walk(buf, 0, len(buf), _MODEL, found, 0)
    return found


def _walk(
    buf: memoryview,
    pos: int,
    end: int,
    fields: dict[int, str],
    found: list[tuple[str, str]],
    depth: int,
) -> None:
    if depth > _MAX_DEPTH:
        raise ModelLoadError(f"the model nests subgraphs deeper than {_MAX_DEPTH} levels")
    for number, start, stop in _fields(buf, pos, end):
        kind = fields.get(number)
        if kind is None or start < 0:
            continue
        if kind == "tensor":
            _tensor(buf, start, stop, found)
        else:
            _walk(buf, start, stop, _MESSAGES[kind], found, depth + 1)


def _tensor(buf: memoryview, pos: int, end: int, found: list[tuple[str, str]]) -> None:
    name = ""
    locations = []  # every one: which of several a reader uses is not ours to guess
    for number, start, stop in _fields(buf, pos, end):
        if number == _TENSOR_NAME and start >= 0:
            name = bytes(buf[start:stop]).decode("utf-8", "replace")
        elif number == _TENSOR_EXTERNAL and start >= 0:
            key = value = b""
            for n, s, e in _fields(buf, start, stop):
                if n == 1 and s >= 0:
                    key = bytes(buf[s:e])
                elif n == 2 and s >= 0:
                    value = bytes(buf[s:e])
            if key == b"location":
                locations.append(value.decode("utf-8", "replace"))
    found.extend((name, location) for location in locations)


def _fields(buf: memoryview, pos: int, end: int) -> list[tuple[int, int, int]]:
    """(field number, start, stop) of each field in ``buf[pos:end]``; start is -1 for
    fields that are not length-delimited. Groups (deprecated; no ONNX field is one) are
    skipped whole."""
    out = []
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if wire == 2:
            start, pos = _skip_bytes(buf, pos, end)
            out.append((number, start, pos))
        elif wire == 3:
            pos = _skip_group(buf, pos, end, number)
        else:
            pos = _skip_scalar(buf, pos, end, wire)
            out.append((number, -1, -1))
    return out


def _skip_bytes(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    """(start, stop) of the length-delimited value whose length varint is at ``pos``."""
    length, start = _varint(buf, pos, end)
    if start + length > end:
        raise _Malformed
    return start, start + length


def _skip_scalar(buf: memoryview, pos: int, end: int, wire: int) -> int:
    """The position after a varint (0), fixed64 (1) or fixed32 (5) value at ``pos``."""
    if wire == 0:
        return _varint(buf, pos, end)[1]
    size = 8 if wire == 1 else 4 if wire == 5 else -1
    if size < 0 or pos + size > end:  # an end-group without its start, wire types 6/7
        raise _Malformed
    return pos + size


def _skip_group(buf: memoryview, pos: int, end: int, number: int) -> int:
    """The position after the end-group tag matching the start-group ``number`` whose
    contents begin at ``pos`` (groups nest: a stack, not recursion)."""
    open_groups = [number]
    while open_groups:
        if pos >= end:
            raise _Malformed
        tag, pos = _varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if wire == 2:
            pos = _skip_bytes(buf, pos, end)[1]
        elif wire == 3:
            open_groups.append(number)
        elif wire == 4:
            if open_groups.pop() != number:
                raise _Malformed
        else:
            pos = _skip_scalar(buf, pos, end, wire)
    return pos


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            break
    raise _Malformed
