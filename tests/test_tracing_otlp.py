"""Spans leave a real server process over OTLP/HTTP, configured by the standard variables.

The test runs its own OTLP/HTTP receiver on loopback (``POST /v1/traces``), decodes each
export with the OTLP protobuf messages (``opentelemetry-proto``), and checks that a request
sent over HTTP and one sent over gRPC, each with a ``traceparent``, arrive as server spans of
that trace, children of that parent, with the run's span in the same trace.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from .conftest import (
    ServerProcess,
    free_port,
    linear_model,
    running_server,
    wait_for,
    write_version,
)

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


@pytest.mark.slow
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


def _infer_some(url: str, count: int) -> None:
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 20], "data": [0.5] * 20}]}
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(count):
            assert client.post("/v2/models/m/infer", json=body).status_code == 200


@contextlib.contextmanager
def _unreachable(kind: str) -> Iterator[str]:
    """A collector address that refuses connections, or one that accepts them (the kernel's
    backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        if kind == "silent":
            sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("kind", ["refused", "silent"])
@pytest.mark.slow
def test_an_unreachable_collector_does_not_hold_the_stop(tmp_path: Path, kind: str) -> None:
    """With spans buffered and the exporter retrying (refused: backoff; silent: a request in
    flight until its 10 s timeout), SIGTERM stops an idle server within the drain plus the
    2 s export bound (it took 26 s: the SDK waits up to 30 s a processor, then at exit)."""
    root = tmp_path / "registry"
    write_version(root, "m", 1, linear_model(seed=1))
    with _unreachable(kind) as collector:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        proc = ServerProcess(root, "--tracing", "on", "--drain-seconds", "1", env=env)
        try:
            proc.wait_ready()
            _infer_some(proc.url, 20)
            time.sleep(1.0)  # the first export has failed or hangs; more spans are buffered
            _infer_some(proc.url, 20)
            start = time.monotonic()
            proc.proc.send_signal(signal.SIGTERM)
            assert proc.proc.wait(30) == 0, proc.log()
            took = time.monotonic() - start
        finally:
            proc.stop()
    assert took < 1 + 2 + 1.5, (took, proc.log())


class _Refusing(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.slow
def test_a_collector_answering_errors_is_logged_once_per_interval(tmp_path: Path) -> None:
    """A collector that answers 404 to every export (a mistyped endpoint): the exporter's
    error is logged once for the interval, not once per batch (7 lines a second a worker)."""
    root = tmp_path / "registry"
    write_version(root, "m", 1, linear_model(seed=1))
    collector = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    try:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_port}",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        with running_server(root, "--tracing", "on", env=env) as proc:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                _infer_some(proc.url, 5)
            time.sleep(0.3)
            log = proc.log()
    finally:
        collector.shutdown()
        collector.server_close()
    lines = [line for line in log.splitlines() if "opentelemetry.exporter" in line]
    assert lines, log  # the failure is reported
    assert len(lines) <= 2, "\n".join(lines)  # once per message for the interval
    assert "404" in lines[0], lines[0]


def test_exporter_logs_pass_once_per_interval_and_count_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Per logger, level and message template: the first record passes, the rest within the
    interval are dropped, and the next one to pass says how many were."""
    from mlserve.tracing.exporting import limit_exporter_logs

    logger = logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    limit = limit_exporter_logs(every_s=0.3)
    try:
        with caplog.at_level(logging.WARNING, logger=logger.name):
            for i in range(5):
                logger.error("Failed to export span batch code: %s", 404 + i)
            logger.warning("Transient error %s", "refused")  # another template: passes
            time.sleep(0.35)
            logger.error("Failed to export span batch code: %s", 500)
        got = [r.getMessage() for r in caplog.records]
    finally:
        logger.removeFilter(limit)
    assert got[0] == "Failed to export span batch code: 404"
    assert got[1] == "Transient error refused"
    assert got[2].startswith("Failed to export span batch code: 500 (4 more like this in the last")
    assert len(got) == 3
