"""ONNX external data: tensors whose bytes live in another file must stay in the version.

``check_external_data`` refuses a model whose tensors keep their data outside the version
directory (an absolute location, ``..``, a symlink leading out), reading ``model.onnx``'s
protobuf wire format itself; ``read_external_data`` reads the files a version names into
memory at load, and ``inline_external_data`` writes their bytes into the model's tensors.
"""

from __future__ import annotations

import mmap
import os
import stat
from dataclasses import dataclass
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
_TENSOR_NAME, _TENSOR_RAW, _TENSOR_EXTERNAL, _TENSOR_LOCATION = 8, 9, 13, 14
_INITIALIZER = 5  # of GraphProto
_MAX_DEPTH = 64  # subgraphs within subgraphs; onnxruntime itself refuses far less


class _Malformed(Exception):
    """Not a protobuf this walker can read."""


# An ONNX initializer (or a tensor in a node attribute, a subgraph, a function, a sparse
# tensor) may keep its data in a file named by its ``external_data`` ``location`` entry,
# relative to the model file. A hostile model could name ``../../etc/shadow``, an absolute
# path, or a symlink beside it that leads out of the registry. onnxruntime ≥ 1.17 refuses
# most of these itself, but its message carries absolute server paths and older builds do
# not check at all, so every version is checked here before onnxruntime opens it.
#
# The check reads ``model.onnx``'s protobuf wire format directly (``onnx`` is not a runtime
# dependency): a model with no ``location`` bytes anywhere (nearly every model) costs one
# ``mmap.find``; only the others are walked, and only along the messages that can hold
# tensors. Fields the walker does not know (groups included) are skipped; a file that names
# ``location`` somewhere but cannot be walked is refused, since where its external data lives
# cannot be verified (onnxruntime might still read it).
def check_external_data(model_file: Path) -> tuple[str, ...]:
    """The external data locations ``model_file`` names (relative to its directory, each
    once, in order; empty for nearly every model). Raise ``ModelLoadError`` when a tensor
    keeps its data outside the model file's directory (an absolute location, ``..``, or a
    symlink leading out)."""
    try:
        with model_file.open("rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                return ()  # onnxruntime refuses an empty file with its own reason
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                if mm.find(b"location") < 0:
                    return ()  # no external data can be named without that key
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
    return tuple(dict.fromkeys(location for _, location in references))


# What one stat says of a file read: size, mtime (ns), inode, ctime (ns), as the registry's
# fingerprints hold them.
FileSignature = tuple[int, int, int, int]


@dataclass(frozen=True)
class ExternalFile:
    """One external data file as read at load: its location, bytes, and signature."""

    location: str
    data: bytes
    signature: FileSignature


# The files a version names are read into memory at load and the session is built from those
# bytes: onnxruntime would otherwise map them, and a file truncated under a live session kills
# the process (SIGBUS) while one rewritten in place changes the served weights with no reload.
def read_external_data(model_file: Path, locations: tuple[str, ...]) -> list[ExternalFile]:
    """Read each external data file ``locations`` name (as ``check_external_data`` returned
    them) whole. A location that is not a regular file (a FIFO, a device, a directory) or
    cannot be read raises ``ModelLoadError`` naming it."""
    out = []
    for location in locations:
        path = model_file.parent / location
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; refused below.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            raise ModelLoadError(
                f"{model_file.name}: external data {location[:100]!r} cannot be read: "
                f"{exc.strerror or 'I/O error'}; it must be a file in the version directory"
            ) from None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ModelLoadError(
                    f"{model_file.name}: external data {location[:100]!r} is not a regular "
                    "file; it must be a file in the version directory"
                )
            data = fh.read()
        if len(data) != st.st_size:
            raise ModelLoadError(
                f"{model_file.name}: external data {location[:100]!r} changed while it was "
                "read; the next registry scan loads it again"
            )
        sig = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        out.append(ExternalFile(location, data, sig))
    return out


def inline_external_data(model: bytes, files: dict[str, bytes]) -> bytes:
    """``model`` with the data of every external tensor but the main graph's initializers
    written into the tensor (from ``files``, location → contents): onnxruntime takes only
    those initializers from memory, and maps a tensor of a node attribute or a subgraph from
    its file. ``ModelLoadError`` when a tensor's offset and length lie beyond its file."""
    if model.find(b"location") < 0:
        return model
    view = memoryview(model)
    try:
        out = _rewrite(view, 0, len(view), _MODEL, files, 0, top=True)
    except _Malformed:  # check_external_data walked it already: not expected
        raise ModelLoadError("the model cannot be read to load its external data") from None
    finally:
        view.release()
    return model if out is None else out


def _rewrite(
    buf: memoryview,
    pos: int,
    end: int,
    fields: dict[int, str],
    files: dict[str, bytes],
    depth: int,
    top: bool = False,
    main: bool = False,
) -> bytes | None:
    """The message ``buf[pos:end]`` with its external tensors inlined, or None when none
    of its fields changed. ``top``: the model itself; ``main``: its graph, whose
    initializers stay external (checked against their files only)."""
    if depth > _MAX_DEPTH:
        raise ModelLoadError(f"the model nests subgraphs deeper than {_MAX_DEPTH} levels")
    parts: list[bytes | memoryview] = []
    changed = False
    copied = pos  # fields before this position are in ``parts`` or unchanged since
    for number, tag_start, start, stop in _fields_at(buf, pos, end):
        kind = fields.get(number)
        if kind is None or start < 0:
            continue
        if kind == "tensor":
            new = _inline_tensor(buf, start, stop, files, not (main and number == _INITIALIZER))
        elif top and kind == "graph":
            new = _rewrite(buf, start, stop, _GRAPH, files, depth + 1, main=True)
        else:
            new = _rewrite(buf, start, stop, _MESSAGES[kind], files, depth + 1)
        if new is None:
            continue
        changed = True
        parts.append(buf[copied:tag_start])
        parts.append(_encode_varint(number << 3 | 2) + _encode_varint(len(new)) + new)
        copied = stop
    if not changed:
        return None
    parts.append(buf[copied:end])
    return b"".join(parts)


def _inline_tensor(
    buf: memoryview, pos: int, end: int, files: dict[str, bytes], inline: bool
) -> bytes | None:
    """A TensorProto with external data as one holding it (``raw_data``), or None (also
    when not ``inline``: its data is only checked to lie within its file)."""
    entries: dict[bytes, bytes] = {}
    kept: list[memoryview] = []
    for number, tag_start, start, stop in _fields_at(buf, pos, end):
        if number == _TENSOR_EXTERNAL and start >= 0:
            key = value = b""
            for n, s, e in _fields(buf, start, stop):
                if n == 1 and s >= 0:
                    key = bytes(buf[s:e])
                elif n == 2 and s >= 0:
                    value = bytes(buf[s:e])
            entries[key] = value
        elif number != _TENSOR_LOCATION:
            kept.append(buf[tag_start:stop])
    location = entries.get(b"location")
    if location is None:
        return None
    name = location.decode("utf-8", "replace")
    data = files[name]
    try:
        offset = int(entries.get(b"offset", b"0"))
        length = int(entries[b"length"]) if b"length" in entries else len(data) - offset
    except ValueError:
        raise ModelLoadError(
            f"external data in {name[:100]!r}: offset or length is not a number"
        ) from None
    if offset < 0 or length < 0 or offset + length > len(data):
        raise ModelLoadError(
            f"external data in {name[:100]!r}: {length} bytes at offset {offset} lie beyond "
            f"the file's {len(data)} bytes (a truncated or mismatched weights file?)"
        )
    if not inline:
        return None
    raw = data[offset : offset + length]
    return b"".join([*kept, _encode_varint(_TENSOR_RAW << 3 | 2), _encode_varint(len(raw)), raw])


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _fields_at(buf: memoryview, pos: int, end: int) -> list[tuple[int, int, int, int]]:
    """(field number, tag start, value start, field end) of each field; value start is -1
    for fields that are not length-delimited."""
    out = []
    while pos < end:
        tag_start = pos
        tag, pos = _varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if wire == 2:
            start, pos = _skip_bytes(buf, pos, end)
            out.append((number, tag_start, start, pos))
        elif wire == 3:
            pos = _skip_group(buf, pos, end, number)
            out.append((number, tag_start, -1, pos))
        else:
            pos = _skip_scalar(buf, pos, end, wire)
            out.append((number, tag_start, -1, pos))
    return out


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
