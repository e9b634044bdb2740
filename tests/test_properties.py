"""Hypothesis properties of the V2 tensor codecs (JSON and Triton's binary extension).

- Round trip: every V2 datatype, any shape (zero-size dimensions included), flat and nested
  JSON ``data``, our binary codec and tritonclient's in both directions.
- Robustness: arbitrary JSON in every field of a request, arbitrary bytes as binary payloads
  and arbitrary claimed shapes, sizes and header lengths only ever raise ``InvalidInput`` or
  ``PayloadTooLarge`` (400/413 over the in-process ASGI app), and a refused tensor allocates
  nothing near what it claims.

Runs are reproducible (``derandomize=True``) and write no example database.
"""

from __future__ import annotations

import asyncio
import json
import math
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from mlserve.config import ServerSettings
from mlserve.errors import InvalidInput, PayloadTooLarge
from mlserve.http.app import create_app
from mlserve.runtime.binary import binary_size, decode_binary, encode_binary, raw_shape
from mlserve.runtime.tensors import (
    V2_TO_NUMPY,
    InputLimits,
    TensorSpec,
    check_header,
    decode_json,
    encode_json,
)

from .conftest import echo_model, write_version
from .support import asgi

DATATYPES = list(V2_TO_NUMPY)
OURS = (InvalidInput, PayloadTooLarge)
LIMITS = InputLimits(max_elements=100_000, max_rows=100_000, allow_nan=True)
STRICT = InputLimits(max_elements=100_000, max_rows=100_000, allow_nan=False)

BASE = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def examples(n: int) -> settings:
    return settings(BASE, max_examples=n)


# ---------------------------------------------------------------------------------------------
# Strategies

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)


def elements(datatype: str, *, finite: bool) -> st.SearchStrategy[Any]:
    dtype = V2_TO_NUMPY[datatype]
    if datatype == "BYTES":
        return st.text(max_size=12)
    if dtype.kind == "f":
        return hnp.from_dtype(dtype, allow_nan=not finite, allow_infinity=not finite)
    return hnp.from_dtype(dtype)


@st.composite
def tensors(draw: st.DrawFn, *, finite: bool = True) -> tuple[str, np.ndarray]:
    datatype = draw(st.sampled_from(DATATYPES))
    shape = draw(shapes)
    array = draw(
        hnp.arrays(V2_TO_NUMPY[datatype], shape, elements=elements(datatype, finite=finite))
    )
    return datatype, array


def spec_for(datatype: str, shape: tuple[int, ...], fixed: list[bool] | None = None) -> TensorSpec:
    """A spec the array fits: each dimension free (-1) or fixed to the array's size."""
    dims = tuple(d if fixed and fixed[i % len(fixed)] else -1 for i, d in enumerate(shape))
    return TensorSpec("X", datatype, dims)


def assert_same(back: np.ndarray, array: np.ndarray) -> None:
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    if array.dtype.kind == "O":
        assert all(type(x) is str for x in back.flat)
        assert back.tolist() == array.tolist()
    else:  # byte for byte: -0.0, NaN payloads and all
        assert np.ascontiguousarray(back).tobytes() == np.ascontiguousarray(array).tobytes()


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Any JSON value, with the awkward corners: huge ints, NaN/inf, long strings, nesting."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(2**200), max_value=2**200),
        st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**400, -(10**400), 0, -1]),
        st.floats(),
        st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324, 65505.0, 3.5e38]),
        st.text(max_size=8),
        st.sampled_from(["FP32", "BYTES", "X", "in_FP32", "binary_data_size", "x" * 4096]),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=6), inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


# ---------------------------------------------------------------------------------------------
# Round trips: JSON


