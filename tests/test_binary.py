"""Triton's binary tensor extension: codec round trips and over real HTTP."""

from __future__ import annotations

import struct
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import orjson
import pytest

from mlserve.errors import InvalidInput
from mlserve.runtime.binary import decode_binary, encode_binary, raw_shape
from mlserve.runtime.tensors import V2_TO_NUMPY, InputLimits, TensorSpec

from .conftest import ONNX_TYPES, ServerProcess

LIMITS = InputLimits(max_elements=10_000, max_rows=1_000, allow_nan=True)
RNG = np.random.default_rng(7)


def sample(datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    if datatype == "BYTES":
        words = np.array(["", "a", "héllo", "x" * 300, "\x00z"], dtype=object)
        return words[RNG.integers(0, len(words), shape)]
    dtype = V2_TO_NUMPY[datatype]
    if dtype.kind == "b":
        return RNG.integers(0, 2, shape).astype(bool)
    if dtype.kind == "f":
        return RNG.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("datatype", list(V2_TO_NUMPY))
def test_codec_round_trip(datatype: str) -> None:
    array = sample(datatype, (4, 3))
    blob = encode_binary(array)
    spec = TensorSpec("X", datatype, (-1, 3))
    tensor = {"name": "X", "datatype": datatype, "shape": [4, 3]}
    back = decode_binary(spec, tensor, memoryview(blob), LIMITS)
    assert back.dtype == spec.dtype and back.shape == (4, 3)
    assert back.tolist() == array.tolist()
    if datatype not in ("BYTES", "BOOL"):
        assert len(blob) == array.size * array.dtype.itemsize


def test_bytes_layout_is_length_prefixed() -> None:
    blob = encode_binary(np.array(["ab", ""], dtype=object))
    assert blob == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0)


@pytest.mark.parametrize(
    ("datatype", "blob", "message"),
    [
        ("FP32", b"\x00" * 11, r"binary_data_size is 11 bytes, shape \[1, 3\] of FP32 needs 12"),
        ("FP32", b"\x00" * 13, r"binary_data_size is 13 bytes"),
        ("BOOL", b"\x00\x02\x01", r"BOOL bytes must be 0 or 1"),
        ("BYTES", struct.pack("<I", 5) + b"ab", r"BYTES element 0 claims 5 bytes, 2 remain"),
        ("BYTES", struct.pack("<I", 1) + b"a", r"BYTES data ends after 1 of 3 elements"),
        ("BYTES", (struct.pack("<I", 1) + b"a") * 3 + b"zz", r"2 bytes left over"),
        ("BYTES", (struct.pack("<I", 1) + b"\xff") * 3, r"not valid UTF-8"),
    ],
)
def test_malformed_blobs(datatype: str, blob: bytes, message: str) -> None:
    spec = TensorSpec("X", datatype, (-1, 3))
    with pytest.raises(InvalidInput, match=message):
        decode_binary(
            spec, {"name": "X", "datatype": datatype, "shape": [1, 3]}, memoryview(blob), LIMITS
        )


def test_nan_policy_applies_to_binary() -> None:
    spec = TensorSpec("X", "FP32", (-1, 3))
    blob = memoryview(np.array([[1, np.nan, 2]], np.float32).tobytes())
    strict = InputLimits(max_elements=100, max_rows=10, allow_nan=False)
    with pytest.raises(InvalidInput, match="NaN or infinite"):
        decode_binary(spec, {"name": "X", "datatype": "FP32", "shape": [1, 3]}, blob, strict)


def test_raw_shape_inference() -> None:
    assert raw_shape(TensorSpec("X", "FP32", (-1, 20)), 800) == (10, 20)
    assert raw_shape(TensorSpec("X", "INT64", (2, 3)), 48) == (2, 3)
    with pytest.raises(InvalidInput, match="not a whole number of 80-byte rows"):
        raw_shape(TensorSpec("X", "FP32", (-1, 20)), 100)
    with pytest.raises(InvalidInput, match="at most one free dimension"):
        raw_shape(TensorSpec("X", "FP32", (-1, -1)), 100)


# ------------------------------------------------------------------------------- over HTTP


