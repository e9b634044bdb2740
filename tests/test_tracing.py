"""OpenTelemetry spans in process: the SDK's in-memory exporter behind a real server.

The application runs under uvicorn in a thread, with mlserve's own HTTP protocol (the fast
lane) or with every request through the ASGI lane, and real httpx requests over loopback.
The spans are checked against what was sent: the incoming ``traceparent``'s trace and
parent, the version that the response headers say served, the batch that the batcher ran.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from mlserve.config import ServerSettings
from mlserve.errors import ConfigError
from mlserve.http.app import create_app
from mlserve.http.connection import AsgiConnection, HttpConnection
from mlserve.service import InferenceService
from mlserve.tracing import wanted
from mlserve.tracing.spans import Tracing

from .conftest import free_port, gather_model, linear_model, wait_for, write_version

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def traceparent(trace_id: str = TRACE_ID, parent: str = PARENT_ID) -> str:
    return f"00-{trace_id}-{parent}-01"


@pytest.fixture(scope="module")
def traced_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``m``: v1 stable (inline), v2 its shadow; ``b``: batched, a batch of 4 cut at once;
    ``t``: on the thread pool; ``g``: fails inside onnxruntime for an index beyond 10;
    ``q``: every request times out in its batch queue (504)."""
    root = tmp_path_factory.mktemp("traced")
    write_version(root, "m", 1, linear_model(seed=1))
    write_version(root, "m", 2, linear_model(seed=2))
    (root / "m" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n[routing]\nstable = 1\nshadows = [2]\n'
    )
    write_version(root, "b", 1, linear_model(seed=3))
    (root / "b" / "model.toml").write_text(
        "[batching]\nmax_batch_size = 4\nmax_delay_us = 5000000\n"
    )
    write_version(root, "t", 1, linear_model(seed=4))
    (root / "t" / "model.toml").write_text('[execution]\nmode = "thread"\n')
    write_version(root, "g", 1, gather_model())
    write_version(root, "q", 1, linear_model(seed=5))
    (root / "q" / "model.toml").write_text(
        "[batching]\nmax_batch_size = 64\nmax_delay_us = 2000000\ntimeout_ms = 1\n"
    )
    return root


class Traced:
    """A server in this process whose spans go to an in-memory exporter."""

    def __init__(self, url: str, exporter: InMemorySpanExporter) -> None:
        self.url = url
        self.exporter = exporter

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def wait_for_spans(
        self, found: Callable[[tuple[ReadableSpan, ...]], bool]
    ) -> tuple[ReadableSpan, ...]:
        wait_for(lambda: found(self.spans()), 10, what=f"spans that satisfy {found.__name__}")
        return self.spans()


