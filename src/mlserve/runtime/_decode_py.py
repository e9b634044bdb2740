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
# A JSON string as the scanner sees it: to the next unescaped quote, or to the end.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.S)


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


def json_counts(data: Any, max_containers: int, max_tokens: int) -> tuple[int, int]:
    """Containers and tokens outside strings (see ``_decode.pyx``); counts everything."""
    plain = _STRING.sub(b"", bytes(data))
    containers = plain.count(b"{") + plain.count(b"[")
    return containers, 1 + containers + plain.count(b",") + plain.count(b":")
