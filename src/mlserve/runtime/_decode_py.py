"""The pure-Python twin of ``_decode.pyx``: declines every input, so the caller always takes
the general numpy path (same answers, slower). Used when the extension is not built or
``MLSERVE_NO_EXTENSIONS=1``."""

from __future__ import annotations

from typing import Any


def fill_floats(data: list[Any], out: Any) -> int:
    """Always -1: "not handled here" (see ``_decode.pyx``)."""
    return -1
