"""The pure-Python twin of ``_decode.pyx``: ``fill_floats`` declines every input, so the
caller always takes the general numpy path (same answers, slower); ``decode_bytes`` and
``json_counts`` do what the compiled ones do (see ``_decode.pyx``), a Python step per
element or a regular expression over the body. Used when the extension is not built or
``MLSERVE_NO_EXTENSIONS=1``."""

from __future__ import annotations

import re
import struct
from typing import Any

import numpy as np

_LENGTH = struct.Struct("<I")
# A JSON string as the scanner sees it (to the next unescaped quote, or to the end), or one
# of the bytes it counts.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)|[\[\]{},:]', re.S)


def fill_floats(data: list[Any], out: Any) -> int:
    """Always -1: "not handled here" (see ``_decode.pyx``)."""
    return -1


def decode_bytes(blob: Any, count: int) -> Any:
    """A 1-D object array of ``count`` str from a binary BYTES blob, or what is wrong."""
    view = memoryview(blob).cast("B")
    items: list[str] = []
    offset, end = 0, len(view)
    for _ in range(count):
        if offset + 4 > end:
            return ("short", len(items))
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            return ("claims", len(items), length, end - offset)
        try:
            items.append(bytes(view[offset : offset + length]).decode("utf-8"))
        except UnicodeDecodeError:
            return ("utf8", len(items))
        offset += length
    if offset != end:
        return ("left", end - offset)
    out = np.empty(count, dtype=object)
    out[:] = items
    return out


def json_counts(
    data: Any, max_containers: int, max_tokens: int, max_depth: int
) -> tuple[int, int, int]:
    """Containers, tokens and where nesting passed ``max_depth`` (see ``_decode.pyx``)."""
    raw = bytes(data)
    containers, tokens, depth = 0, 1, 0
    for match in _TOKENS.finditer(raw):
        c = raw[match.start()]
        if c == 0x22:  # a string
            continue
        if c in (0x7B, 0x5B):
            containers += 1
            tokens += 1
            depth += 1
            if depth > max_depth:
                return containers, tokens, match.start()
            if containers > max_containers or tokens > max_tokens:
                break
        elif c in (0x7D, 0x5D):
            depth = max(0, depth - 1)
        else:
            tokens += 1
            if tokens > max_tokens:
                break
    return containers, tokens, -1
