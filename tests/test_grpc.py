"""The gRPC Open Inference Protocol, served beside HTTP: a real server process, the unmodified
``tritonclient.grpc`` client (and its own generated stub for what the client does not send:
typed contents, hostile messages), outputs checked against onnxruntime in this process and
answers against HTTP's for the same requests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import onnx
import onnxruntime as ort
import orjson
import pytest
import tritonclient.grpc as tg
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from mlserve import errors
from mlserve.governance.publish import publish
from mlserve.grpc.status import CODES, RETRY_INFO_TYPE, STATUS_DETAILS_KEY, grpc_status

from .conftest import (
    ServerProcess,
    free_port,
    linear_model,
    matmul_model,
    running_server,
    wait_for,
    write_version,
)
from .support.metrics import parse

MAX_BODY = 1024 * 1024
X = load_breast_cancer().data.astype(np.float32)


def string_model() -> onnx.ModelProto:
    """``out = s``: a BYTES (string) input of shape [N] and its echo."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["out"])],
        "strings",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("out", TensorProto.STRING, ["N"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grpc-registry")
    bunch = load_breast_cancer(as_frame=True)
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    est.fit(bunch.data, bunch.target)
    for _ in range(2):  # version 2 takes pinned traffic only: one test's drift window
        publish(root, "cancer", reference=bunch.data, estimator=est)
    (root / "cancer" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n[routing]\nstable = 1\n'
        '[payloads]\nsample = 1.0\nfields = ["inputs", "outputs", "parameters"]\n'
    )
    for v in (1, 2, 3):
        write_version(root, "split", v, linear_model(seed=v))
    (root / "split" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n[routing]\nstable = 1\ncanary = 2\ncanary_weight = 50\n'
        "shadows = [3]\nshadow_sample = 1.0\n"
    )
    write_version(root, "text", 1, string_model())
    write_version(root, "slow", 1, matmul_model(fixed=None))
    (root / "slow" / "model.toml").write_text('[execution]\nmode = "thread"\n')
    return root


class GrpcServer:
    """A server process with its gRPC port, the triton client and the raw stub."""

    def __init__(self, proc: ServerProcess, grpc_port: int) -> None:
        self.proc = proc
        self.url = proc.url
        self.target = f"127.0.0.1:{grpc_port}"
        self.client = tg.InferenceServerClient(self.target)
        self.channel = grpc.insecure_channel(
            self.target, options=[("grpc.max_send_message_length", -1)]
        )
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def close(self) -> None:
        self.client.close()
        self.channel.close()


@contextlib.contextmanager
def serving(root: Path, *args: str) -> Iterator[GrpcServer]:
    port = free_port()
    with running_server(root, "--grpc-port", str(port), *args) as proc:
        server = GrpcServer(proc, port)
        wait_for(lambda: _ready(server))
        try:
            yield server
        finally:
            server.close()


def _ready(server: GrpcServer) -> bool:
    try:
        return bool(server.client.is_server_ready())
    except tg.InferenceServerException:
        return False


def payload_dir(root: Path) -> Path:
    return root.parent / f"{root.name}-payloads"


@pytest.fixture(scope="module")
def srv(root: Path) -> Iterator[GrpcServer]:
    args = ("--max-body-bytes", str(MAX_BODY), "--payload-dir", str(payload_dir(root)))
    with serving(root, *args) as server:
        yield server


def _session(root: Path, model: str, version: int) -> ort.InferenceSession:
    return ort.InferenceSession(str(root / model / str(version) / "model.onnx"))


def _fp32_input(x: np.ndarray, name: str = "X") -> tg.InferInput:
    tensor = tg.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def _http(server: GrpcServer, path: str, body: Any = None, **headers: str) -> httpx.Response:
    if body is None:
        return httpx.get(server.url + path, timeout=10)
    return httpx.post(server.url + path, content=body, headers=headers, timeout=10)


def _binary_body(header: dict[str, Any], blob: bytes) -> tuple[bytes, dict[str, str]]:
    head = orjson.dumps(header)
    return head + blob, {"inference-header-content-length": str(len(head))}


def _call(server: GrpcServer, request: Any, metadata: Any = None) -> Any:
    return server.stub.ModelInfer(request, metadata=metadata, timeout=10)


def _refused(server: GrpcServer, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        _call(server, request)
    return info.value


def _pending(server: GrpcServer, model: str) -> float:
    """The server's mlserve_pending_requests for ``model`` (queued or running on threads)."""
    metrics = parse(_http(server, "/metrics").text)
    return metrics.value("mlserve_pending_requests", 0.0, model=model)


def _still_serving(server: GrpcServer) -> None:
    """HTTP still answers, and a good gRPC request still gets its answer."""
    assert _http(server, "/v2/health/ready").status_code == 200
    result = server.client.infer("cancer", [_fp32_input(X[:2])])
    assert result.as_numpy("label").shape == (2,)


# ---------------------------------------------------------------------------- health, metadata
@pytest.mark.slow
def test_health_and_metadata_match_http(srv: GrpcServer) -> None:
    c = srv.client
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("cancer") and c.is_model_ready("split", "3")
    meta = c.get_server_metadata(as_json=True)
    http = _http(srv, "/v2").json()
    # Every extension HTTP lists but the repository's (admin RPCs, authorized over HTTP only).
    assert "model_repository" in http["extensions"]
    http["extensions"].remove("model_repository")
    assert meta == http
    assert {"model_configuration", "statistics"} <= set(meta["extensions"])
    for model, version in (("cancer", ""), ("split", "2")):
        got = c.get_model_metadata(model, version, as_json=True)
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
        want = _http(srv, path).json()
        assert got["name"] == want["name"] and got["versions"] == want["versions"]
        assert got["platform"] == want["platform"]
        for key in ("inputs", "outputs"):
            assert [
                {
                    "name": t["name"],
                    "datatype": t["datatype"],
                    "shape": [int(d) for d in t["shape"]],
                }
                for t in got[key]
            ] == want[key]


def test_unknown_model_and_version_are_not_found_with_http_s_message(srv: GrpcServer) -> None:
    """Infer answers NOT_FOUND as HTTP answers 404; ModelReady answers OK, ready=false (as
    Triton does: its client's is_model_ready returns False instead of raising), HTTP's
    message as the not-ready reason, while HTTP's /ready stays 404."""
    for model, version, path in (
        ("nope", "", "/v2/models/nope"),
        ("cancer", "9", "/v2/models/cancer/versions/9"),
    ):
        want = _http(srv, path + "/ready")
        assert want.status_code == 404
        assert srv.client.is_model_ready(model, version) is False
        response, call = srv.stub.ModelReady.with_call(
            pb.ModelReadyRequest(name=model, version=version), timeout=10
        )
        assert response.ready is False and call.code() is grpc.StatusCode.OK
        assert ("mlserve-not-ready-reason", want.json()["error"]) in call.trailing_metadata()
        request = pb.ModelInferRequest(model_name=model, model_version=version)
        http = _http(srv, path + "/infer", b"{}")
        error = _refused(srv, request)
        assert error.code() is grpc.StatusCode.NOT_FOUND
        assert error.details() == http.json()["error"]
        assert ("mlserve-error-code", http.json()["code"]) in error.trailing_metadata()


def test_bad_model_name_and_version_are_invalid_argument(srv: GrpcServer) -> None:
    for model, version, path in (
        (".hidden", "", "/v2/models/.hidden/infer"),
        ("cancer", "01", "/v2/models/cancer/versions/01/infer"),
    ):
        http = _http(srv, path, b"{}")
        assert http.status_code == 400
        error = _refused(srv, pb.ModelInferRequest(model_name=model, model_version=version))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == http.json()["error"]


# ---------------------------------------------------------------------------- inference
def test_binary_infer_equals_onnxruntime_in_process(srv: GrpcServer, root: Path) -> None:
    session = _session(root, "cancer", 1)
    for rows in (X[:1], X[:7], X):
        result = srv.client.infer("cancer", [_fp32_input(rows)], request_id="r-1")
        response = result.get_response()
        assert response.model_name == "cancer" and response.model_version == "1"
        assert response.id == "r-1"
        for out, want in zip(session.get_outputs(), session.run(None, {"X": rows}), strict=True):
            got = result.as_numpy(out.name)
            assert got.dtype == want.dtype and np.array_equal(got, want), out.name


def test_requested_outputs_only(srv: GrpcServer, root: Path) -> None:
    want = _session(root, "cancer", 1).run(["probabilities"], {"X": X[:3]})[0]
    result = srv.client.infer(
        "cancer", [_fp32_input(X[:3])], outputs=[tg.InferRequestedOutput("probabilities")]
    )
    assert [o.name for o in result.get_response().outputs] == ["probabilities"]
    assert np.array_equal(result.as_numpy("probabilities"), want)


def test_typed_contents_equal_onnxruntime_and_binary(srv: GrpcServer, root: Path) -> None:
    rows = X[:4]
    request = pb.ModelInferRequest(model_name="cancer")
    tensor = request.inputs.add(name="X", datatype="FP32", shape=list(rows.shape))
    tensor.contents.fp32_contents.extend(rows.ravel().tolist())
    response = _call(srv, request)
    session = _session(root, "cancer", 1)
    for out, raw, want in zip(
        response.outputs,
        response.raw_output_contents,
        session.run([o.name for o in response.outputs], {"X": rows}),
        strict=True,
    ):
        got = np.frombuffer(raw, dtype=want.dtype).reshape(list(out.shape))
        assert np.array_equal(got, want), out.name


def test_strings_raw_and_typed(srv: GrpcServer) -> None:
    words = np.array(["ä", "", "grpc", "x" * 300], dtype=object)
    tensor = tg.InferInput("s", [len(words)], "BYTES")
    tensor.set_data_from_numpy(words)
    got = srv.client.infer("text", [tensor]).as_numpy("out")
    assert [b.decode() for b in got] == list(words)
    request = pb.ModelInferRequest(model_name="text")
    typed = request.inputs.add(name="s", datatype="BYTES", shape=[len(words)])
    typed.contents.bytes_contents.extend(w.encode() for w in words)
    response = _call(srv, request)
    (raw,) = response.raw_output_contents
    decoded, at = [], 0
    while at < len(raw):
        (n,) = struct.unpack_from("<I", raw, at)
        decoded.append(raw[at + 4 : at + 4 + n].decode())
        at += 4 + n
    assert decoded == list(words)


# ---------------------------------------------------------------------------- routing
def test_pinned_version(srv: GrpcServer, root: Path) -> None:
    x = np.random.default_rng(0).standard_normal((5, 20)).astype(np.float32)
    for version in ("1", "2", "3"):
        result = srv.client.infer("split", [_fp32_input(x)], model_version=version)
        assert result.get_response().model_version == version
        want = _session(root, "split", int(version)).run(["scores"], {"X": x})[0]
        assert np.array_equal(result.as_numpy("scores"), want)


@pytest.mark.slow
def test_canary_split_by_routing_key_equals_http(srv: GrpcServer) -> None:
    x = np.ones((1, 20), dtype=np.float32)
    body = orjson.dumps(
        {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 20], "data": [1.0] * 20}]}
    )
    by_grpc, by_http = [], []
    for i in range(40):
        key = f"customer-{i}"
        result = srv.client.infer("split", [_fp32_input(x)], headers={"mlserve-routing-key": key})
        by_grpc.append(result.get_response().model_version)
        http = _http(srv, "/v2/models/split/infer", body, **{"mlserve-routing-key": key})
        by_http.append(http.headers["mlserve-model-version"])
    assert by_grpc == by_http
    assert set(by_grpc) == {"1", "2"}, "a 50 % canary over 40 keys takes both versions"
    again = [  # sticky: the same keys, the same versions
        srv.client.infer(
            "split", [_fp32_input(x)], headers={"mlserve-routing-key": f"customer-{i}"}
        )
        .get_response()
        .model_version
        for i in range(10)
    ]
    assert again == by_grpc[:10]
    by_parameter = [  # the key as a request parameter instead of metadata
        srv.client.infer("split", [_fp32_input(x)], parameters={"routing_key": f"customer-{i}"})
        .get_response()
        .model_version
        for i in range(10)
    ]
    assert by_parameter == by_grpc[:10]


