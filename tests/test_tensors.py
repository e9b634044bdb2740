"""Unit tests for mlserve.runtime.tensors: V2 JSON tensors to numpy and back."""

from __future__ import annotations

import math
import re
import time
import tracemalloc

import numpy as np
import orjson
import pytest

from mlserve.errors import InvalidInput
from mlserve.runtime.tensors import (
    NUMPY_TO_V2,
    ONNX_TO_V2,
    V2_TO_NUMPY,
    InputLimits,
    TensorSpec,
    check_header,
    decode_json,
    encode_json,
)

LIMITS = InputLimits(max_elements=10_000, max_rows=1_000, allow_nan=False)

# Six values per V2 datatype (shape [2, 3]), including each type's extremes.
SAMPLES: dict[str, list] = {
    "BOOL": [True, False, True, False, False, True],
    "UINT8": [0, 1, 2, 127, 128, 255],
    "UINT16": [0, 1, 300, 32768, 65534, 65535],
    "UINT32": [0, 1, 70_000, 2**31, 2**32 - 2, 2**32 - 1],
    "UINT64": [0, 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1],
    "INT8": [-128, -1, 0, 1, 100, 127],
    "INT16": [-32768, -1, 0, 1, 1000, 32767],
    "INT32": [-(2**31), -1, 0, 1, 123_456, 2**31 - 1],
    "INT64": [-(2**63), -1, 0, 1, 2**53 + 1, 2**63 - 1],
    "FP16": [0.5, -1.25, 0, 3, 65504.0, 1e-3],
    "FP32": [0.1, -2.5, 0, 7, 3.4e38, 1e-30],
    "FP64": [0.1, -2.5, 0, 7, 1e300, 5e-324],
    "BYTES": ["a", "", "héllo", "with space", "1.5", "\u2603"],
}


def _nest(values: list, cols: int = 3) -> list[list]:
    return [values[i : i + cols] for i in range(0, len(values), cols)]


def _spec(datatype: str = "FP32", shape: tuple[int, ...] = (-1, 3), name: str = "X") -> TensorSpec:
    return TensorSpec(name, datatype, shape)


def _tensor(datatype: str, shape, data) -> dict:
    return {"name": "X", "datatype": datatype, "shape": shape, "data": data}


def _reference(datatype: str, values: list, shape) -> np.ndarray:
    return np.array(values, dtype=V2_TO_NUMPY[datatype]).reshape(shape)


def test_samples_cover_every_datatype():
    assert set(SAMPLES) == set(V2_TO_NUMPY)


def test_datatype_tables_are_consistent():
    assert set(ONNX_TO_V2.values()) == set(V2_TO_NUMPY)
    assert len(NUMPY_TO_V2) == len(V2_TO_NUMPY)
    for name, dtype in V2_TO_NUMPY.items():
        assert NUMPY_TO_V2[dtype] == name
    assert ONNX_TO_V2["tensor(float)"] == "FP32"
    assert ONNX_TO_V2["tensor(string)"] == "BYTES"


def test_tensor_spec_helpers():
    spec = TensorSpec("X", "FP32", (-1, 20))
    assert spec.dtype == np.dtype(np.float32)
    assert spec.shape_text() == "[-1, 20]"
    assert spec.metadata() == {"name": "X", "datatype": "FP32", "shape": [-1, 20]}


# ---------------------------------------------------------------------------------------------
# decode_json: every datatype