def _local(registry: Path, x: np.ndarray, version: int = 2) -> list[np.ndarray]:
    sess = ort.InferenceSession(
        str(registry / "linear" / str(version) / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return sess.run(None, {"X": x})  # type: ignore[no-any-return]


def test_tritonclient_binary_defaults(server: ServerProcess, registry: Path) -> None:
    import tritonclient.http as triton

    c = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        assert "binary_tensor_data" in c.get_server_metadata()["extensions"]
        x = RNG.standard_normal((7, 20)).astype(np.float32)
        inp = triton.InferInput("X", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)  # binary by default
        outs = [triton.InferRequestedOutput("scores"), triton.InferRequestedOutput("label")]
        result = c.infer("linear", [inp], outputs=outs)
        scores, label = _local(registry, x)
        np.testing.assert_array_equal(result.as_numpy("scores"), scores)
        np.testing.assert_array_equal(result.as_numpy("label"), label)
        assert result.get_output("scores")["parameters"]["binary_data_size"] == scores.nbytes
    finally:
        c.close()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritonclient_compressed_requests(
    server: ServerProcess, registry: Path, algorithm: str
) -> None:
    """tritonclient's request_compression_algorithm (Content-Encoding gzip or deflate, the
    binary header length counted before compression): the model's outputs, JSON and binary
    inputs alike."""
    import tritonclient.http as triton

    c = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        x = RNG.standard_normal((9, 20)).astype(np.float32)
        scores, label = _local(registry, x)
        for binary in (True, False):
            inp = triton.InferInput("X", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            result = c.infer(
                "linear",
                [inp],
                outputs=[triton.InferRequestedOutput(n) for n in ("scores", "label")],
                request_compression_algorithm=algorithm,
            )
            np.testing.assert_array_equal(result.as_numpy("scores"), scores)
            np.testing.assert_array_equal(result.as_numpy("label"), label)
    finally:
        c.close()


def test_tritonclient_extensions_not_served_are_refused(server: ServerProcess) -> None:
    """Triton's classification and shared-memory parameters are refused with 400 naming
    them, not ignored (a full score tensor taken for top-k classes, a region never read)."""
    import tritonclient.http as triton

    c = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    x = RNG.standard_normal((2, 20)).astype(np.float32)
    try:
        inp = triton.InferInput("X", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        top = triton.InferRequestedOutput("scores", class_count=1)
        with pytest.raises(triton.InferenceServerException) as info:
            c.infer("linear", [inp], outputs=[top])
        assert info.value.status() == "400"
        assert "output 'scores': parameters.classification" in info.value.message()
        shm = triton.InferInput("X", list(x.shape), "FP32")
        shm.set_shared_memory("region0", x.nbytes)
        with pytest.raises(triton.InferenceServerException) as info:
            c.infer("linear", [shm])
        assert info.value.status() == "400"
        assert "input 'X': shared memory" in info.value.message()
        assert "not supported" in info.value.message()
        assert "shared_memory" not in c.get_server_metadata()["extensions"]
        assert "classification" not in c.get_server_metadata()["extensions"]
    finally:
        c.close()


def test_tritonclient_every_datatype_binary_and_json_mixed(server: ServerProcess) -> None:
    import tritonclient.http as triton

    c = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        inputs, arrays = [], {}
        for i, dt in enumerate(ONNX_TYPES):
            array = sample(dt, (2, 3))
            arrays[dt] = array
            inp = triton.InferInput(f"in_{dt}", [2, 3], dt)
            inp.set_data_from_numpy(array, binary_data=i % 2 == 0)  # half binary, half JSON
            inputs.append(inp)
        outs = [
            triton.InferRequestedOutput(f"out_{dt}", binary_data=i % 3 != 0)
            for i, dt in enumerate(ONNX_TYPES)
        ]
        result = c.infer("echo", inputs, outputs=outs)
        for dt, array in arrays.items():
            got = result.as_numpy(f"out_{dt}")
            if dt == "BYTES":
                got = np.array(
                    [v.decode() if isinstance(v, bytes) else v for v in got.ravel()], dtype=object
                ).reshape(got.shape)
            assert got.tolist() == array.tolist(), dt
    finally:
        c.close()


def test_raw_binary_body(client: httpx.Client, registry: Path) -> None:
    x = RNG.standard_normal((5, 20)).astype(np.float32)
    r = client.post(
        "/v2/models/linear/versions/1/infer",
        content=x.tobytes(),
        headers={"Inference-Header-Content-Length": "0"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    n = int(r.headers["inference-header-content-length"])
    header = orjson.loads(r.content[:n])
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert [o["shape"] for o in header["outputs"]] == [[5, 3], [5]]
    scores_raw = r.content[n : n + sizes[0]]
    label_raw = r.content[n + sizes[0] :]
    scores, label = _local(registry, x, 1)
    np.testing.assert_array_equal(np.frombuffer(scores_raw, np.float32).reshape(5, 3), scores)
    np.testing.assert_array_equal(np.frombuffer(label_raw, np.int64), label)


def _binary_request(
    x: np.ndarray, size: int | str | None = None, extra: bytes = b"", header_len: str | None = None
) -> tuple[bytes, dict[str, str]]:
    blob = x.tobytes()
    params = {"binary_data_size": len(blob) if size is None else size}
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "X", "datatype": "FP32", "shape": list(x.shape), "parameters": params}
            ]
        }
    )
    hl = str(len(header)) if header_len is None else header_len
    return header + blob + extra, {"Inference-Header-Content-Length": hl}


X1 = np.zeros((1, 20), np.float32)


@pytest.mark.parametrize(
    ("body_headers", "message"),
    [
        (
            _binary_request(X1, header_len="abc"),
            "Inference-Header-Content-Length must be a non-negative integer, got 'abc'",
        ),
        (
            _binary_request(X1, header_len="-5"),
            "Inference-Header-Content-Length must be a non-negative integer, got '-5'",
        ),
        (
            _binary_request(X1, header_len="100000"),
            "Inference-Header-Content-Length 100000 is beyond the body",
        ),
        (_binary_request(X1, header_len="10"), "malformed JSON body"),
        (_binary_request(X1, size=-1), "binary_data_size must be a non-negative integer"),
        (_binary_request(X1, size="80"), "binary_data_size must be a non-negative integer"),
        (_binary_request(X1, size=76), "binary_data_size is 76 bytes, shape [1, 20] of FP32"),
        (_binary_request(X1, size=84), "binary_data_size 84 runs past the end of the body"),
        (_binary_request(X1, extra=b"zzzz"), "the binary part has 4 bytes that no input claims"),
    ],
)
def test_malformed_binary_requests(client: httpx.Client, body_headers, message: str) -> None:
    body, headers = body_headers
    r = client.post("/v2/models/linear/infer", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]
    assert (
        client.post(
            "/v2/models/linear/infer",
            content=_binary_request(X1)[0],
            headers=_binary_request(X1)[1],
        ).status_code
        == 200
    )


def test_binary_size_without_binary_part(client: httpx.Client) -> None:
    body, _ = _binary_request(X1)
    r = client.post("/v2/models/linear/infer", content=body[: -X1.nbytes])
    assert r.status_code == 400
    assert "has binary_data_size but the request has no binary part" in r.json()["error"]


def test_raw_body_needs_a_single_input_model(client: httpx.Client) -> None:
    r = client.post(
        "/v2/models/echo/infer",
        content=b"\x00" * 12,
        headers={"Inference-Header-Content-Length": "0"},
    )
    assert r.status_code == 400
    assert "a raw binary body needs a model with one input; 'echo' has 13" in r.json()["error"]


def test_binary_flags_must_be_json_true(client: httpx.Client) -> None:
    x = np.zeros((1, 20), np.float32)
    tensor = {"name": "X", "datatype": "FP32", "shape": [1, 20], "data": x.ravel().tolist()}
    r = client.post(
        "/v2/models/linear/infer",
        json={"inputs": [tensor], "parameters": {"binary_data_output": "false"}},
    )
    assert r.headers["content-type"] == "application/json"
    r = client.post(
        "/v2/models/linear/infer",
        json={"inputs": [tensor], "parameters": {"binary_data_output": True}},
    )
    assert r.headers["content-type"] == "application/octet-stream"