def test_shadow_gets_mirrored_copies(srv: GrpcServer) -> None:
    def mirrored() -> int:
        entry = _http(srv, "/v2/models/split/monitor").json()["versions"]["3"]
        return int(entry.get("shadow", {}).get("requests", 0))

    before = mirrored()
    x = np.zeros((2, 20), dtype=np.float32)
    for _ in range(5):
        srv.client.infer("split", [_fp32_input(x)])
    wait_for(lambda: mirrored() >= before + 5)


def test_requests_are_counted_as_http_ones(srv: GrpcServer) -> None:
    def count() -> float:
        return parse(_http(srv, "/metrics").text).value(
            "mlserve_requests_total",
            0.0,
            model="cancer",
            version="1",
            role="stable",
            outcome="success",
        )

    before = count()
    for _ in range(3):
        srv.client.infer("cancer", [_fp32_input(X[:1])])
    wait_for(lambda: count() == before + 3)


@pytest.mark.slow
def test_payload_log_and_drift_windows_see_grpc_requests(srv: GrpcServer, root: Path) -> None:
    def window_count() -> int:
        monitor = _http(srv, "/v2/models/cancer/versions/2/monitor").json()
        drift = monitor["versions"]["2"]["drift"]
        return int(drift["sections"]["inputs"]["features"][0]["window_count"]) if drift else 0

    def logged(rid: str) -> list[dict[str, Any]]:
        found = []
        for path in payload_dir(root).glob("payloads-*.jsonl"):
            found += [
                d for d in map(orjson.loads, path.read_bytes().splitlines()) if d["id"] == rid
            ]
        return found

    before = window_count()
    rows = X[10:17]
    result = srv.client.infer(
        "cancer",
        [_fp32_input(rows)],
        model_version="2",
        request_id="grpc-logged",
        parameters={"note": "n1"},
    )
    wait_for(lambda: window_count() == before + 7)
    wait_for(lambda: len(logged("grpc-logged")) == 1)
    (doc,) = logged("grpc-logged")
    assert doc["status"] == 200 and doc["version"] == "2" and doc["role"] == "pinned"
    assert doc["parameters"]["note"] == "n1"
    (x,) = doc["inputs"]
    assert (x["name"], x["datatype"], x["shape"]) == ("X", "FP32", [7, 30])
    assert np.array_equal(np.array(x["data"], np.float32), rows.ravel())
    outputs = {o["name"]: o for o in doc["outputs"]}
    assert outputs["label"]["data"] == result.as_numpy("label").tolist()
    request = pb.ModelInferRequest(
        model_name="cancer", id="grpc-short", raw_input_contents=[rows.tobytes()[:-4]]
    )
    request.inputs.add(name="X", datatype="FP32", shape=[7, 30])
    _refused(srv, request)
    wait_for(lambda: len(logged("grpc-short")) == 1)
    assert logged("grpc-short")[0]["status"] == 400