@pytest.mark.parametrize("datatype", list(V2_TO_NUMPY))
@pytest.mark.parametrize("layout", ["flat", "nested"])
def test_decode_every_datatype(datatype, layout):
    values = SAMPLES[datatype]
    data = values if layout == "flat" else _nest(values)
    array = decode_json(_spec(datatype), _tensor(datatype, [2, 3], data), LIMITS)

    expected = _reference(datatype, values, (2, 3))
    assert array.dtype == V2_TO_NUMPY[datatype]
    assert array.shape == (2, 3)
    assert array.tolist() == expected.tolist()
    if datatype == "BYTES":
        assert all(type(x) is str for x in array.ravel())
    else:
        np.testing.assert_array_equal(array, expected, strict=True)


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
def test_decode_float_tensors_accept_json_integers(datatype):
    array = decode_json(_spec(datatype), _tensor(datatype, [1, 3], [1, -2, 3]), LIMITS)
    assert array.dtype == V2_TO_NUMPY[datatype]
    np.testing.assert_array_equal(array, np.array([[1, -2, 3]], dtype=V2_TO_NUMPY[datatype]))


def test_decode_nested_three_dimensions():
    spec = _spec("INT32", (-1, 2, 2))
    data = [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]
    array = decode_json(spec, _tensor("INT32", [2, 2, 2], data), LIMITS)
    np.testing.assert_array_equal(array, np.arange(1, 9, dtype=np.int32).reshape(2, 2, 2))


@pytest.mark.parametrize("datatype", ["BOOL", "INT64", "FP32", "FP64"])
@pytest.mark.parametrize("shape", [(2, 1, 3, 1, 2), (1, 2, 2, 3), (3, 0, 2, 2)])
def test_decode_nested_deeper_dimensions(datatype, shape):
    values = (SAMPLES[datatype] * 4)[: math.prod(shape)]
    expected = _reference(datatype, values, shape)
    data = expected.tolist()
    if 0 in shape:  # JSON nesting of an empty tensor ends at its first zero dimension
        data = [[] for _ in range(shape[0])]
    array = decode_json(
        _spec(datatype, (-1,) * len(shape)), _tensor(datatype, list(shape), data), LIMITS
    )
    assert array.shape == shape
    np.testing.assert_array_equal(array, expected, strict=True)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([[[[1.0, "2"]], [[3.0, 4.0]]]], "must hold JSON numbers"),  # a string at the leaves
        ([[[[1.0, 2.0]], ""]], "must hold JSON numbers"),  # an empty string among the lists
        ([[[[1.0, 2.0]], [""]]], "must hold JSON numbers"),
        ([[[[1.0, 2.0]], {}]], "'data' is ragged or mixed"),
        ([[[[1.0, 2.0]], [[3.0, [4.0]]]]], "'data' is ragged or mixed"),  # deeper than claimed
        ([[[[1.0, 2.0]], [[3.0, None]]]], "must hold JSON numbers"),
    ],
)
def test_wrong_values_deep_in_nested_numbers(data, message):
    _expect_invalid(
        _spec("FP32", (-1, -1, -1, -1)),
        _tensor("FP32", [1, 2, 1, 2], data),
        rf"^input 'X'.*{re.escape(message)}",
        "data",
    )


