"""Spans leave a real server process over OTLP/HTTP, configured by the standard variables.

The test runs its own OTLP/HTTP receiver on loopback (``POST /v1/traces``), decodes each
export with the OTLP protobuf messages (``opentelemetry-proto``), and checks that a request
sent over HTTP and one sent over gRPC, each with a ``traceparent``, arrive as server spans of
that trace, children of that parent, with the run's span in the same trace.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc as tg
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from .conftest import free_port, linear_model, running_server, wait_for, write_version

HTTP_TRACE = "0af7651916cd43dd8448eb211c80319c"
GRPC_TRACE = "1bf7651916cd43dd8448eb211c80319d"
PARENT = "b7ad6b7169203331"


class Receiver:
    """An OTLP/HTTP trace receiver: every span it was sent, with its resource."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Any]] = []  # (resource attributes, span)
        self.paths: list[str] = []
        lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                export = ExportTraceServiceRequest.FromString(data)
                with lock:
                    owner.paths.append(self.path)
                    for rs in export.resource_spans:
                        resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            owner.spans.extend((resource, s) for s in ss.spans)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def of_trace(self, trace_id: str) -> list[tuple[dict[str, Any], Any]]:
        return [(r, s) for r, s in list(self.spans) if s.trace_id.hex() == trace_id]


def _value(v: Any) -> Any:
    return getattr(v, v.WhichOneof("value"))


@contextlib.contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def test_spans_arrive_over_otlp_http_from_http_and_grpc_requests(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    write_version(root, "m", 1, linear_model(seed=1))
    x = np.random.default_rng(0).standard_normal((2, 20)).astype(np.float32)
    grpc_port = free_port()
    with receiving() as receiver:
        env = {
            # No --tracing: the standard variables alone turn it on (auto).
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_SERVICE_NAME": "fraud-scoring",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        with running_server(root, "--grpc-port", str(grpc_port), env=env) as srv:
            r = httpx.post(
                srv.url + "/v2/models/m/infer",
                json={
                    "inputs": [
                        {
                            "name": "X",
                            "datatype": "FP32",
                            "shape": [2, 20],
                            "data": x.ravel().tolist(),
                        }
                    ]
                },
                headers={"traceparent": f"00-{HTTP_TRACE}-{PARENT}-01"},
            )
            assert r.status_code == 200
            tensor = tg.InferInput("X", [2, 20], "FP32")
            tensor.set_data_from_numpy(x)
            with tg.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
                client.infer("m", [tensor], headers={"traceparent": f"00-{GRPC_TRACE}-{PARENT}-01"})
            wait_for(lambda: len(receiver.of_trace(GRPC_TRACE)) >= 2, timeout=20)
            wait_for(lambda: len(receiver.of_trace(HTTP_TRACE)) >= 2, timeout=20)
    assert set(receiver.paths) == {"/v1/traces"}

    spans = receiver.of_trace(HTTP_TRACE)
    servers = [s for _, s in spans if s.kind == s.SPAN_KIND_SERVER]
    assert len(servers) == 1
    req = servers[0]
    assert req.name == "POST /v2/models/{model}/infer"
    assert req.parent_span_id.hex() == PARENT
    attributes = {a.key: _value(a.value) for a in req.attributes}
    assert attributes["http.response.status_code"] == 200
    assert attributes["mlserve.model"] == "m" and attributes["mlserve.model.version"] == "1"
    assert attributes["mlserve.route"] == "stable"
    run = [s for _, s in spans if s.name == "session.run"]
    assert len(run) == 1 and run[0].parent_span_id == req.span_id
    resource = spans[0][0]
    assert resource["service.name"] == "fraud-scoring"

    spans = receiver.of_trace(GRPC_TRACE)
    req = next(s for _, s in spans if s.kind == s.SPAN_KIND_SERVER)
    assert req.name == "inference.GRPCInferenceService/ModelInfer"
    assert req.parent_span_id.hex() == PARENT
    attributes = {a.key: _value(a.value) for a in req.attributes}
    assert attributes["rpc.system"] == "grpc" and attributes["rpc.grpc.status_code"] == 0
    assert attributes["mlserve.model.version"] == "1"
    assert [s.name for _, s in spans if s.parent_span_id == req.span_id] == ["session.run"]