# ---------------------------------------------------------------------------- hostile input
def test_oversize_message_is_resource_exhausted(srv: GrpcServer) -> None:
    rows = np.zeros((MAX_BODY // 120 + 10, 30), dtype=np.float32)
    request = pb.ModelInferRequest(model_name="cancer", raw_input_contents=[rows.tobytes()])
    request.inputs.add(name="X", datatype="FP32", shape=list(rows.shape))
    error = _refused(srv, request)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(MAX_BODY) in (error.details() or "")
    _still_serving(srv)


def test_wrong_contents_type_for_the_datatype(srv: GrpcServer) -> None:
    request = pb.ModelInferRequest(model_name="cancer")
    tensor = request.inputs.add(name="X", datatype="FP32", shape=[1, 30])
    tensor.contents.int_contents.extend([1] * 30)
    error = _refused(srv, request)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (
        error.details() == "input 'X': datatype FP32 takes contents.fp32_contents, got int_contents"
    )
    request = pb.ModelInferRequest(model_name="split", model_version="1")
    tensor = request.inputs.add(name="X", datatype="FP16", shape=[1, 20])
    tensor.contents.fp32_contents.extend([1.0] * 20)
    error = _refused(srv, request)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "FP16 takes raw_input_contents only" in (error.details() or "")
    _still_serving(srv)


@pytest.mark.parametrize("delta", [-4, 4, -120])
def test_raw_sizes_that_lie_get_http_s_message(srv: GrpcServer, delta: int) -> None:
    rows = X[:2]
    blob = rows.tobytes()
    blob = blob[:delta] if delta < 0 else blob + b"\0" * delta
    request = pb.ModelInferRequest(model_name="cancer", raw_input_contents=[blob])
    request.inputs.add(name="X", datatype="FP32", shape=[2, 30])
    error = _refused(srv, request)
    header = {
        "inputs": [
            {
                "name": "X",
                "datatype": "FP32",
                "shape": [2, 30],
                "parameters": {"binary_data_size": len(blob)},
            }
        ]
    }
    http = _http(srv, "/v2/models/cancer/infer", *_binary_body(header, blob)[:1],
                 **_binary_body(header, blob)[1])  # fmt: skip
    assert http.status_code == 400
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == http.json()["error"]
    _still_serving(srv)


def test_mixing_raw_and_typed_contents(srv: GrpcServer) -> None:
    request = pb.ModelInferRequest(model_name="cancer", raw_input_contents=[X[:1].tobytes()])
    tensor = request.inputs.add(name="X", datatype="FP32", shape=[1, 30])
    tensor.contents.fp32_contents.extend(X[0].tolist())
    error = _refused(srv, request)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "input 'X' has typed contents in a request with raw_input_contents: send every input "
        "raw, or every input typed"
    )
    _still_serving(srv)


def test_more_raw_contents_than_inputs(srv: GrpcServer) -> None:
    blob = X[:1].tobytes()
    request = pb.ModelInferRequest(model_name="cancer", raw_input_contents=[blob, blob])
    request.inputs.add(name="X", datatype="FP32", shape=[1, 30])
    error = _refused(srv, request)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "the request has 2 raw_input_contents for 1 inputs: send one per input, in the "
        "inputs' order"
    )
    _still_serving(srv)


def test_row_and_element_limits_as_http(srv: GrpcServer) -> None:
    shape = [1, 1 << 40]
    request = pb.ModelInferRequest(model_name="cancer", raw_input_contents=[b""])
    request.inputs.add(name="X", datatype="FP32", shape=shape)
    error = _refused(srv, request)
    header = {
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": 0}}
        ]
    }
    body, headers = _binary_body(header, b"")
    http = _http(srv, "/v2/models/cancer/infer", body, **headers)
    assert http.status_code == 400 and error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == http.json()["error"]
    _still_serving(srv)