@pytest.mark.parametrize("rank", [3, 4, 6])
def test_long_string_deep_in_nested_numbers_is_refused_before_allocation(rank):
    """numpy would allocate count × the longest string's width: refused first at any depth."""
    inner = ["x" * 200_000] + [1.5] * 999
    data: list = inner
    for _ in range(rank - 1):
        data = [data]
    shape = [1] * (rank - 1) + [1000]
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput, match=r"must hold JSON numbers$"):
            decode_json(_spec("FP32", (-1,) * rank), _tensor("FP32", shape, data), LIMITS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, peak


@pytest.mark.parametrize("datatype", list(V2_TO_NUMPY))
def test_decode_empty_tensor(datatype):
    array = decode_json(_spec(datatype), _tensor(datatype, [0, 3], []), LIMITS)
    assert array.shape == (0, 3)
    assert array.dtype == V2_TO_NUMPY[datatype]


def test_decode_scalar_tensor():
    array = decode_json(_spec("INT64", ()), _tensor("INT64", [], [5]), LIMITS)
    assert array.shape == ()
    assert array.dtype == np.int64
    assert array.item() == 5


def test_decode_free_and_fixed_dimensions():
    spec = _spec("FP32", (-1, 2))
    array = decode_json(spec, _tensor("FP32", [3, 2], [1, 2, 3, 4, 5, 6]), LIMITS)
    assert array.shape == (3, 2)


def test_check_header_returns_claimed_shape():
    assert check_header(_spec("FP32", (-1, 20)), _tensor("FP32", [4, 20], []), LIMITS) == (4, 20)


def test_limits_exactly_at_the_cap_are_accepted():
    limits = InputLimits(max_elements=6, max_rows=2, allow_nan=False)
    array = decode_json(_spec("FP32"), _tensor("FP32", [2, 3], [0.0] * 6), limits)
    assert array.shape == (2, 3)


# ---------------------------------------------------------------------------------------------
# decode_json: errors


def _expect_invalid(spec, tensor, pattern, reason, limits=LIMITS):
    with pytest.raises(InvalidInput, match=pattern) as info:
        decode_json(spec, tensor, limits)
    assert info.value.status_code == 400
    assert info.value.code == "invalid_input"
    assert info.value.reason == reason
    return info.value


def test_datatype_mismatch():
    _expect_invalid(
        _spec("FP32", (-1, 20)),
        _tensor("FP64", [1, 20], [0.0] * 20),
        r"^input 'X' expects datatype FP32, got FP64$",
        "datatype",
    )


@pytest.mark.parametrize("datatype", [None, 32, ["FP32"]])
def test_datatype_missing_or_not_a_string(datatype):
    tensor = _tensor("FP32", [1, 3], [1.0, 2.0, 3.0])
    if datatype is None:
        del tensor["datatype"]
    else:
        tensor["datatype"] = datatype
    _expect_invalid(
        _spec(), tensor, r"input 'X': 'datatype' is missing or not a string", "datatype"
    )


def test_datatype_is_case_sensitive():
    _expect_invalid(
        _spec(),
        _tensor("fp32", [1, 3], [1.0, 2.0, 3.0]),
        r"expects datatype FP32, got fp32",
        "datatype",
    )


@pytest.mark.parametrize(
    ("shape", "shown"),
    [
        ([1, 19], "[1, 19]"),
        ([20], "[20]"),
        ([1, 20, 1], "[1, 20, 1]"),
        ([], "[]"),
        ([2, 21], "[2, 21]"),
    ],
)
def test_wrong_rank_or_dims(shape, shown):
    _expect_invalid(
        _spec("FP32", (-1, 20)),
        _tensor("FP32", shape, [0.0] * math.prod(shape)),
        rf"^input 'X' expects shape \[-1, 20\], got {re.escape(shown)}$",
        "shape",
    )


@pytest.mark.parametrize(
    "shape",
    [
        [-1, 20],
        [1, -20],
        [True, 20],
        [1, False],
        [1.0, 20],
        ["1", 20],
        [None, 20],
        "1,20",
        20,
        None,
    ],
)
def test_shape_must_list_non_negative_ints(shape):
    tensor = _tensor("FP32", shape, [0.0] * 20)
    _expect_invalid(
        _spec("FP32", (-1, 20)),
        tensor,
        r"^input 'X': 'shape' must be a list of non-negative integers$",
        "shape",
    )


def test_shape_missing():
    tensor = _tensor("FP32", [1, 3], [0.0] * 3)
    del tensor["shape"]
    _expect_invalid(_spec(), tensor, r"'shape' must be a list of non-negative integers", "shape")


def test_claimed_elements_over_limit():
    limits = InputLimits(max_elements=1000, max_rows=10**9, allow_nan=False)
    err = _expect_invalid(
        _spec("FP32", (-1, -1)),
        _tensor("FP32", [1_000_000, 1_000_000], []),
        r"^input 'X' claims 1000000000000 elements, over the limit of 1000$",
        "size",
        limits,
    )
    assert "1000000000000" in err.message


def test_claimed_elements_over_limit_fails_fast_without_allocating():
    limits = InputLimits(max_elements=16 * 1024 * 1024, max_rows=10**12, allow_nan=False)
    spec = _spec("FP64", (-1, -1))
    tensor = _tensor("FP64", [10**6, 10**6], [])
    tracemalloc.start()
    try:
        started = time.perf_counter()
        with pytest.raises(InvalidInput, match=r"claims 1000000000000 elements") as info:
            decode_json(spec, tensor, limits)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.reason == "size"
    assert elapsed < 0.5
    assert peak < 1 << 20  # far below the 8 TB such a tensor would need


def test_claimed_elements_over_limit_with_one_huge_dimension():
    _expect_invalid(
        _spec("INT8", (-1,)),
        _tensor("INT8", [10**15], [1, 2, 3]),
        r"claims 1000000000000000 elements, over the limit of 10000",
        "size",
    )


def test_rows_over_limit():
    limits = InputLimits(max_elements=10**6, max_rows=10, allow_nan=False)
    _expect_invalid(
        _spec("FP32", (-1, 2)),
        _tensor("FP32", [11, 2], [0.0] * 22),
        r"^input 'X' has 11 rows, over the limit of 10$",
        "rows",
        limits,
    )


@pytest.mark.parametrize("data", [[1.0] * 5, [1.0] * 7, []])
def test_data_length_mismatch(data):
    _expect_invalid(
        _spec(),
        _tensor("FP32", [2, 3], data),
        rf"^input 'X': shape \[2, 3\] needs 6 values, 'data' holds {len(data)}$",
        "data",
    )


def test_nested_data_shape_mismatch():
    _expect_invalid(
        _spec(),
        _tensor("FP32", [2, 3], [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
        r"^input 'X': nested 'data' has shape \[3, 2\], 'shape' says \[2, 3\]$",
        "data",
    )


def test_nested_data_with_extra_dimension_rejected():
    _expect_invalid(
        _spec("FP32", (-1,)),
        _tensor("FP32", [2], [[1.0], [2.0]]),
        r"nested 'data' has shape \[2, 1\], 'shape' says \[2\]",
        "data",
    )


@pytest.mark.parametrize(
    "data",
    [
        [[1.0, 2.0, 3.0], [4.0, 5.0]],
        [[1.0, 2.0, 3.0], 4.0, 5.0, 6.0],
        [[1.0, [2.0], 3.0], [4.0, 5.0, 6.0]],
    ],
)
def test_ragged_nested_data(data):
    _expect_invalid(
        _spec(), _tensor("FP32", [2, 3], data), r"^input 'X': 'data' is ragged or mixed", "data"
    )


@pytest.mark.parametrize(
    ("datatype", "data", "words"),
    [
        ("FP32", ["1.5", "2", "3"], "numbers"),
        ("FP32", [1.5, "2", 3.0], "numbers"),
        ("FP32", [1.5, None, 3.0], "numbers"),
        ("FP32", [True, False, True], "numbers"),
        ("FP64", [{"a": 1}, 2.0, 3.0], "numbers"),
        ("INT64", [1.5, 2.0, 3.0], "integers"),
        ("INT64", [1.0, 2.0, 3.0], "integers"),
        ("INT64", [1, 2.5, 3], "integers"),
        ("INT32", [True, False, True], "integers"),
        ("INT64", ["1", "2", "3"], "integers"),
        ("UINT8", [1, None, 3], "integers"),
        ("BOOL", [1, 0, 1], "booleans"),
        ("BOOL", ["true", "false", "true"], "booleans"),
        ("BYTES", [1, 2, 3], "strings"),
        ("BYTES", [True, False, True], "strings"),
        ("BYTES", ["a", None, "c"], "strings"),
    ],
)
def test_wrong_json_value_kinds(datatype, data, words):
    _expect_invalid(
        _spec(datatype),
        _tensor(datatype, [1, 3], data),
        rf"^input 'X' \({datatype}\) must hold JSON {words}$",
        "data",
    )


def test_numbers_among_strings_are_refused():
    _expect_invalid(
        _spec("BYTES"),
        _tensor("BYTES", [1, 3], ["a", 1, "b"]),
        r"^input 'X' \(BYTES\) must hold JSON strings$",
        "data",
    )


@pytest.mark.parametrize(
    ("datatype", "expected"), [("FP32", [1.5, 1.0, 2.0]), ("INT64", [1, 1, 2])]
)
def test_booleans_among_numbers_are_coerced_as_documented(datatype, expected):
    # A documented leniency: a JSON true among numbers becomes 1 (checking every element's
    # type would cost more than the conversion itself on the JSON hot path).
    spec = _spec(datatype)
    array = decode_json(
        spec, _tensor(datatype, [1, 3], [1.5 if datatype == "FP32" else 1, True, 2]), LIMITS
    )
    assert array.ravel().tolist() == expected


@pytest.mark.parametrize(
    ("datatype", "values", "bounds"),
    [
        ("UINT8", [300, 1, 2], "[0, 255]"),
        ("UINT8", [-1, 1, 2], "[0, 255]"),
        ("UINT8", [256, 1, 2], "[0, 255]"),
        ("INT8", [128, 1, 2], "[-128, 127]"),
        ("INT8", [-129, 1, 2], "[-128, 127]"),
        ("UINT16", [65536, 1, 2], "[0, 65535]"),
        ("INT16", [-32769, 1, 2], "[-32768, 32767]"),
        ("UINT32", [2**32, 1, 2], "[0, 4294967295]"),
        ("INT32", [2**31, 1, 2], "[-2147483648, 2147483647]"),
        ("UINT64", [-1, 1, 2], "[0, 18446744073709551615]"),
        ("UINT64", [2**64, 1, 2], "[0, 18446744073709551615]"),
        ("UINT64", [2**64, 2**63, 2**63], "[0, 18446744073709551615]"),
        ("INT64", [2**63, 1, 2], "[-9223372036854775808, 9223372036854775807]"),
        ("INT64", [-(2**63) - 1, 1, 2], "[-9223372036854775808, 9223372036854775807]"),
        ("INT64", [2**63, 2**63, 2**63], "[-9223372036854775808, 9223372036854775807]"),
        ("INT64", [2**100, 1, 2], "[-9223372036854775808, 9223372036854775807]"),
    ],
)
def test_integers_out_of_range(datatype, values, bounds):
    _expect_invalid(
        _spec(datatype),
        _tensor(datatype, [1, 3], values),
        rf"^input 'X': values outside the {datatype} range {re.escape(bounds)}$",
        "data",
    )


@pytest.mark.parametrize(
    ("datatype", "value"),
    [("FP32", 1e39), ("FP32", -1e39), ("FP16", 70000.0), ("FP16", -1e6)],
)
def test_overflow_to_infinity_rejected_without_allow_nan(datatype, value):
    _expect_invalid(
        _spec(datatype),
        _tensor(datatype, [1, 3], [1.0, value, 2.0]),
        rf"^input 'X' holds NaN or infinite values \(out of {datatype} range\)",
        "nan",
    )


@pytest.mark.parametrize(
    ("datatype", "value"),
    [("FP32", 1e39), ("FP32", -1e39), ("FP16", 70000.0)],
)
def test_overflow_to_infinity_accepted_with_allow_nan(datatype, value):
    limits = InputLimits(max_elements=100, max_rows=100, allow_nan=True)
    array = decode_json(_spec(datatype), _tensor(datatype, [1, 3], [1.0, value, 2.0]), limits)
    assert array.dtype == V2_TO_NUMPY[datatype]
    assert np.isinf(array[0, 1])
    assert np.sign(array[0, 1]) == np.sign(value)
    assert array[0, 0] == 1.0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_values_follow_allow_nan(value):
    tensor = _tensor("FP64", [1, 3], [1.0, value, 2.0])
    _expect_invalid(_spec("FP64"), tensor, r"holds NaN or infinite values", "nan")
    lenient = InputLimits(max_elements=100, max_rows=100, allow_nan=True)
    array = decode_json(_spec("FP64"), tensor, lenient)
    assert not np.isfinite(array[0, 1])


def test_finite_fp32_extremes_are_not_nan():
    # The largest float32 is accepted; only values that overflow it are rejected.
    top = float(np.finfo(np.float32).max)
    array = decode_json(_spec("FP32"), _tensor("FP32", [1, 3], [top, -top, 0.0]), LIMITS)
    assert np.isfinite(array).all()


def test_data_missing():
    tensor = _tensor("FP32", [1, 3], None)
    del tensor["data"]
    _expect_invalid(_spec(), tensor, r"^input 'X': 'data' must be a JSON array$", "data")


@pytest.mark.parametrize("data", [None, "1,2,3", 1.0, {"0": 1.0}, (1.0, 2.0, 3.0)])
def test_data_not_a_list(data):
    _expect_invalid(
        _spec(), _tensor("FP32", [1, 3], data), r"^input 'X': 'data' must be a JSON array$", "data"
    )


def test_error_messages_name_the_input():
    spec = TensorSpec("features", "FP32", (-1, 3))
    with pytest.raises(
        InvalidInput, match=r"^input 'features' expects shape \[-1, 3\], got \[1, 4\]$"
    ):
        decode_json(spec, _tensor("FP32", [1, 4], [0.0] * 4), LIMITS)


def test_header_checked_before_data():
    # A bad datatype is reported even when the data is unusable too.
    _expect_invalid(_spec(), _tensor("INT8", [1, 3], "junk"), r"expects datatype FP32", "datatype")
    # A bad shape is reported before the data is looked at.
    _expect_invalid(_spec(), _tensor("FP32", [1, 4], "junk"), r"expects shape", "shape")


# ---------------------------------------------------------------------------------------------
# encode_json


def _roundtrip(payload: dict) -> dict:
    return orjson.loads(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))


@pytest.mark.parametrize("datatype", list(V2_TO_NUMPY))
def test_encode_every_datatype_round_trips(datatype):
    original = _reference(datatype, SAMPLES[datatype], (2, 3))
    payload = encode_json("out", original)
    assert payload["name"] == "out"
    assert payload["datatype"] == datatype
    assert payload["shape"] == [2, 3]

    loaded = _roundtrip(payload)
    assert loaded["datatype"] == datatype
    assert loaded["shape"] == [2, 3]
    assert len(loaded["data"]) == 6  # flat
    back = np.array(loaded["data"], dtype=V2_TO_NUMPY[datatype]).reshape(loaded["shape"])
    assert back.tolist() == original.tolist()
    if datatype == "BYTES":
        assert all(type(x) is str for x in loaded["data"])
    else:
        np.testing.assert_array_equal(back, original, strict=True)


@pytest.mark.parametrize("datatype", [d for d in V2_TO_NUMPY if d != "BYTES"])
def test_encode_then_decode_is_identity(datatype):
    original = _reference(datatype, SAMPLES[datatype], (2, 3))
    loaded = _roundtrip(encode_json("X", original))
    decoded = decode_json(_spec(datatype), loaded, LIMITS)
    np.testing.assert_array_equal(decoded, original, strict=True)


def test_encode_bytes_from_object_array_of_str():
    array = np.array([["a", "héllo"], ["", "z"]], dtype=object)
    payload = encode_json("label", array)
    assert payload["datatype"] == "BYTES"
    assert payload["shape"] == [2, 2]
    assert _roundtrip(payload)["data"] == ["a", "héllo", "", "z"]


def test_encode_bytes_from_object_array_of_bytes():
    array = np.array([b"cat", "h\u00e9".encode(), b""], dtype=object)
    payload = encode_json("label", array)
    assert payload["datatype"] == "BYTES"
    data = _roundtrip(payload)["data"]
    assert data == ["cat", "h\u00e9", ""]
    assert all(type(x) is str for x in data)


@pytest.mark.parametrize(
    "array",
    [np.array(["ab", "c"]), np.array([b"ab", b"c"])],
    ids=["unicode", "bytes"],
)
def test_encode_fixed_width_string_arrays_as_bytes(array):
    assert array.dtype.kind in "US"
    payload = encode_json("s", array)
    assert payload["datatype"] == "BYTES"
    assert _roundtrip(payload)["data"] == ["ab", "c"]


def test_encode_non_contiguous_array_in_c_order():
    array = np.arange(6, dtype=np.int32).reshape(2, 3).T  # Fortran-ordered view
    assert not array.flags.c_contiguous
    loaded = _roundtrip(encode_json("t", array))
    assert loaded["shape"] == [3, 2]
    assert loaded["data"] == [0, 3, 1, 4, 2, 5]


def test_encode_empty_and_scalar_arrays():
    empty = _roundtrip(encode_json("e", np.zeros((0, 3), dtype=np.float32)))
    assert empty == {"name": "e", "datatype": "FP32", "shape": [0, 3], "data": []}
    scalar = _roundtrip(encode_json("s", np.array(7, dtype=np.int64)))
    assert scalar == {"name": "s", "datatype": "INT64", "shape": [], "data": [7]}


@pytest.mark.parametrize(
    "array",
    [np.array([1 + 2j]), np.array(["2024-01-01"], dtype="datetime64[D]")],
    ids=["complex", "datetime"],
)
def test_encode_unsupported_dtype(array):
    with pytest.raises(TypeError, match=r"output 'y' has unsupported dtype"):
        encode_json("y", array)


def test_a_hostile_rank_is_refused_fast_with_a_short_message():
    import time

    tensor = _tensor("FP32", [10**18] * 50_000, [0])
    start = time.perf_counter()
    with pytest.raises(InvalidInput) as info:
        decode_json(_spec("FP32"), tensor, LIMITS)
    assert time.perf_counter() - start < 0.5
    assert info.value.reason == "shape"
    assert len(info.value.message) < 300 and "(50000 dims)" in info.value.message


def test_flat_data_length_is_checked_before_conversion():
    tensor = _tensor("FP32", [1, 3], ["not", "numbers", "at", "all"])
    with pytest.raises(InvalidInput, match="needs 3 values, 'data' holds 4"):
        decode_json(_spec("FP32"), tensor, LIMITS)


def test_json_bytes_tensors_hold_at_most_the_binary_limit() -> None:
    """One rule for BYTES, JSON or binary: each string is a Python object made on the loop."""
    from mlserve.runtime.tensors import MAX_BYTES_ELEMENTS

    spec = TensorSpec("text", "BYTES", (-1,))
    limits = InputLimits(max_elements=10**7, max_rows=10**7, allow_nan=False)
    at_limit = {"name": "text", "datatype": "BYTES", "shape": [MAX_BYTES_ELEMENTS]}
    at_limit["data"] = ["a"] * MAX_BYTES_ELEMENTS
    assert decode_json(spec, at_limit, limits).shape == (MAX_BYTES_ELEMENTS,)
    over = dict(at_limit, shape=[MAX_BYTES_ELEMENTS + 1], data=["a"] * (MAX_BYTES_ELEMENTS + 1))
    with pytest.raises(InvalidInput, match=f"over the limit of {MAX_BYTES_ELEMENTS} strings") as e:
        decode_json(spec, over, limits)
    assert e.value.reason == "size"