@examples(300)
@given(tensors(), st.lists(st.booleans(), min_size=1, max_size=4))
def test_json_round_trip_flat_through_our_encoder(
    case: tuple[str, np.ndarray], fixed: list[bool]
) -> None:
    """Our response encoder → orjson bytes → orjson → our request parser: the same array."""
    datatype, array = case
    tensor = encode_json("X", array)
    assert tensor["datatype"] == datatype and tensor["shape"] == list(array.shape)
    wire = orjson.loads(orjson.dumps({"outputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY))
    back = decode_json(spec_for(datatype, array.shape, fixed), wire["outputs"][0], STRICT)
    assert_same(back, array)


@examples(300)
@given(tensors())
def test_json_round_trip_nested_data(case: tuple[str, np.ndarray]) -> None:
    datatype, array = case
    assume(array.ndim >= 1)
    data = orjson.loads(orjson.dumps(array.tolist()))
    tensor = {"name": "X", "datatype": datatype, "shape": list(array.shape), "data": data}
    back = decode_json(spec_for(datatype, array.shape), tensor, STRICT)
    assert_same(back, array)


@examples(200)
@given(tensors(finite=False), st.booleans())
def test_python_values_with_nan_and_inf_follow_the_policy(
    case: tuple[str, np.ndarray], nested: bool
) -> None:
    """Non-finite floats (which JSON cannot carry, but a caller can) obey ``allow_nan``."""
    datatype, array = case
    data = array.tolist() if nested and array.ndim else array.ravel().tolist()
    tensor = {"name": "X", "datatype": datatype, "shape": list(array.shape), "data": data}
    spec = spec_for(datatype, array.shape)
    assert_same(decode_json(spec, tensor, LIMITS), array)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        with pytest.raises(InvalidInput, match="NaN or infinite") as info:
            decode_json(spec, tensor, STRICT)
        assert info.value.reason == "nan"
    else:
        assert_same(decode_json(spec, tensor, STRICT), array)


@examples(100)
@given(tensors())
def test_json_round_trip_through_tritonclient(case: tuple[str, np.ndarray]) -> None:
    """tritonclient's JSON request → our parser; our JSON response → tritonclient's reader."""
    datatype, array = case
    assume(array.ndim >= 1)  # tritonclient cannot send a rank-0 tensor as JSON data
    item = triton.InferInput("X", list(array.shape), datatype)
    item.set_data_from_numpy(array, binary_data=False)
    body, json_size = triton.InferenceServerClient.generate_request_body([item])
    assert json_size is None
    request = orjson.loads(body)
    back = decode_json(spec_for(datatype, array.shape), request["inputs"][0], STRICT)
    assert_same(back, array)

    response = orjson.dumps(
        {"model_name": "m", "outputs": [encode_json("X", array)]},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    theirs = triton.InferResult.from_response_body(response).as_numpy("X")
    assert theirs is not None and theirs.shape == array.shape
    if datatype == "BYTES":  # tritonclient gives BYTES back as bytes objects
        assert theirs.tolist() == np.vectorize(str.encode, otypes=[object])(array).tolist()
    else:
        assert_same(theirs.astype(array.dtype), array)


@examples(200)
@given(
    st.sampled_from(["FP16", "FP32", "FP64"]),
    st.lists(
        st.one_of(
            st.integers(min_value=-(2**53), max_value=2**53),  # exact as float64 too
            st.sampled_from([2**63, 2**64 - 1, -(2**63), 2**64, -(2**63) - 1, 65504, 65520]),
            st.integers(min_value=-70_000, max_value=70_000),
            st.floats(allow_nan=False, allow_infinity=False),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_json_numbers_into_floats_obey_the_nan_policy(datatype: str, values: list[Any]) -> None:
    """Any JSON number list into a float tensor: the nearest floats, or refused as non-finite
    (an integer beyond FP16's 65504 overflows exactly like a float does)."""
    spec = TensorSpec("X", datatype, (-1,))
    tensor = {"name": "X", "datatype": datatype, "shape": [len(values)], "data": values}
    with np.errstate(over="ignore"):
        expected = np.array([float(v) for v in values]).astype(spec.dtype)
    try:
        array = decode_json(spec, tensor, STRICT)
    except InvalidInput as exc:
        assert exc.reason in ("nan", "data"), exc
        if exc.reason == "data":  # integers beyond uint64 are not exact: refused as such
            assert any(type(v) is int and not -(2**63) <= v < 2**64 for v in values)
        else:
            assert not np.isfinite(expected).all()
        return
    assert np.isfinite(array).all()
    np.testing.assert_array_equal(array, expected, strict=True)


# ---------------------------------------------------------------------------------------------
# Round trips: binary extension


@examples(300)
@given(tensors(finite=False))
def test_binary_round_trip_our_codec(case: tuple[str, np.ndarray]) -> None:
    datatype, array = case
    blob = encode_binary(array)
    tensor = {"name": "X", "datatype": datatype, "shape": list(array.shape)}
    back = decode_binary(spec_for(datatype, array.shape), tensor, memoryview(blob), LIMITS)
    assert_same(back, array)
    assert encode_binary(back) == blob


@examples(150)
@given(tensors(finite=False))
def test_binary_round_trip_with_tritonclient(case: tuple[str, np.ndarray]) -> None:
    """tritonclient's binary request → our decoder; our binary response → tritonclient's."""
    datatype, array = case
    item = triton.InferInput("X", list(array.shape), datatype)
    item.set_data_from_numpy(array, binary_data=True)
    body, json_size = triton.InferenceServerClient.generate_request_body([item])
    header = orjson.loads(body[:json_size])
    tensor = header["inputs"][0]
    size = binary_size(tensor)
    blob = memoryview(body)[json_size:]
    assert size == len(blob)
    if datatype == "BYTES":
        assert bytes(blob) == encode_binary(array)
    back = decode_binary(spec_for(datatype, array.shape), tensor, blob, LIMITS)
    assert_same(back, array)

    ours = encode_binary(array)
    if datatype == "BYTES":
        theirs = serialize_byte_tensor(array)
        assert theirs is not None and b"".join(theirs.ravel().tolist()) == ours
        decoded = deserialize_bytes_tensor(ours)
        assert decoded.tolist() == [s.encode() for s in array.ravel().tolist()]
    out = encode_json("X", array, with_data=False)
    out["parameters"] = {"binary_data_size": len(ours)}
    head = orjson.dumps({"model_name": "m", "outputs": [out]})
    result = triton.InferResult.from_response_body(head + ours, header_length=len(head))
    theirs_array = result.as_numpy("X")
    assert theirs_array is not None and theirs_array.shape == array.shape
    if datatype == "BYTES":
        assert [x.decode() for x in theirs_array.ravel()] == array.ravel().tolist()
    else:
        assert_same(theirs_array, array)


# ---------------------------------------------------------------------------------------------
# Robustness: arbitrary tensors, bytes and claims


def _only_ours(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except OURS:
        return None


tensor_fields = st.fixed_dictionaries(
    {},
    optional={
        "name": json_values(4),
        "datatype": st.one_of(st.sampled_from(DATATYPES), json_values(4)),
        "shape": st.one_of(
            st.lists(st.integers(min_value=-2, max_value=5), max_size=4),
            st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=4),
            json_values(6),
        ),
        "data": json_values(30),
        "parameters": st.one_of(
            st.fixed_dictionaries({"binary_data_size": json_values(3)}), json_values(6)
        ),
    },
)


@examples(600)
@given(
    st.sampled_from(DATATYPES),
    st.lists(st.sampled_from([-1, 0, 1, 2, 3]), max_size=3),
    tensor_fields,
    st.booleans(),
)
@pytest.mark.slow
def test_arbitrary_json_tensors_raise_only_invalid_input(
    datatype: str, dims: list[int], tensor: dict[str, Any], allow_nan: bool
) -> None:
    spec = TensorSpec("X", datatype, tuple(dims))
    limits = InputLimits(max_elements=1000, max_rows=50, allow_nan=allow_nan)
    array = _only_ours(decode_json, spec, tensor, limits)
    if array is not None:
        assert array.dtype == spec.dtype
        assert array.size <= limits.max_elements
        assert len(array.shape) == len(spec.shape)
        assert all(w in (-1, d) for w, d in zip(spec.shape, array.shape, strict=True))
        if spec.dtype.kind == "f" and not allow_nan:
            assert np.isfinite(array).all()
    _only_ours(binary_size, tensor)


@examples(400)
@given(
    st.sampled_from(DATATYPES),
    st.integers(min_value=1, max_value=3),
    st.lists(st.one_of(st.integers(min_value=0, max_value=6), st.integers()), max_size=3),
    st.one_of(
        st.binary(max_size=64),
        st.builds(bytes, st.lists(st.sampled_from([0, 1, 4, 255]), max_size=64)),
    ),
    st.booleans(),
)
def test_arbitrary_bytes_and_claims_raise_only_invalid_input(
    datatype: str, rank: int, shape: list[int], blob: bytes, allow_nan: bool
) -> None:
    spec = TensorSpec("X", datatype, (-1,) * rank)
    limits = InputLimits(max_elements=1000, max_rows=50, allow_nan=allow_nan)
    tensor = {"name": "X", "datatype": datatype, "shape": shape}
    array = _only_ours(decode_binary, spec, tensor, memoryview(blob), limits)
    if array is not None:
        assert array.dtype == spec.dtype and list(array.shape) == shape
        if datatype != "BYTES":
            assert array.nbytes == len(blob)
    fixed = TensorSpec("X", datatype, tuple(3 if i else -1 for i in range(rank)))
    claimed = _only_ours(raw_shape, fixed, len(blob))
    if claimed is not None:
        raw = {"name": "X", "datatype": datatype, "shape": list(claimed)}
        _only_ours(decode_binary, fixed, raw, memoryview(blob), limits)


huge_dims = st.one_of(
    st.integers(min_value=10**6, max_value=10**12),
    st.integers(min_value=2**62, max_value=2**200),
)


@examples(150)
@given(st.sampled_from(DATATYPES), st.lists(huge_dims, min_size=1, max_size=3), st.data())
@pytest.mark.slow
def test_huge_claimed_shapes_are_refused_before_allocating(
    datatype: str, big: list[int], data: st.DataObject
) -> None:
    """A claim of up to 10**12 elements (or beyond int64) is refused on the header alone."""
    limits = InputLimits(max_elements=16 * 1024 * 1024, max_rows=10_000, allow_nan=True)
    shape = [*big, data.draw(st.integers(min_value=1, max_value=4))]
    spec = TensorSpec("X", datatype, (-1,) * len(shape))
    tensor: dict[str, Any] = {"name": "X", "datatype": datatype, "shape": shape}
    tensor["data"] = data.draw(json_values(10).filter(lambda v: isinstance(v, list)) | st.just([]))
    blob = memoryview(data.draw(st.binary(max_size=256)))
    for call, args in (
        (check_header, (spec, tensor, limits)),
        (decode_json, (spec, tensor, limits)),
        (decode_binary, (spec, tensor, blob, limits)),
    ):
        tracemalloc.start()
        try:
            with pytest.raises(InvalidInput) as info:
                call(*args)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert info.value.reason in ("size", "rows")
        assert peak < 256 * 1024, f"{call.__name__} peaked at {peak} bytes"
        assert len(str(info.value)) < 400


@examples(100)
@given(
    st.sampled_from(DATATYPES),
    st.integers(min_value=1, max_value=3),
    st.integers(min_value=2_000, max_value=20_000),
    st.integers(min_value=100, max_value=2_000),
    st.sampled_from(["", "1", "abc", "\u00e9"]),
    st.booleans(),
)
def test_long_strings_in_data_do_not_amplify_allocation(
    datatype: str, rank: int, long: int, count: int, short: str, nested: bool
) -> None:
    """One long string among many short ones: memory stays in proportion to the request."""
    strings = ["x" * long] + [short] * (count - 1)
    data: list[Any] = strings
    for _ in range(rank if nested else 0):  # 2-D to 4-D nesting
        data = [data]
    shape = [1] * rank + [count] if nested else [count]
    spec = TensorSpec("X", datatype, (-1,) * len(shape))
    tensor = {"name": "X", "datatype": datatype, "shape": shape, "data": data}
    limits = InputLimits(max_elements=10**6, max_rows=10**6, allow_nan=True)
    request_bytes = len(orjson.dumps(tensor))
    tracemalloc.start()
    try:
        _only_ours(decode_json, spec, tensor, limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 + 16 * request_bytes, f"{peak} bytes for a {request_bytes}-byte tensor"


# ---------------------------------------------------------------------------------------------
# Whole requests over the in-process ASGI app (the echo model has an input of every datatype)


class App:
    def __init__(self, root: Path) -> None:
        write_version(root, "echo", 1, echo_model())
        settings = ServerSettings(registry=root, monitoring="off", max_body_bytes=1 << 20)
        self.app = create_app(settings)
        self.app.store.load_all()
        self.loop = asyncio.new_event_loop()

    def post(
        self, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
    ) -> tuple[int, bytes]:
        answer = asgi.request_sync(
            self.app,
            "POST",
            "/v2/models/echo/infer",
            loop=self.loop,
            headers=[(b"content-type", b"application/json"), *(headers or [])],
            body=body,
        )
        return answer.status, answer.body


@pytest.fixture(scope="module")
def echo_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    app = App(tmp_path_factory.mktemp("props-registry"))
    yield app
    app.loop.close()


def valid_request(rows: int = 1) -> dict[str, Any]:
    inputs = []
    for dt in DATATYPES:
        value: Any = {"BOOL": True, "BYTES": "a"}.get(dt, 1)
        inputs.append(
            {"name": f"in_{dt}", "datatype": dt, "shape": [rows, 3], "data": [value] * (3 * rows)}
        )
    return {"id": "r", "inputs": inputs}


def test_valid_request_is_answered(echo_app: App) -> None:
    status, body = echo_app.post(orjson.dumps(valid_request()))
    assert status == 200, body
    outputs = {o["name"]: o for o in orjson.loads(body)["outputs"]}
    assert outputs["out_INT64"]["data"] == [1, 1, 1]
    assert outputs["out_BYTES"]["data"] == ["a", "a", "a"]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:4]):
            found += _paths(v, (*prefix, i))
    return found


REQUEST_PATHS = _paths(
    {
        **valid_request(),
        "parameters": {"binary_data_output": True, "routing_key": "k"},
        "outputs": [{"name": "out_FP32", "parameters": {"binary_data": True}}],
    }
)


def _replace(request: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    *head, last = path
    target = request
    for key in head:
        target = target[key]
    target[last] = value
    return request


def _assert_answered(status: int, body: bytes) -> None:
    assert status in (200, 400, 413), f"{status}: {body[:500]!r}"
    if status != 200:
        assert orjson.loads(body)["code"] in ("invalid_input", "payload_too_large")


@examples(400)
@given(st.lists(st.tuples(st.sampled_from(REQUEST_PATHS), json_values(12)), min_size=1, max_size=3))
@pytest.mark.slow
def test_arbitrary_json_in_any_request_field(
    echo_app: App, edits: list[tuple[tuple[Any, ...], Any]]
) -> None:
    request: Any = {
        **valid_request(),
        "parameters": {"binary_data_output": True, "routing_key": "k"},
        "outputs": [{"name": "out_FP32", "parameters": {"binary_data": True}}],
    }
    for path, value in edits:
        try:
            request = _replace(request, path, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed this path
    _assert_answered(*echo_app.post(_dumps(request)))


def _dumps(value: Any) -> bytes:
    """JSON text for any value: big integers as digits (the stdlib), NaN/inf as null (orjson)."""
    try:
        return json.dumps(value, allow_nan=False).encode()
    except ValueError:
        try:
            return orjson.dumps(value)
        except orjson.JSONEncodeError:  # NaN and a big integer together
            return json.dumps(value, allow_nan=True).encode()  # NaN: malformed JSON, a 400


@examples(300)
@given(
    st.sampled_from(DATATYPES),
    st.one_of(json_values(3), st.integers(min_value=-2, max_value=80)),
    st.binary(max_size=80),
    st.one_of(
        st.none(),
        st.integers(min_value=0, max_value=2**70).map(lambda n: str(n).encode()),
        st.binary(max_size=24),
    ),
    st.lists(st.integers(min_value=-1, max_value=2**40), min_size=0, max_size=3),
)
def test_arbitrary_binary_requests(
    echo_app: App,
    datatype: str,
    size: Any,
    blob: bytes,
    header_length: bytes | None,
    shape: list[int],
) -> None:
    request = valid_request()
    tensor = request["inputs"][DATATYPES.index(datatype)]
    del tensor["data"]
    tensor["shape"] = shape
    tensor["parameters"] = {"binary_data_size": size}
    head = _dumps(request)
    length = str(len(head)).encode() if header_length is None else header_length
    status, body = echo_app.post(head + blob, [(b"inference-header-content-length", length)])
    _assert_answered(status, body)


@examples(100)
@given(st.binary(max_size=200), st.sampled_from([b"0", b"1", b"5", b"200", b"999999999999"]))
def test_arbitrary_bodies(echo_app: App, body: bytes, header_length: bytes) -> None:
    _assert_answered(*echo_app.post(body))
    _assert_answered(*echo_app.post(body, [(b"inference-header-content-length", header_length)]))


def test_oversized_body_is_413(echo_app: App) -> None:
    status, body = echo_app.post(b" " * ((1 << 20) + 1))
    assert status == 413, body