# ---------------------------------------------------------------------------- amplification
def _entries(field: int, entry: bytes, count: int) -> bytes:
    """``count`` copies of one length-delimited entry of top-level ``field``, on the wire."""
    return (_key(field) + _varint(len(entry)) + entry) * count


def _key(field: int) -> bytes:
    return _varint(field << 3 | 2)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _amplifying_messages() -> dict[str, tuple[bytes, str]]:
    """Cheap to send, costly to parse (an object per entry): each shape and the limit its
    refusal must name."""
    head = pb.ModelInferRequest(model_name="cancer").SerializeToString()
    one = pb.ModelInferRequest(model_name="cancer")
    one.inputs.add(name="X", datatype="FP32", shape=[1, 30]).contents.fp32_contents.extend(
        X[0].tolist()
    )
    valid = one.SerializeToString()
    tensor = pb.ModelInferRequest.InferInputTensor(name="i", datatype="FP32", shape=[1])
    parameter = pb.ModelInferRequest.ParametersEntry(
        key="p", value=pb.InferParameter(int64_param=1)
    )
    output = pb.ModelInferRequest.InferRequestedOutputTensor(name="o")
    typed = pb.ModelInferRequest(model_name="cancer")
    typed.inputs.add(name="X", datatype="FP32", shape=[100_000, 30]).contents.fp32_contents.extend(
        np.zeros(3_000_000, np.float32)
    )
    return {
        "inputs": (head + _entries(5, tensor.SerializeToString(), 1_000_000), "inputs"),
        "parameters": (
            valid + _entries(4, parameter.SerializeToString(), 800_000),
            "limit of 64 request parameters",
        ),
        "outputs": (valid + _entries(6, output.SerializeToString(), 1_500_000), "outputs"),
        "raw": (head + _entries(7, b"", 4_000_000), "raw_input_contents"),
        "typed": (typed.SerializeToString(), "more than the 1000000 an input may hold"),
    }


@pytest.mark.slow
def test_amplifying_messages_are_refused_before_parsing_and_the_loop_stays_live(
    root: Path,
) -> None:
    """A million tiny inputs, parameters, outputs or raw contents (a 19 MiB ModelInfer with
    a million inputs held the loop 3.9 s and took ~1 GB), or more typed elements than an
    input may hold: refused RESOURCE_EXHAUSTED naming the limit, in well under a second,
    while ServerLive on another channel keeps answering within 100 ms."""
    messages = _amplifying_messages()
    with serving(root, "--max-body-bytes", str(64 << 20), "--max-elements", "1000000") as server:
        call = server.channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=None,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        probe_channel = grpc.insecure_channel(server.target)
        probe = service_pb2_grpc.GRPCInferenceServiceStub(probe_channel)
        try:
            for shape, (message, limit) in messages.items():
                worst, stop = [0.0], threading.Event()

                def watch(worst: list[float] = worst, stop: threading.Event = stop) -> None:
                    while not stop.is_set():
                        start = time.perf_counter()
                        probe.ServerLive(pb.ServerLiveRequest(), timeout=10)
                        worst[0] = max(worst[0], time.perf_counter() - start)
                        time.sleep(0.005)

                watcher = threading.Thread(target=watch)
                watcher.start()
                time.sleep(0.05)
                start = time.perf_counter()
                with pytest.raises(grpc.RpcError) as raised:
                    call(message, timeout=30)
                took = time.perf_counter() - start
                time.sleep(0.05)
                stop.set()
                watcher.join()
                error = raised.value
                assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, (shape, error.details())
                assert limit in error.details(), (shape, error.details())
                assert took < 1.0, (shape, took)
                assert worst[0] < 0.1, (shape, worst[0])
            rows = X[:2]
            answer = server.client.infer("cancer", [_fp32_input(rows)])
            assert answer.as_numpy("label") is not None
        finally:
            probe_channel.close()


def test_large_typed_contents_equal_onnxruntime(srv: GrpcServer, root: Path) -> None:
    """Typed FP32 contents past the off-loop size (parsed and mapped in a thread, their
    packed bytes taken as the binary form) answer as onnxruntime does."""
    rows = np.tile(X, (8, 1))[:4000]
    request = pb.ModelInferRequest(model_name="cancer")
    tensor = request.inputs.add(name="X", datatype="FP32", shape=list(rows.shape))
    tensor.contents.fp32_contents.extend(rows.ravel())
    assert request.ByteSize() > 384 * 1024
    response = _call(srv, request)
    session = _session(root, "cancer", 1)
    for out, raw, want in zip(
        response.outputs,
        response.raw_output_contents,
        session.run([o.name for o in response.outputs], {"X": rows}),
        strict=True,
    ):
        got = np.frombuffer(raw, dtype=want.dtype).reshape(list(out.shape))
        assert np.array_equal(got, want), out.name


# ---------------------------------------------------------------------------- the status table
def test_every_error_class_has_its_status_code() -> None:
    classes: list[type[errors.MLServeError]] = [errors.MLServeError]
    for cls in classes:
        classes.extend(cls.__subclasses__())
    for cls in classes:
        assert cls.status_code in CODES, cls
    expected = {
        errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
        errors.ModelNotFound: grpc.StatusCode.NOT_FOUND,
        errors.VersionNotFound: grpc.StatusCode.NOT_FOUND,
        errors.GateNotPassed: grpc.StatusCode.FAILED_PRECONDITION,
        errors.NotExplainable: grpc.StatusCode.FAILED_PRECONDITION,
        errors.PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
        errors.RequestTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
        errors.Overloaded: grpc.StatusCode.UNAVAILABLE,
        errors.ModelNotReady: grpc.StatusCode.UNAVAILABLE,
        errors.ServerNotReady: grpc.StatusCode.UNAVAILABLE,
        errors.InferenceFailed: grpc.StatusCode.INTERNAL,
        errors.MLServeError: grpc.StatusCode.INTERNAL,
    }
    for cls, code in expected.items():
        got, message, metadata = grpc_status(cls("why"))  # type: ignore[call-arg]
        assert (got, message) == (code, "why"), cls
        assert ("mlserve-error-code", cls.code) in metadata


