"""JSON files read within limits: the model and version files of the registry
(``routing.json``, ``lineage.json``, ``reference.json``, ``validation.json``) and the state
kept beside them. Below every layer that reads one (the registry, routing state, monitoring
profiles, the validation gate)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

# Limits on the JSON files of a model and its versions (routing.json, lineage.json,
# reference.json, validation.json): real ones are kilobytes (a profile of 100,000 bins is
# ~3 MB) and a few levels deep.
MAX_JSON_BYTES = 16 << 20
MAX_JSON_DEPTH = 64


def read_json(path: Path, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON document in ``path``, read within limits: at most ``max_bytes``, UTF-8,
    lists and objects nested at most ``max_depth`` deep (checked before parsing, so a
    deeply nested file costs no recursion). ``ValueError`` says what is wrong, naming the
    file ("routing.json is not valid JSON: …"); ``OSError`` when it cannot be read."""
    name = path.name
    with path.open("rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{name} is too large: over {_size(max_bytes)}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{name} is not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start}"
        ) from None
    depth = json_depth(text)
    if depth > max_depth:
        raise ValueError(f"{name} is nested too deep: {depth} levels, at most {max_depth}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} is not valid JSON: {exc}") from None
    except RecursionError:  # not reached under max_depth; kept as the last word
        raise ValueError(f"{name} is nested too deep: at most {max_depth} levels") from None


# A JSON string, escapes included (unrolled: linear time).
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in JSON ``text`` outside strings (0: a scalar),
    in linear time without parsing."""
    bare = _JSON_STRING.sub("", text).encode("utf-8", "replace")
    codes = np.frombuffer(bare, dtype=np.uint8)
    steps = np.zeros(len(codes), dtype=np.int64)
    for code, step in _BRACKETS.items():
        steps[codes == code] = step
    if not len(steps):
        return 0
    return max(0, int(np.cumsum(steps).max()))


def _size(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n / 1024:g} KiB"
