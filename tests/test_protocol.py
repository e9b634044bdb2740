"""Open Inference Protocol conformance over real HTTP against a real server process."""

from __future__ import annotations

import http.client
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import orjson
import pytest

from .conftest import ONNX_TYPES, ServerProcess

RNG = np.random.default_rng(42)


def tensor(
    name: str, array: np.ndarray, datatype: str = "FP32", nested: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": datatype,
        "shape": list(array.shape),
        "data": array.tolist() if nested else array.ravel().tolist(),
    }


def raw_request(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """A request whose path is sent byte for byte (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, orjson.loads(resp.read())
    finally:
        conn.close()


# ------------------------------------------------------------------------------- health, server


def test_health_and_server_metadata(client: httpx.Client) -> None:
    r = client.get("/v2/health/live")
    assert (r.status_code, r.json()) == (200, {"live": True})
    r = client.get("/v2/health/ready")
    assert (r.status_code, r.json()) == (200, {"ready": True})
    meta = client.get("/v2").json()
    assert meta["name"] == "mlserve"
    assert isinstance(meta["version"], str) and isinstance(meta["extensions"], list)


def test_unknown_route_and_method_are_json_errors(client: httpx.Client) -> None:
    r = client.get("/v3/nothing")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"] == "no route for GET /v3/nothing"
    r = client.post("/v2/health/live")
    assert r.status_code == 405 and "POST" in r.json()["error"]
    r = client.get("/v2/models/linear/infer")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


# ------------------------------------------------------------------------------- model metadata


def test_model_metadata(client: httpx.Client) -> None:
    meta = client.get("/v2/models/linear").json()
    assert meta["name"] == "linear"
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 20]}]
    assert meta["outputs"] == [
        {"name": "scores", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
    ]
    params = meta["parameters"]
    assert params["default_version"] == "2"
    v1 = params["versions"]["1"]
    assert v1["state"] == "ready"
    assert v1["providers"] == ["CPUExecutionProvider"]
    assert v1["execution_mode"] == "inline"
    assert len(v1["lineage"]["model_sha256"]) == 64

    meta = client.get("/v2/models/linear/versions/1").json()
    assert meta["versions"] == ["1"] and meta["parameters"]["state"] == "ready"


def test_model_readiness(client: httpx.Client) -> None:
    assert client.get("/v2/models/linear/ready").json() == {"name": "linear", "ready": True}
    r = client.get("/v2/models/linear/versions/2/ready")
    assert (r.status_code, r.json()) == (200, {"name": "linear", "ready": True, "version": "2"})
    r = client.get("/v2/models/mixed/versions/2/ready")
    assert (r.status_code, r.json()["ready"]) == (503, False)
    assert client.get("/v2/models/badconfig/ready").status_code == 503
    assert client.get("/v2/models/mixed/versions/9/ready").status_code == 404
    assert client.get("/v2/models/nope/ready").status_code == 404


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v2/models/nope", 404, "model_not_found"),
        ("/v2/models/linear/versions/7", 404, "version_not_found"),
        ("/v2/models/linear/versions/0", 400, "invalid_input"),
        ("/v2/models/linear/versions/01", 400, "invalid_input"),
        ("/v2/models/linear/versions/abc", 400, "invalid_input"),
        ("/v2/models/..", 400, "invalid_input"),
        ("/v2/models/%2e%2e", 400, "invalid_input"),
        ("/v2/models/.tmp-publish", 400, "invalid_input"),
        ("/v2/models/%2e%2e%2fetc/versions/1", 404, "not_found"),
        ("/v2/models/linear%2f..%2f..%2fetc", 404, "not_found"),
    ],
)
def test_bad_names_and_versions(server: ServerProcess, path: str, status: int, code: str) -> None:
    got_status, body = raw_request(server, "GET", path)
    assert (got_status, body["code"]) == (status, code), body


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/%2e%2e/infer",
        "/v2/models/..%2f..%2fetc/infer",
        "/v2/models/%2fetc%2fpasswd/infer",
        "/v2/models/linear/versions/..%2f1/infer",
        "/v2/models/linear/versions/-1/infer",
    ],
)
def test_path_tricks_on_infer_are_refused(server: ServerProcess, path: str) -> None:
    status, body = raw_request(server, "POST", path, b"{}")
    assert status in (400, 404), body
    assert body["code"] in {"invalid_input", "not_found"}, body


# ------------------------------------------------------------------------------- inference


def _local(registry: Path, model: str, version: int, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(
        str(registry / model / str(version) / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return sess.run(None, {"X": x})  # type: ignore[no-any-return]


@pytest.mark.parametrize("version", [None, 1, 2])
@pytest.mark.parametrize("nested", [False, True])
def test_infer_equals_in_process_onnxruntime(
    client: httpx.Client, registry: Path, version: int | None, nested: bool
) -> None:
    x = RNG.standard_normal((5, 20)).astype(np.float32)
    path = "/v2/models/linear" + (f"/versions/{version}" if version else "") + "/infer"
    r = client.post(path, json={"id": "req-1", "inputs": [tensor("X", x, nested=nested)]})
    assert r.status_code == 200, r.text
    body = r.json()
    served = version or 2
    assert body["model_name"] == "linear" and body["model_version"] == str(served)
    assert body["id"] == "req-1"
    assert r.headers["mlserve-model-version"] == str(served)
    assert r.headers["mlserve-route"] == ("pinned" if version else "stable")
    scores, label = _local(registry, "linear", served, x)
    out = {o["name"]: o for o in body["outputs"]}
    assert out["scores"]["datatype"] == "FP32" and out["scores"]["shape"] == [5, 3]
    # JSON carries float32 values exactly (shortest round-trip repr).
    got = np.asarray(out["scores"]["data"], dtype=np.float32).reshape(5, 3)
    np.testing.assert_array_equal(got, scores)
    assert out["label"]["datatype"] == "INT64" and out["label"]["data"] == label.tolist()


def test_requested_outputs_are_honoured(client: httpx.Client) -> None:
    x = RNG.standard_normal((2, 20)).astype(np.float32)
    body = client.post(
        "/v2/models/linear/infer",
        json={
            "inputs": [tensor("X", x)],
            "outputs": [{"name": "label"}],
        },
    ).json()
    assert [o["name"] for o in body["outputs"]] == ["label"]
    assert "id" not in body


@pytest.mark.parametrize("datatype", list(ONNX_TYPES))
def test_every_datatype_round_trips(client: httpx.Client, datatype: str) -> None:
    values = {
        "BOOL": [[True, False, True], [False, False, True]],
        "UINT8": [[0, 255, 7], [1, 2, 3]],
        "UINT16": [[0, 65535, 7], [1, 2, 3]],
        "UINT32": [[0, 4294967295, 7], [1, 2, 3]],
        "UINT64": [[0, 18446744073709551615, 7], [1, 2, 3]],
        "INT8": [[-128, 127, 0], [1, -2, 3]],
        "INT16": [[-32768, 32767, 0], [1, -2, 3]],
        "INT32": [[-(2**31), 2**31 - 1, 0], [1, -2, 3]],
        "INT64": [[-(2**63), 2**63 - 1, 0], [1, -2, 3]],
        "FP16": [[0.5, -1.25, 65504.0], [1.0, 2.0, 3.0]],
        "FP32": [[0.1, -1.5, 3.4e38], [1.0, 2.0, 3.0]],
        "FP64": [[0.1, -1.5, 1.7e308], [1e-300, 2.0, 3.0]],
        "BYTES": [["a", "héllo", ""], ["x", "y", "z"]],
    }[datatype]
    inputs = []
    for dt in ONNX_TYPES:  # the model needs all inputs; fill the others with zeros/empties
        data = values if dt == datatype else [["" if dt == "BYTES" else 0] * 3] * 2
        if dt == "BOOL" and dt != datatype:
            data = [[False] * 3] * 2
        inputs.append({"name": f"in_{dt}", "datatype": dt, "shape": [2, 3], "data": data})
    r = client.post(
        "/v2/models/echo/infer", json={"inputs": inputs, "outputs": [{"name": f"out_{datatype}"}]}
    )
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["datatype"] == datatype and out["shape"] == [2, 3]
    flat = [v for row in values for v in row]
    if datatype in ("FP16", "FP32"):
        expected = np.asarray(flat, dtype={"FP16": np.float16, "FP32": np.float32}[datatype])
        np.testing.assert_array_equal(np.asarray(out["data"], dtype=expected.dtype), expected)
    else:
        assert out["data"] == flat


def _x(n: int = 1, f: int = 20) -> dict[str, Any]:
    return {"name": "X", "datatype": "FP32", "shape": [n, f], "data": [0.5] * (n * f)}


@pytest.mark.parametrize(
    ("model", "request_body", "status", "message"),
    [
        (
            "linear",
            {"inputs": [{**_x(), "shape": [1, 19], "data": [0.5] * 19}]},
            400,
            "input 'X' expects shape [-1, 20], got [1, 19]",
        ),
        (
            "linear",
            {"inputs": [{**_x(), "datatype": "FP64", "data": [1e39] + [0.5] * 19}]},
            400,
            "column 'X' is FP64 but the model takes FP32: values beyond the range of FP32",
        ),
        (
            "linear",
            {"inputs": [{**_x(), "data": [0.5] * 19}]},
            400,
            "input 'X': shape [1, 20] needs 20 values, 'data' holds 19",
        ),
        (
            "linear",
            {"inputs": [{**_x(), "data": ["a"] * 20}]},
            400,
            "input 'X' (FP32) must hold JSON numbers",
        ),
        (
            "linear",
            {"inputs": [{**_x(), "name": "Y"}]},
            400,
            "unknown input 'Y'; the model's inputs are ['X']",
        ),
        ("linear", {"inputs": [_x(), _x()]}, 400, "input 'X' is given more than once"),
        ("linear", {"inputs": []}, 400, "'inputs' must be a non-empty list of tensors"),
        (
            "linear",
            {"inputs": [_x()], "outputs": [{"name": "nope"}]},
            400,
            "unknown output 'nope'; the model's outputs are ['scores', 'label']",
        ),
        ("linear", [1, 2], 400, "the request body must be a JSON object"),
        ("linear", {"inputs": [_x()], "id": 5}, 400, "'id' must be a string"),
        (
            "linear",
            {"inputs": [{**_x(), "shape": [10**6, 10**6 * 20]}]},
            400,
            "input 'X' expects shape [-1, 20], got [1000000, 20000000]",
        ),
        ("strict", {"inputs": [_x(5, 4)]}, 400, "input 'X' has 5 rows, over the limit of 4"),
        (
            "strict",
            {"inputs": [{**_x(1, 4), "data": [1e39, 0, 0, 0]}]},
            400,
            "input 'X' holds NaN or infinite values",
        ),
        ("nope", {"inputs": [_x()]}, 404, "unknown model 'nope'"),
        (
            "mixed/versions/2",
            {"inputs": [_x()]},
            503,
            "model 'mixed' version 2 failed to load: onnxruntime could not load the model",
        ),
        (
            "mixed/versions/3",
            {"inputs": [_x()]},
            503,
            "model 'mixed' version 3 failed to load: incomplete: no model.onnx",
        ),
        ("mixed/versions/8", {"inputs": [_x()]}, 404, "model 'mixed' has no version 8"),
        ("badconfig", {"inputs": [_x()]}, 503, "unknown key 'max_rowz' in [inputs]"),
    ],
)
def test_bad_requests_get_precise_errors(
    client: httpx.Client, model: str, request_body: Any, status: int, message: str
) -> None:
    r = client.post(f"/v2/models/{model}/infer", json=request_body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert message in r.json()["error"]
    if status == 503:  # waiting helps a bad model.toml (edited), not a failed load
        assert r.headers.get("retry-after") == (None if "failed to load" in message else "1")
    # ...and the server still serves
    assert client.post("/v2/models/linear/infer", json={"inputs": [_x()]}).status_code == 200


def test_claimed_elements_are_checked_before_data(registry: Path) -> None:
    from .conftest import running_server

    with (
        running_server(registry, "--max-elements", "1000", "--max-body-bytes", "4096") as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        big = {"name": "in_FP32", "datatype": "FP32", "shape": [10**6, 3], "data": []}
        r = c.post("/v2/models/echo/infer", json={"inputs": [big]})
        assert r.status_code == 400
        assert r.json()["error"] == (
            "input 'in_FP32' claims 3000000 elements, over the limit of 1000"
        )
        r = c.post("/v2/models/linear/infer", content=b"{" + b" " * 5000 + b"}")
        assert r.status_code == 413 and "over the limit of 4096 bytes" in r.json()["error"]

        def chunks():  # no Content-Length: the limit is enforced as the body streams in
            for _ in range(10):
                yield b" " * 1000

        r = c.post("/v2/models/linear/infer", content=chunks())
        assert r.status_code == 413
        assert c.post("/v2/models/linear/infer", json={"inputs": [_x()]}).status_code == 200


def test_malformed_json(client: httpx.Client) -> None:
    r = client.post("/v2/models/linear/infer", content=b'{"inputs": [')
    assert r.status_code == 400 and r.json()["error"].startswith("malformed JSON body")
    r = client.post("/v2/models/linear/infer", content=b"\xff\xfe")
    assert r.status_code == 400


def test_nan_allowed_when_the_model_says_so(client: httpx.Client) -> None:
    r = client.post(
        "/v2/models/lenient/infer", json={"inputs": [{**_x(1, 4), "data": [1e39, 0, 0, 0]}]}
    )
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------------------- broken versions


def test_broken_versions_beside_good_ones(client: httpx.Client, registry: Path) -> None:
    meta = client.get("/v2/models/mixed").json()
    assert meta["versions"] == ["1"]
    versions = meta["parameters"]["versions"]
    assert versions["1"]["state"] == "ready"
    assert versions["2"]["state"] == "failed"
    assert "Protobuf parsing failed" in versions["2"]["reason"]
    assert versions["3"]["reason"] == "incomplete: no model.onnx in the version directory"
    assert "does not match lineage.json" in versions["4"]["reason"]
    assert str(registry) not in orjson.dumps(meta).decode()
    r = client.post("/v2/models/mixed/infer", json={"inputs": [_x()]})
    assert r.status_code == 200 and r.headers["mlserve-model-version"] == "1"


def test_version_policy_and_bad_config(client: httpx.Client) -> None:
    assert client.get("/v2/models/latest2").json()["versions"] == ["2", "3"]
    assert client.get("/v2/models/latest2/versions/1").status_code == 404
    meta = client.get("/v2/models/badconfig").json()
    assert meta["versions"] == []
    assert "unknown key 'max_rowz' in [inputs]" in meta["parameters"]["config_error"]


# ------------------------------------------------------------------------------- standard client


def test_tritonclient_unmodified(server: ServerProcess, registry: Path) -> None:
    import tritonclient.http as triton

    c = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        assert c.is_server_live() and c.is_server_ready()
        assert c.is_model_ready("linear") and c.is_model_ready("linear", "1")
        assert c.get_server_metadata()["name"] == "mlserve"
        meta = c.get_model_metadata("linear", "1")
        assert meta["inputs"][0]["shape"] == [-1, 20]
        x = RNG.standard_normal((3, 20)).astype(np.float32)
        inp = triton.InferInput("X", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=False)
        outs = [
            triton.InferRequestedOutput("scores", binary_data=False),
            triton.InferRequestedOutput("label", binary_data=False),
        ]
        result = c.infer("linear", [inp], model_version="1", outputs=outs, request_id="t-1")
        scores, label = _local(registry, "linear", 1, x)
        np.testing.assert_array_equal(result.as_numpy("scores"), scores)
        np.testing.assert_array_equal(result.as_numpy("label"), label)
        assert result.get_response()["id"] == "t-1"
        with pytest.raises(triton.InferenceServerException, match="unknown model 'nope'"):
            c.get_model_metadata("nope")
    finally:
        c.close()