def test_unavailable_carries_retry_info_and_bugs_are_internal(caplog: Any) -> None:
    code, message, metadata = grpc_status(errors.Overloaded("server overloaded"))
    assert code is grpc.StatusCode.UNAVAILABLE
    details = dict(metadata)[STATUS_DETAILS_KEY]
    assert isinstance(details, bytes)
    # Decoded with protobuf's own well-known types: google.rpc.Status is code = 1,
    # message = 2, details = 3 (google.protobuf.Any); RetryInfo.retry_delay = 1 (Duration).
    from google.protobuf import any_pb2, duration_pb2
    from google.protobuf.internal.decoder import _DecodeVarint

    fields = _fields(details)
    assert fields[1] == [14] and fields[2] == [b"server overloaded"]
    (detail,) = fields[3]
    packed = any_pb2.Any.FromString(detail)
    assert packed.type_url == RETRY_INFO_TYPE
    (delay,) = _fields(packed.value)[1]
    assert duration_pb2.Duration.FromString(delay).seconds == 1
    assert _DecodeVarint  # the decoder used by _fields
    code, message, _ = grpc_status(RuntimeError("/secret/path exploded"))
    assert (code, message) == (grpc.StatusCode.INTERNAL, "internal server error")
    # A failed load is UNAVAILABLE with no advice to retry, as HTTP sends no Retry-After.
    failed = errors.ModelNotReady("m version 2 failed to load: bad", retry=False)
    code, _, metadata = grpc_status(failed)
    assert code is grpc.StatusCode.UNAVAILABLE and STATUS_DETAILS_KEY not in dict(metadata)
    assert ("mlserve-error-code", "model_not_ready") in metadata


def _fields(data: bytes) -> dict[int, list[Any]]:
    """A protobuf message's fields by number (varints and length-delimited only)."""
    from google.protobuf.internal.decoder import _DecodeVarint

    out: dict[int, list[Any]] = {}
    at = 0
    while at < len(data):
        key, at = _DecodeVarint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _DecodeVarint(data, at)
        else:
            assert wire == 2
            size, at = _DecodeVarint(data, at)
            value, at = data[at : at + size], at + size
        out.setdefault(number, []).append(value)
    return out


# ---------------------------------------------------------------------------- processes
def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                found.add(link[8:-1])
    return found


@pytest.mark.slow
def test_two_workers_both_serve_grpc(root: Path) -> None:
    port = free_port()
    with running_server(root, "--workers", "2", "--grpc-port", str(port)) as proc:
        server = GrpcServer(proc, port)
        try:
            wait_for(lambda: _ready(server), timeout=60)
            children = [
                int(p)
                for p in Path(f"/proc/{proc.proc.pid}/task/{proc.proc.pid}/children")
                .read_text()
                .split()
            ]
            listening = _listening_inodes(port)
            holders = [pid for pid in children if _socket_inodes(pid) & listening]
            assert len(holders) == 2, (children, holders)
            for i in range(20):  # new connections, spread by the kernel over both workers
                client = tg.InferenceServerClient(server.target)
                try:
                    result = client.infer("cancer", [_fp32_input(X[i : i + 1])])
                    assert result.as_numpy("label").shape == (1,)
                finally:
                    client.close()
        finally:
            server.close()


@pytest.mark.slow
def test_sigterm_drains_grpc_in_flight_and_exits_zero(root: Path) -> None:
    port = free_port()
    with running_server(root, "--grpc-port", str(port)) as proc:
        server = GrpcServer(proc, port)
        wait_for(lambda: _ready(server))
        results: list[Any] = []
        answered: list[float] = []

        def slow() -> None:
            request = pb.ModelInferRequest(model_name="slow")
            x = request.inputs.add(name="x", datatype="FP32", shape=[1])
            x.contents.fp32_contents.append(1e-3)
            size = request.inputs.add(name="size", datatype="INT64", shape=[2])
            size.contents.int64_contents.extend([3500, 3500])
            try:
                results.append(server.stub.ModelInfer(request, timeout=60))
            except grpc.RpcError as exc:
                results.append(exc)
            answered.append(time.monotonic())

        worker = threading.Thread(target=slow)
        worker.start()
        wait_for(lambda: _pending(server, "slow") >= 1, timeout=30)  # its model is running
        proc.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: not _ready(server), timeout=5)
        with pytest.raises(tg.InferenceServerException) as refused:  # no new RPCs now
            server.client.infer("cancer", [_fp32_input(X[:1])])
        assert refused.value.status() == "StatusCode.UNAVAILABLE"
        refused_at = time.monotonic()
        worker.join(60)
        server.close()
        assert proc.proc.wait(60) == 0
        (answer,) = results
        assert not isinstance(answer, grpc.RpcError), answer
        assert answer.model_name == "slow" and len(answer.raw_output_contents) == 1
        assert refused_at < answered[0], "the slow request ended before the drain began"


@pytest.mark.slow
def test_benchmark_smoke(tmp_path: Path) -> None:
    """benchmarks/grpc_bench.py runs end to end (its answers checked equal across encodings)."""
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    args = ["--duration", "0.3", "--rounds", "1", "--concurrency", "2", "--batch", "1,50"]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.grpc_bench", *args, "--out", str(out)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = orjson.loads(out.read_bytes())["rows"]
    assert {(r["encoding"], r["batch"]) for r in rows} == {
        (e, b) for e in ("http-json", "http-binary", "grpc", "grpc-floor") for b in (1, 50)
    }
    assert all(r["requests"] > 0 for r in rows)


def _refused_start(root: Path, port: int) -> None:
    """A server started on gRPC ``port`` exits 3 before any worker, saying so in one line."""
    for workers in ("1", "2"):
        proc = ServerProcess(root, "--grpc-port", str(port), "--workers", workers)
        try:
            assert proc.proc.wait(60) == 3
            log = proc.log()
            want = (
                f"gRPC cannot listen on 127.0.0.1:{port}: Address already in use; stop what "
                "listens there or choose another --grpc-port"
            )
            assert want in log, log
            assert "Traceback" not in log and "loaded" not in log, log
        finally:
            proc.stop()


