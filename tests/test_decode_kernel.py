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