@contextlib.contextmanager
def serving(root: Path, protocol: type) -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = ServerSettings(registry=root, poll_seconds=0, tracing="off")
    service = InferenceService(settings, tracing=Tracing(provider))
    port = free_port()
    config = uvicorn.Config(
        create_app(service),
        host="127.0.0.1",
        port=port,
        http=protocol,
        lifespan="on",
        log_level="warning",
        loop="uvloop",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200
        return False

    try:
        wait_for(ready, timeout=60)
        yield Traced(url, exporter)
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module", params=["fast", "asgi"])
def traced(request: pytest.FixtureRequest, traced_registry: Path) -> Iterator[Traced]:
    protocol = HttpConnection if request.param == "fast" else AsgiConnection
    with serving(traced_registry, protocol) as srv:
        yield srv


def body(x: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }


def children(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    sid = parent.context.span_id
    return [s for s in spans if s.parent is not None and s.parent.span_id == sid]


def one(spans: list[ReadableSpan] | tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def request_span(spans: tuple[ReadableSpan, ...], trace_id: str) -> ReadableSpan:
    found = [
        s for s in spans if s.kind == SpanKind.SERVER and s.context.trace_id == int(trace_id, 16)
    ]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def test_a_request_is_a_child_of_its_traceparent_with_its_run_and_shadow(traced: Traced) -> None:
    x = np.random.default_rng(0).standard_normal((3, 20)).astype(np.float32)
    headers = {"traceparent": traceparent(), "tracestate": "vendor=abc,other=1"}
    r = httpx.post(traced.url + "/v2/models/m/infer", json=body(x), headers=headers)
    assert r.status_code == 200 and r.headers["mlserve-model-version"] == "1"

    def shadowed(spans: tuple[ReadableSpan, ...]) -> bool:
        return any(s.name == "shadow" and s.context.trace_id == int(TRACE_ID, 16) for s in spans)

    spans = traced.wait_for_spans(shadowed)
    req = request_span(spans, TRACE_ID)
    assert req.name == "POST /v2/models/{model}/infer"
    assert req.parent is not None and req.parent.span_id == int(PARENT_ID, 16)
    assert req.parent.is_remote
    assert req.context.trace_state.get("vendor") == "abc"
    assert dict(req.attributes or {}) == {
        "http.request.method": "POST",
        "http.route": "/v2/models/{model}/infer",
        "url.path": "/v2/models/m/infer",
        "url.scheme": "http",
        "mlserve.model": "m",
        "mlserve.model.version": "1",
        "mlserve.route": "stable",
        "http.response.status_code": 200,
        "mlserve.outcome": "success",
    }
    assert req.status.status_code == StatusCode.UNSET
    mine = children(spans, req)
    run = one(mine, "session.run")
    assert run.attributes == {"mlserve.rows": 3}
    assert req.start_time <= run.start_time <= run.end_time <= req.end_time
    # Shown in Server-Timing as the infer step: the same run, the same length (±0.1 ms).
    timing = dict(p.split(";dur=") for p in r.headers["server-timing"].split(", "))
    assert abs((run.end_time - run.start_time) / 1e6 - float(timing["infer"])) < 0.1
    shadow = one(mine, "shadow")
    assert shadow.attributes == {
        "mlserve.model": "m",
        "mlserve.model.version": "2",
        "mlserve.route": "shadow",
    }
    assert one(children(spans, shadow), "session.run").attributes == {"mlserve.rows": 3}


def test_a_pinned_request_without_traceparent_starts_a_trace(traced: Traced) -> None:
    before = {s.context.span_id for s in traced.spans()}
    x = np.ones((1, 20), np.float32)
    r = httpx.post(traced.url + "/v2/models/m/versions/2/infer", json=body(x))
    assert r.status_code == 200
    new = [s for s in traced.spans() if s.context.span_id not in before]
    req = one(
        [s for s in new if s.kind == SpanKind.SERVER],
        "POST /v2/models/{model}/versions/{version}/infer",
    )
    assert req.parent is None
    assert req.attributes is not None
    assert req.attributes["mlserve.route"] == "pinned"
    assert req.attributes["mlserve.model.version"] == "2"
    assert req.attributes["http.route"] == "/v2/models/{model}/versions/{version}/infer"
    assert not [s for s in new if s.name == "shadow"]  # pinned requests are not mirrored


def test_a_batch_span_is_linked_to_every_request_it_served(traced: Traced) -> None:
    ids = [f"{i + 1:032x}" for i in range(4)]
    x = np.random.default_rng(1).standard_normal((4, 20)).astype(np.float32)

    def send(i: int) -> httpx.Response:
        return httpx.post(
            traced.url + "/v2/models/b/infer",
            json=body(x[i : i + 1]),
            headers={"traceparent": traceparent(ids[i])},
            timeout=30,
        )

    with ThreadPoolExecutor(4) as pool:
        assert all(r.status_code == 200 for r in pool.map(send, range(4)))
    spans = traced.wait_for_spans(
        lambda s: all(
            any(x.context.trace_id == int(t, 16) and x.kind == SpanKind.SERVER for x in s)
            for t in ids
        )
    )
    requests = [request_span(spans, t) for t in ids]
    batches = [
        s for s in spans if s.name == "batch" and s.context.trace_id in {int(t, 16) for t in ids}
    ]
    # max_batch_size 4 and a 5 s delay: the fourth request cuts the one batch.
    assert len(batches) == 1
    batch = batches[0]
    linked = {link.context.span_id for link in batch.links}
    assert linked == {r.context.span_id for r in requests}
    assert batch.attributes == {
        "mlserve.model": "b",
        "mlserve.model.version": "1",
        "mlserve.batch.requests": 4,
        "mlserve.rows": 4,
    }
    # Its parent is the request whose arrival in the queue began it (not the first request
    # to reach the server: four concurrent heads and bodies are parsed in any order).
    first = min(requests, key=lambda r: one(children(spans, r), "queue").start_time)
    assert batch.parent is not None and batch.parent.span_id == first.context.span_id
    run = one(children(spans, batch), "session.run")
    assert run.attributes == {"mlserve.rows": 4}
    assert batch.start_time <= run.start_time <= run.end_time <= batch.end_time
    for req in requests:
        queue = one(children(spans, req), "queue")
        assert req.start_time <= queue.start_time <= queue.end_time == run.start_time
        assert req.end_time >= run.end_time


def test_a_thread_run_has_its_queue_wait_then_its_run(traced: Traced) -> None:
    tid = "ab" * 16
    x = np.ones((2, 20), np.float32)
    r = httpx.post(
        traced.url + "/v2/models/t/infer", json=body(x), headers={"traceparent": traceparent(tid)}
    )
    assert r.status_code == 200
    spans = traced.spans()
    req = request_span(spans, tid)
    mine = children(spans, req)
    queue, run = one(mine, "queue"), one(mine, "session.run")
    assert req.start_time <= queue.start_time <= queue.end_time == run.start_time
    assert run.end_time <= req.end_time and run.attributes == {"mlserve.rows": 2}


def test_errors_are_on_the_spans(traced: Traced) -> None:
    # Inside onnxruntime: the run's span fails with the exception; a 4xx leaves the server
    # span's status unset (OpenTelemetry's HTTP conventions) and says what was wrong.
    tid = "cd" * 16
    r = httpx.post(
        traced.url + "/v2/models/g/infer",
        json={"inputs": [{"name": "idx", "datatype": "INT64", "shape": [2], "data": [1, 99]}]},
        headers={"traceparent": traceparent(tid)},
    )
    assert r.status_code == 400
    spans = traced.spans()
    req = request_span(spans, tid)
    assert req.attributes is not None
    assert req.attributes["http.response.status_code"] == 400
    assert req.attributes["mlserve.outcome"] == "invalid"
    assert req.attributes["mlserve.error.code"] == r.json()["code"]
    assert req.attributes["mlserve.model.version"] == "1"
    assert req.status.status_code == StatusCode.UNSET
    run = one(children(spans, req), "session.run")
    assert run.status.status_code == StatusCode.ERROR
    assert run.status.description == r.json()["error"]
    assert [e.name for e in run.events] == ["exception"]

    # Timed out in the batch queue: a 5xx, so the server span's status is error.
    tid = "ef" * 16
    r = httpx.post(
        traced.url + "/v2/models/q/infer",
        json=body(np.ones((1, 20), np.float32)),
        headers={"traceparent": traceparent(tid)},
    )
    assert r.status_code == 504
    req = request_span(traced.spans(), tid)
    assert req.status.status_code == StatusCode.ERROR
    assert req.status.description == r.json()["error"]
    assert req.attributes is not None
    assert req.attributes["error.type"] == "queue_timeout"
    assert req.attributes["mlserve.outcome"] == "rejected"

    # Refused at its head (an unknown model): a span too, ended at once.
    tid = "12" * 16
    r = httpx.post(
        traced.url + "/v2/models/nope/infer",
        json=body(np.ones((1, 20), np.float32)),
        headers={"traceparent": traceparent(tid)},
    )
    assert r.status_code == 404
    req = request_span(traced.spans(), tid)
    assert req.attributes is not None
    assert req.attributes["mlserve.error.code"] == "model_not_found"
    assert req.attributes["http.response.status_code"] == 404
    assert "mlserve.model.version" not in req.attributes


def test_an_invalid_traceparent_starts_a_new_trace(traced: Traced) -> None:
    before = {s.context.span_id for s in traced.spans()}
    bad = "00-" + "0" * 32 + "-" + PARENT_ID + "-01"  # an all-zero trace id is invalid
    r = httpx.post(
        traced.url + "/v2/models/m/infer",
        json=body(np.ones((1, 20), np.float32)),
        headers={"traceparent": bad},
    )
    assert r.status_code == 200
    new = [s for s in traced.spans() if s.context.span_id not in before]
    req = one([s for s in new if s.kind == SpanKind.SERVER], "POST /v2/models/{model}/infer")
    assert req.parent is None and req.context.trace_id != 0


# ------------------------------------------------------------------ on, off, and refusals


@pytest.mark.parametrize(
    ("mode", "environ", "on"),
    [
        ("auto", {}, False),
        ("auto", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ("auto", {"OTEL_SERVICE_NAME": "fraud"}, True),
        ("auto", {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio"}, True),
        ("auto", {"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ("auto", {"OTEL_TRACES_EXPORTER": "none", "OTEL_SERVICE_NAME": "x"}, False),
        ("auto", {"OTEL_SDK_DISABLED": "true", "OTEL_SERVICE_NAME": "x"}, False),
        ("on", {}, True),
        ("off", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ],
)
def test_when_tracing_is_on(mode: str, environ: dict[str, str], on: bool) -> None:
    assert wanted(mode, environ) is on


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"OTEL_SDK_DISABLED": "true"}, "OTEL_SDK_DISABLED"),
        ({"OTEL_TRACES_EXPORTER": "none"}, "OTEL_TRACES_EXPORTER=none"),
    ],
)
def test_tracing_on_against_the_sdk_switched_off_is_refused(
    environ: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        wanted("on", environ)


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "'zipkin': mlserve exports spans with 'otlp'"),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"},
            "'grpc'.*http/protobuf.*4318",
        ),
        ({"OTEL_SDK_DISABLED": "true", "MLSERVE_TRACING": "on"}, "OTEL_SDK_DISABLED"),
    ],
)
def test_tracing_that_cannot_start_stops_the_server_before_it_starts(
    environ: dict[str, str], says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MLSERVE_"))}
    env.update(environ)
    cmd = [sys.executable, "-m", "mlserve", "serve", "--registry", str(tmp_path)]
    cmd += ["--port", str(free_port())]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert re.search(says, out.stderr), out.stderr
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=says):  # and the worker's own start says the same
        InferenceService(ServerSettings(registry=tmp_path, tracing="on"))


def test_without_the_extra_tracing_on_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if mlserve[otel] were not installed\n"
        "from mlserve.errors import ConfigError\n"
        "from mlserve.tracing import check, start\n"
        "for step in (check, start):\n"
        "    try:\n"
        "        step('on')\n"
        "    except ConfigError as exc:\n"
        "        print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "OpenTelemetry is not installed" in line and "install mlserve[otel]" in line


def test_off_imports_no_opentelemetry_and_keeps_the_plain_core(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from mlserve.config import ServerSettings\n"
        "from mlserve.http.app import create_app\n"
        "from mlserve.http.infer import InferHandler\n"
        "import mlserve.server, mlserve.cli\n"
        f"app = create_app(ServerSettings(registry=Path({str(tmp_path)!r})))\n"
        "assert type(app.infer) is InferHandler, type(app.infer)\n"
        "assert app.service.tracing is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MLSERVE_"))}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