@pytest.mark.slow
def test_a_grpc_port_in_use_stops_the_start_and_says_which(root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        _refused_start(root, taken.getsockname()[1])


@pytest.mark.slow
def test_a_second_server_cannot_share_the_grpc_port(srv: GrpcServer, root: Path) -> None:
    """Workers share the gRPC port through SO_REUSEPORT; another server (another process
    listening with SO_REUSEPORT, as this one does) is refused instead of silently taking
    part of the connections."""
    port = int(srv.target.rsplit(":", 1)[1])
    _refused_start(root, port)
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        _refused_start(root, other.getsockname()[1])
    assert srv.client.is_server_live()


@pytest.mark.slow
def test_load_shedding_answers_unavailable_with_retry_info(tmp_path: Path) -> None:
    """A model that holds the event loop makes it late; the excess gets UNAVAILABLE with
    HTTP's overload message naming the lateness that made it shed, a RetryInfo and the error
    code, counted as a rejection."""
    import asyncio

    registry = tmp_path / "registry"
    write_version(registry, "heavy", 1, matmul_model(fixed=1000))
    (registry / "heavy" / "model.toml").write_text('[execution]\nmode = "inline"\n')
    request = pb.ModelInferRequest(model_name="heavy")
    request.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(1e-3)
    refusals: list[grpc.aio.AioRpcError] = []
    answered = 0

    async def load(target: str) -> None:
        nonlocal answered
        async with grpc.aio.insecure_channel(target) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            deadline = time.monotonic() + 20

            async def caller() -> None:
                nonlocal answered
                while not refusals and time.monotonic() < deadline:
                    try:
                        await stub.ModelInfer(request, timeout=30)
                        answered += 1
                    except grpc.aio.AioRpcError as exc:
                        refusals.append(exc)

            await asyncio.gather(*(caller() for _ in range(8)))

    with serving(registry, "--overload-delay-ms", "10") as server:
        asyncio.run(load(server.target))
        assert refusals, f"nothing was shed in 20 s ({answered} answered)"
        error = refusals[0]
        assert error.code() is grpc.StatusCode.UNAVAILABLE, error
        late = re.fullmatch(
            r"server overloaded: the event loop is running up to (\d+) ms late; retry later",
            error.details() or "",
        )
        # The lateness that made it shed (beyond the 10 ms limit), not the last check's: the
        # loop may be on time again while the share decays ("0 ms late" before).
        assert late is not None and int(late[1]) > 10, error.details()
        trailing = dict(error.trailing_metadata() or ())
        assert trailing["mlserve-error-code"] == "overloaded"
        fields = _fields(trailing[STATUS_DETAILS_KEY])
        (packed,) = fields[3]
        assert _fields(packed)[1] == [RETRY_INFO_TYPE.encode()]
        text = _http(server, "/metrics").text
        assert re.search(
            r'^mlserve_requests_total\{model="heavy",version="1",role="stable",'
            r'outcome="rejected"\} [1-9]',
            text,
            re.M,
        ), "the shed request is counted as a rejection"

        def served() -> bool:  # and it serves again once the load is gone
            try:
                return bool(server.stub.ModelInfer(request, timeout=30).model_name == "heavy")
            except grpc.RpcError as exc:
                assert exc.code() is grpc.StatusCode.UNAVAILABLE, exc
                return False

        wait_for(served)


def test_the_outline_counts_what_protobuf_parses() -> None:
    """The compiled outline and its pure twin against protobuf's own parse, over messages
    with every field, unknown fields, and bytes that are no message."""
    from mlserve.grpc.wire import COMPILED, _twin, outline

    twin = _twin()
    rng = np.random.default_rng(0)
    for trial in range(40):
        request = pb.ModelInferRequest(
            model_name="m" * int(rng.integers(0, 300)), model_version=str(trial), id="i"
        )
        for i in range(int(rng.integers(0, 5))):
            request.parameters[f"p{i}"].string_param = "v" * int(rng.integers(0, 200))
        for i in range(int(rng.integers(0, 5))):
            tensor = request.inputs.add(name=f"x{i}", datatype="FP32", shape=[2])
            tensor.contents.fp32_contents.extend([1.0, 2.0])
        for i in range(int(rng.integers(0, 3))):
            request.outputs.add(name=f"o{i}")
        request.raw_input_contents.extend(
            [b"r" * int(rng.integers(0, 200))] * int(rng.integers(0, 3))
        )
        data = request.SerializeToString() + (b"\x48\x96\x01\x55abcd" if trial % 2 else b"")
        parsed = pb.ModelInferRequest.FromString(data)
        want = (
            parsed.model_name,
            parsed.model_version,
            len(parsed.parameters),
            len(parsed.inputs),
            len(parsed.outputs),
            len(parsed.raw_input_contents),
        )
        assert tuple(outline(data) or ()) == want
        assert tuple(twin(data) or ()) == want
        for bad in (data[: len(data) - 1], b"\x0a\xff\xff\xff\xff\x0f", b"\x0f"):
            if bad:
                with pytest.raises(DecodeError):
                    pb.ModelInferRequest.FromString(bad)
                assert outline(bad) is None and twin(bad) is None
    assert COMPILED  # the build compiles the kernel; the twin is what runs without one


def test_model_config_and_statistics_equal_http_s_in_triton_s_messages(srv: GrpcServer) -> None:
    """tritonclient's get_model_config and get_inference_statistics, decoded with Triton's
    own descriptors, equal HTTP's /config and /stats read into the same messages; unknown
    models are NOT_FOUND with HTTP's message."""
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    x = X[:3]
    srv.client.infer("cancer", [_fp32_input(x)])  # statistics with something in them
    for model, version, path in (("cancer", "", "cancer"), ("split", "2", "split/versions/2")):
        http = _http(srv, f"/v2/models/{path}/config")
        assert http.status_code == 200
        want = json_format.ParseDict(http.json(), model_config_pb2.ModelConfig())
        got = srv.client.get_model_config(model, version).config
        assert got == want, (got, want)
        assert got.input[0].data_type == model_config_pb2.TYPE_FP32 and got.input[0].dims
    for model, version, path in (
        ("cancer", "", "cancer"),
        ("", "", ""),
        ("split", "3", "split/versions/3"),
    ):
        http = _http(srv, f"/v2/models/{path}/stats".replace("//", "/"))
        assert http.status_code == 200
        want = json_format.ParseDict(http.json(), pb.ModelStatisticsResponse())
        got = srv.client.get_inference_statistics(model, version)
        assert got == want, (got, want)
        assert len(got.model_stats) >= 1
    cancer = srv.client.get_inference_statistics("cancer").model_stats
    assert sum(s.inference_stats.success.count for s in cancer) >= 1
    for call in (srv.client.get_model_config, srv.client.get_inference_statistics):
        with pytest.raises(tg.InferenceServerException) as info:
            call("nope")
        assert info.value.status() == "StatusCode.NOT_FOUND"
        assert info.value.message() == _http(srv, "/v2/models/nope/config").json()["error"]


# ---------------------------------------------------------------------------- grpc.health.v1
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
# HealthCheckResponse's bytes by hand (field 1, varint): independent of our descriptors.
SERVING_BYTES, NOT_SERVING_BYTES, SERVICE_UNKNOWN_BYTES = b"\x08\x01", b"\x08\x02", b"\x08\x03"


def _health_request(service: str) -> bytes:
    """HealthCheckRequest{service} by hand: field 1, length-delimited (empty when "")."""
    name = service.encode()
    return _key(1) + _varint(len(name)) + name if name else b""


def _raw_check(channel: grpc.Channel, service: str) -> bytes:
    check = channel.unary_unary(HEALTH_CHECK)  # bytes in, bytes out
    return bytes(check(_health_request(service), timeout=10))


def _raw_watch(channel: grpc.Channel, service: str, timeout: float = 60) -> Any:
    return channel.unary_stream(HEALTH_WATCH)(_health_request(service), timeout=timeout)


def test_health_check_is_serving_and_an_unknown_service_is_not_found(srv: GrpcServer) -> None:
    """Check, with grpcio's channel and our messages, and again with hand-made bytes: the
    server and the inference service are SERVING when HTTP says ready; any other name is
    NOT_FOUND naming it and the two known names."""
    from mlserve.grpc import health

    check = srv.channel.unary_unary(
        HEALTH_CHECK,
        request_serializer=health.HealthCheckRequest.SerializeToString,
        response_deserializer=health.HealthCheckResponse.FromString,
    )
    assert _http(srv, "/v2/health/ready").status_code == 200
    assert srv.client.is_server_ready()
    for service in ("", "inference.GRPCInferenceService"):
        answer = check(health.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health.HealthCheckResponse.SERVING == 1, service
        raw = _raw_check(srv.channel, service)
        assert raw == SERVING_BYTES and _fields(raw) == {1: [1]}, (service, raw)
    for unknown in ("nope", "inference.GRPCInferenceServic", "grpc.health.v1.Health"):
        with pytest.raises(grpc.RpcError) as info:
            check(health.HealthCheckRequest(service=unknown), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, unknown
        details = info.value.details() or ""
        assert repr(unknown) in details and "'inference.GRPCInferenceService'" in details
        assert "''" in details, details
        with pytest.raises(grpc.RpcError) as info:
            _raw_check(srv.channel, unknown)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    _still_serving(srv)


@pytest.mark.parametrize(
    ("method", "message", "stream"),
    [
        (HEALTH_CHECK, "grpc.health.v1.HealthCheckRequest", False),
        (HEALTH_WATCH, "grpc.health.v1.HealthCheckRequest", True),
        ("/inference.GRPCInferenceService/ServerLive", "inference.ServerLiveRequest", False),
        ("/inference.GRPCInferenceService/ModelReady", "inference.ModelReadyRequest", False),
        ("/inference.GRPCInferenceService/ModelConfig", "inference.ModelConfigRequest", False),
        ("/inference.GRPCInferenceService/ModelInfer", "inference.ModelInferRequest", False),
    ],
)
def test_bytes_that_are_not_the_request_message_are_invalid_argument(
    srv: GrpcServer, method: str, message: str, stream: bool
) -> None:
    """grpc.aio answers a deserializer's exception UNKNOWN and logs a traceback: a client's
    garbage is its own error, INVALID_ARGUMENT naming the message, and nothing is logged."""
    garbage = b"\x0a\xff\xff\xff\xff\x0f"  # field 1, length-delimited, a length past the end
    before = srv.proc.log()
    with pytest.raises(grpc.RpcError) as info:
        if stream:
            list(srv.channel.unary_stream(method)(garbage, timeout=10))
        else:
            srv.channel.unary_unary(method)(garbage, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
    assert f"the message is not a valid {message}" in (info.value.details() or "")
    trailing = dict(info.value.trailing_metadata() or ())
    assert trailing.get("mlserve-error-code") == "invalid_input"
    _still_serving(srv)
    logged = srv.proc.log()[len(before) :]
    assert "Traceback" not in logged and "deserializ" not in logged.lower(), logged


def test_health_watch_sends_the_status_at_once(srv: GrpcServer) -> None:
    """Watch's first message is the current status (SERVING), without waiting for a change;
    an unknown service streams SERVICE_UNKNOWN (the protocol's answer) instead of failing."""
    from mlserve.grpc import health

    watch = srv.channel.unary_stream(
        HEALTH_WATCH,
        request_serializer=health.HealthCheckRequest.SerializeToString,
        response_deserializer=health.HealthCheckResponse.FromString,
    )
    for service in ("", "inference.GRPCInferenceService"):
        stream = watch(health.HealthCheckRequest(service=service), timeout=30)
        start = time.monotonic()
        first = next(stream)
        assert first.status == health.HealthCheckResponse.SERVING, service
        assert time.monotonic() - start < 5
        stream.cancel()
    for service, want in (("", SERVING_BYTES), ("nope", SERVICE_UNKNOWN_BYTES)):
        stream = _raw_watch(srv.channel, service, timeout=30)
        assert next(stream) == want, service
        stream.cancel()
    _still_serving(srv)


@pytest.mark.slow
def test_health_is_not_serving_while_the_server_is_not_ready(tmp_path: Path) -> None:
    """A server whose one model never arrives (KServe's --model_name over an empty
    directory) is live, not ready: Check and Watch say NOT_SERVING, as ServerReady says
    false and HTTP's readiness 503."""
    empty = tmp_path / "empty"
    empty.mkdir()
    port = free_port()
    proc = ServerProcess(
        tmp_path / "unused", "--model_name=m1", f"--model_dir={empty}", f"--grpc_port={port}"
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    client = tg.InferenceServerClient(f"127.0.0.1:{port}")
    try:

        def live() -> bool:
            try:
                return bool(client.is_server_live())
            except tg.InferenceServerException:
                return False

        wait_for(live, timeout=60)
        time.sleep(1)  # the initial load of nothing has long finished
        assert httpx.get(proc.url + "/v2/health/ready", timeout=10).status_code == 503
        assert client.is_server_ready() is False
        for service in ("", "inference.GRPCInferenceService"):
            assert _raw_check(channel, service) == NOT_SERVING_BYTES, service
            stream = _raw_watch(channel, service, timeout=30)
            assert next(stream) == NOT_SERVING_BYTES
            stream.cancel()
    finally:
        client.close()
        channel.close()
        assert proc.stop() == 0, proc.log()


@pytest.mark.slow
def test_health_watch_says_not_serving_when_the_drain_begins(root: Path) -> None:
    """SIGTERM while a slow request runs: an open Watch gets NOT_SERVING while the request is
    still being drained, then its stream ends (OK) at once instead of holding the drain; new
    calls, a Check too, are refused (the server takes no new RPCs: a probe fails); the slow
    request still gets its answer and the process exits 0."""
    port = free_port()
    with running_server(root, "--grpc-port", str(port)) as proc:
        server = GrpcServer(proc, port)
        wait_for(lambda: _ready(server))
        results: list[Any] = []

        def slow() -> None:
            request = pb.ModelInferRequest(model_name="slow")
            x = request.inputs.add(name="x", datatype="FP32", shape=[1])
            x.contents.fp32_contents.append(1e-3)
            size = request.inputs.add(name="size", datatype="INT64", shape=[2])
            size.contents.int64_contents.extend([3500, 3500])
            try:
                results.append(server.stub.ModelInfer(request, timeout=60))
            except grpc.RpcError as exc:
                results.append(exc)

        stream = _raw_watch(server.channel, "")
        assert next(stream) == SERVING_BYTES
        worker = threading.Thread(target=slow)
        worker.start()
        wait_for(lambda: _pending(server, "slow") >= 1, timeout=30)  # its model is running
        proc.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert next(stream) == NOT_SERVING_BYTES
        draining = not results  # the slow request was still running then
        with pytest.raises(StopIteration):  # the stream ends, not held for the drain
            next(stream)
        assert stream.code() == grpc.StatusCode.OK
        assert time.monotonic() - signalled < 5
        with pytest.raises(grpc.RpcError) as refused:
            _raw_check(server.channel, "")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        worker.join(60)
        server.close()
        assert proc.proc.wait(60) == 0
        (answer,) = results
        assert not isinstance(answer, grpc.RpcError), answer
        assert draining, "the slow request ended before NOT_SERVING came"


_OTHER_HEALTH_PB2 = '''
import sys
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.internal import api_implementation, builder

def official():
    """What grpcio-health-checking's health_pb2 does: its file (with options ours lacks) in
    the default pool, its classes built and registered by protobuf's builder."""
    fdp = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(
        name="grpc/health/v1/health.proto", package="grpc.health.v1", syntax="proto3"
    )
    f.options.java_package = "io.grpc.health.v1"
    f.message_type.add(name="HealthCheckRequest").field.add(
        name="service", number=1, label=fdp.LABEL_OPTIONAL, type=fdp.TYPE_STRING
    )
    response = f.message_type.add(name="HealthCheckResponse")
    status = response.enum_type.add(name="ServingStatus")
    for number, name in enumerate(("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")):
        status.value.add(name=name, number=number)
    response.field.add(
        name="status", number=1, label=fdp.LABEL_OPTIONAL, type=fdp.TYPE_ENUM,
        type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus",
    )
    file = descriptor_pool.Default().AddSerializedFile(f.SerializeToString())
    built = {}
    builder.BuildMessageAndEnumDescriptors(file, built)
    builder.BuildTopDescriptorsAndMessages(file, "grpc_health.v1.health_pb2", built)
    return file, built

if sys.argv[1] == "ours-first":
    from mlserve.grpc import health
    file, built = official()
else:
    file, built = official()
    from mlserve.grpc import health
assert file.pool is descriptor_pool.Default(), "theirs is not in the default pool"
assert file.GetOptions().java_package == "io.grpc.health.v1", "theirs is our file"
assert built["HealthCheckResponse"].DESCRIPTOR.file is file
assert health.HealthCheckResponse.DESCRIPTOR.file is health.DESCRIPTOR
assert health.DESCRIPTOR.pool is health.POOL
ours = health.HealthCheckResponse(status=2).SerializeToString()
assert built["HealthCheckResponse"].FromString(ours).status == 2
print(api_implementation.Type())
'''


@pytest.mark.parametrize("implementation", ["upb", "python"])
@pytest.mark.slow
def test_health_messages_do_not_collide_with_grpcio_health_checking(implementation: str) -> None:
    """grpcio-health-checking's grpc.health.v1 (its health_pb2, re-enacted: it is not a
    dependency) and ours live in one process, imported in either order, with protobuf's
    default (upb) and its pure-Python implementation: each keeps its own file and classes."""
    import subprocess
    import sys

    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": implementation}
    for order in ("ours-first", "theirs-first"):
        out = subprocess.run(
            [sys.executable, "-W", "error", "-c", _OTHER_HEALTH_PB2, order],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, (order, out.stderr[-3000:])
        assert out.stdout.split() == [implementation], out.stdout


def test_triton_extensions_not_served_are_refused_as_over_http(srv: GrpcServer) -> None:
    """tritonclient.grpc's class_count and shared-memory inputs: INVALID_ARGUMENT with
    HTTP's message, never answered as if they had not been asked."""
    top = tg.InferRequestedOutput("probabilities", class_count=1)
    with pytest.raises(tg.InferenceServerException) as info:
        srv.client.infer("cancer", [_fp32_input(X[:2])], outputs=[top])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "output 'probabilities': parameters.classification" in info.value.message()
    shm = tg.InferInput("X", [2, X.shape[1]], "FP32")
    shm.set_shared_memory("region0", X[:2].nbytes)
    with pytest.raises(tg.InferenceServerException) as info:
        srv.client.infer("cancer", [shm])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input 'X': shared memory" in info.value.message()
    _still_serving(srv)
