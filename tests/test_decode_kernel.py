"""The compiled flat-number decode (``runtime/_decode.pyx``) against numpy, its reference.

``decode_json`` with the compiled fill must answer exactly as the general numpy path (the
twin declines every input, so the twin *is* that path): the same array, bit for bit, or the
same error, over random flat lists mixing floats, ints, huge ints, booleans, strings,
values that overflow FP32, and both float datatypes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlserve.errors import InvalidInput
from mlserve.runtime import _decode_py, tensors
from mlserve.runtime.tensors import InputLimits, TensorSpec, decode_json

compiled = pytest.importorskip("mlserve.runtime._decode")


def _value(rng: np.random.Generator) -> Any:
    kind = rng.integers(0, 100)
    if kind < 60:
        return float(rng.normal() * 10.0 ** int(rng.integers(-3, 6)))
    if kind < 85:
        return int(rng.integers(-(10**6), 10**6))
    if kind < 88:
        return int(rng.integers(2**53, 2**62)) * int(rng.choice([-1, 1]))  # inexact in FP32
    if kind < 91:
        return float(rng.choice([3.5e38, -3.5e38, 1e300]))  # beyond FP32
    if kind < 94:
        return 2**70  # beyond int64
    if kind < 97:
        return bool(rng.integers(0, 2))
    return "1.5"


def _outcome(spec: TensorSpec, data: list[Any], limits: InputLimits) -> Any:
    try:
        out = decode_json(
            spec, {"datatype": spec.datatype, "shape": [1, len(data)], "data": data}, limits
        )
    except InvalidInput as exc:
        return ("error", exc.reason, str(exc))
    return ("ok", out.dtype.str, out.shape, out.tobytes())


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
@pytest.mark.parametrize("allow_nan", [False, True])
def test_compiled_decode_answers_as_numpy(
    datatype: str, allow_nan: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(11)
    limits = InputLimits(max_elements=10_000, max_rows=100, allow_nan=allow_nan)
    seen = {"fast": 0, "declined": 0}
    for trial in range(600):
        n = int(rng.integers(1, 40))
        # Half the lists plain numbers (the fast path), half with one odd value among them.
        data = (
            [float(x) for x in rng.normal(size=n)] if trial % 2 else [_value(rng) for _ in range(n)]
        )
        spec = TensorSpec("x", datatype, (-1, n))
        out = np.empty(n, dtype=spec.dtype)
        seen["declined" if compiled.fill_floats(data, out) == -1 else "fast"] += 1
        fast = _outcome(spec, data, limits)
        with monkeypatch.context() as m:
            m.setattr(tensors, "fill_floats", _decode_py.fill_floats)
            reference = _outcome(spec, data, limits)
        assert fast == reference, (data, fast, reference)
    assert seen["fast"] > 300 and seen["declined"] > 100  # both paths were exercised


def test_fill_casts_each_value_once_as_numpy_does() -> None:
    values = [2**53 + 1, 16777217, 0.1, -(2**62) - 1, 3.4028235e38, 1e-46]
    for dtype in (np.float32, np.float64):
        out = np.empty(len(values), dtype=dtype)
        assert compiled.fill_floats(values, out) == 0
        expected = np.array([np.array(v).astype(dtype) for v in values])
        assert out.tobytes() == expected.tobytes()
    out = np.empty(2, dtype=np.float32)
    assert compiled.fill_floats([1.0, 1e39], out) == 1 and np.isinf(out[1])
    assert compiled.fill_floats([1.0], out) == -1  # wrong length
    assert compiled.fill_floats([1.0, 2.0], np.empty(2, dtype=np.float16)) == -1


# ------------------------------------------------------------------ BYTES and the JSON scan


def _bytes_blob(rng: np.random.Generator, n: int) -> tuple[bytes, int]:
    """A binary BYTES blob of ``n`` elements (text of every width, empties, non-ASCII),
    often broken: cut short, a length past the end, invalid UTF-8, bytes left over."""
    alphabet = ["", "a", "é", "€", "😀", "x" * 40, "\x00", "ab\ncd"]
    parts = []
    for _ in range(n):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 4))))
        raw = text.encode("utf-8")
        if rng.random() < 0.03:
            raw = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"a\x80b", b"\xf0\x9f\x98"])
        parts.append(len(raw).to_bytes(4, "little") + raw)
    blob = b"".join(parts)
    claimed = n
    damage = int(rng.integers(0, 8))
    if damage == 0 and blob:
        blob = blob[: int(rng.integers(0, len(blob)))]  # cut anywhere, mid-length too
    elif damage == 1:
        blob += b"\x01\x02"  # left over
    elif damage == 2:
        claimed = n + int(rng.integers(1, 3))  # more claimed than sent
    elif damage == 3 and n:
        claimed = n - 1  # fewer claimed: the last element is left over
    elif damage == 4:
        blob += (2**32 - 1).to_bytes(4, "little") + b"abc"  # a length past the end
        claimed = n + 1
    return blob, claimed


def _bytes_outcome(blob: bytes, claimed: int) -> Any:
    from mlserve.runtime.binary import decode_binary

    spec = TensorSpec("s", "BYTES", (-1,))
    tensor = {"name": "s", "datatype": "BYTES", "shape": [claimed]}
    limits = InputLimits(max_elements=1 << 20, max_rows=1 << 20, allow_nan=False)
    try:
        out = decode_binary(spec, tensor, memoryview(blob), limits)
    except InvalidInput as exc:
        return ("error", exc.reason, str(exc))
    assert out.dtype == object and out.shape == (claimed,)
    assert all(type(x) is str for x in out.tolist())
    return ("ok", out.tolist())


def test_compiled_bytes_decode_answers_as_python(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlserve.runtime import binary

    rng = np.random.default_rng(17)
    seen: dict[str, int] = {}
    for _ in range(1500):
        blob, claimed = _bytes_blob(rng, int(rng.integers(0, 30)))
        monkeypatch.setattr(binary, "decode_bytes", compiled.decode_bytes)
        fast = _bytes_outcome(blob, claimed)
        monkeypatch.setattr(binary, "decode_bytes", _decode_py.decode_bytes)
        reference = _bytes_outcome(blob, claimed)
        assert fast == reference, (blob, claimed, fast, reference)
        kinds = ("data ends", "claims", "UTF-8", "left over")
        kind = "ok" if fast[0] == "ok" else next(k for k in kinds if k in fast[2])
        seen[kind] = seen.get(kind, 0) + 1
    # every outcome was exercised: whole tensors and each way of being broken
    assert set(seen) == {"ok", "data ends", "claims", "UTF-8", "left over"}, seen
    assert min(seen.values()) > 20, seen


def test_bytes_decode_messages_and_cap() -> None:
    from mlserve.runtime.binary import MAX_BYTES_ELEMENTS

    def frame(*items: bytes) -> bytes:
        return b"".join(len(x).to_bytes(4, "little") + x for x in items)

    for decode in (compiled.decode_bytes, _decode_py.decode_bytes):
        assert decode(frame(b"a", b"", "é".encode()), 3).tolist() == ["a", "", "é"]
        assert decode(b"", 0).tolist() == []
        assert decode(frame(b"a") + b"\x05\x00", 2) == ("short", 1)
        assert decode(frame(b"a") + b"\x05\x00\x00\x00ab", 2) == ("claims", 1, 5, 2)
        # the first problem in element order: bad UTF-8 before a framing problem
        assert decode(frame(b"a", b"\xff") + b"\x09", 3) == ("utf8", 1)
        assert decode(frame(b"a", b"b") + b"zz", 2) == ("left", 2)
        # a claim of millions in a short blob: refused at once, nothing allocated
        assert decode(frame(b"a"), 10_000_000) == ("short", 1)
    with pytest.raises(InvalidInput, match=f"over the limit of {MAX_BYTES_ELEMENTS}") as err:
        _bytes_outcome_raise(MAX_BYTES_ELEMENTS + 1)
    assert err.value.reason == "size"


def _bytes_outcome_raise(count: int) -> None:
    from mlserve.runtime.binary import decode_binary

    spec = TensorSpec("s", "BYTES", (-1,))
    limits = InputLimits(max_elements=1 << 30, max_rows=1 << 30, allow_nan=False)
    blob = b"\x00\x00\x00\x00" * count
    decode_binary(
        spec, {"name": "s", "datatype": "BYTES", "shape": [count]}, memoryview(blob), limits
    )


def _json_doc(rng: np.random.Generator) -> bytes:
    """JSON-ish bytes: containers, separators, strings holding brackets, commas, quotes and
    backslashes (escaped or not), unterminated strings, and garbage."""
    pieces = [b"{", b"}", b"[", b"]", b",", b":", b"1.5", b" ", b"null", b'"a,b"', b'"[{:"',
              b'"\\""', b'"\\\\"', b'"x\\', b'"', b"\\", b'"\\u005b"', b"\n"]  # fmt: skip
    return b"".join(rng.choice(pieces, size=int(rng.integers(0, 60))).tolist())


def test_json_counts_compiled_answers_as_python() -> None:
    rng = np.random.default_rng(5)
    seen = {"within": 0, "over": 0, "deep": 0}
    for _ in range(4000):
        doc = _json_doc(rng)
        limits = (int(rng.integers(0, 30)), int(rng.integers(0, 60)), int(rng.integers(1, 6)))
        fast = compiled.json_counts(doc, *limits)
        assert fast == _decode_py.json_counts(doc, *limits), (doc, limits)
        if fast[2] >= 0:
            assert doc[fast[2]] in b"[{"
            seen["deep"] += 1
        elif fast[0] > limits[0] or fast[1] > limits[1]:
            seen["over"] += 1
        else:
            seen["within"] += 1
    assert min(seen.values()) > 500, seen
    body = b'{"inputs":[{"name":"x,[{","shape":[1,2],"data":[[1,2]]}],"id":"\\"]["}'
    assert compiled.json_counts(body, 100, 100, 9) == (6, 17, -1)  # brackets in strings: none
    assert compiled.json_counts(b"[{}" * 1000, 10, 10**6, 2000) == (11, 12, -1)  # stops early
    assert compiled.json_counts(b"[" * 5000, 10**6, 10**6, 1024) == (1025, 1026, 1024)
    assert compiled.json_counts(b"[]" * 5000, 10**6, 10**6, 1) == (5000, 5001, -1)
