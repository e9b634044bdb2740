"""CPU per request with tracing off and on, in process, on the fast lane (as ``lane_cpu``).

    python -m benchmarks.tracing_cpu --requests 20000 --rounds 3

The demo's logistic regression (``lr``, monitoring on) is fed whole V2 JSON requests through
mlserve's own protocol on a running uvloop, as in ``benchmarks/lane_cpu.py``; CPU time is the
process's (every thread: the batch span processor's included). Variants, alternating each
round: ``off``; ``off+tp`` (off, the request carrying a ``traceparent``); ``sampled-out``
(on, a sampler that records nothing: the span decision alone); ``batch`` (on, the SDK's
``BatchSpanProcessor`` in front of an exporter that drops what it is given: what production
pays short of the network); ``memory`` (on, ``SimpleSpanProcessor`` into the in-memory
exporter, emptied between rounds). Requests carry a ``traceparent`` in every variant but
``off``, so that the spans are children of a remote parent, as behind a traced gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import uvloop
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from uvicorn.config import Config
from uvicorn.server import ServerState

from mlserve.config import ServerSettings
from mlserve.http.app import create_app
from mlserve.http.connection import HttpConnection
from mlserve.service import InferenceService
from mlserve.tracing.spans import Tracing

from .lane_cpu import _Transport
from .serve import make_registry

VARIANTS = ("off", "off+tp", "sampled-out", "batch", "memory")
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class _Dropping(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _request(name: str, n_features: int, traced: bool) -> bytes:
    body = orjson.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": [1, n_features],
                    "datatype": "FP32",
                    "data": [0.5 + i / 10 for i in range(n_features)],
                }
            ]
        }
    )
    extra = b"traceparent: " + TRACEPARENT + b"\r\n" if traced else b""
    return (
        b"POST /v2/models/lr/infer HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n"
        b"content-type: application/json\r\n" + extra + b"content-length: %d\r\n\r\n" % len(body)
    ) + body


def _tracing(variant: str) -> tuple[Tracing | None, Any]:
    if variant.startswith("off"):
        return None, None
    if variant == "sampled-out":  # every trace dropped, a sampled parent's too
        return Tracing(TracerProvider(sampler=ALWAYS_OFF)), None
    provider = TracerProvider()
    if variant == "batch":
        provider.add_span_processor(BatchSpanProcessor(_Dropping()))
        return Tracing(provider), provider
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider), exporter


async def _measure(variant: str, registry: Path, requests: int) -> tuple[float, int]:
    settings = ServerSettings(registry=registry, overload_delay_ms=0, poll_seconds=0)
    tracing, holder = _tracing(variant)
    app = create_app(InferenceService(settings, tracing=tracing))
    app.store.load_all()
    app.service.hub.mark_ready()
    config = Config(
        app=app, http="httptools", loop="none", access_log=False, lifespan="off",
        proxy_headers=False,
    )  # fmt: skip
    config.load()
    protocol = HttpConnection(config=config, server_state=ServerState(), app_state={})
    transport = _Transport()
    protocol.connection_made(transport)
    spec = app.store.resolve("lr").session.inputs[0]
    data = _request(spec.name, int(spec.shape[1]), variant != "off")

    async def one() -> None:
        protocol.data_received(data)
        while not protocol.current.done:
            await asyncio.sleep(0)

    for _ in range(2000):
        await one()
    assert b'"outputs"' in transport.last, transport.last[:300]
    if isinstance(holder, InMemorySpanExporter):
        holder.clear()
    start = time.process_time()
    for _ in range(requests):
        await one()
    app.service.close()  # the batch processor exports what it holds: counted
    cpu = time.process_time() - start
    spans = len(holder.get_finished_spans()) if isinstance(holder, InMemorySpanExporter) else -1
    return cpu / requests * 1e6, spans


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS))
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    registry = make_registry(Path(tempfile.mkdtemp(prefix="tracing-cpu-")), 0)
    results: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):  # alternating, medians
        for variant in variants:
            us, spans = uvloop.run(_measure(variant, registry, args.requests))
            results[variant].append(us)
            if spans >= 0:
                assert spans == 2 * args.requests, spans  # the request's and its run's
    off = sorted(results.get("off", [0.0]))[len(results.get("off", [0.0])) // 2]
    for variant, values in results.items():
        values.sort()
        median = values[len(values) // 2]
        rounds = ", ".join(f"{v:.1f}" for v in values)
        print(f"{variant:12s} {median:6.1f} µs CPU per request ({median - off:+5.1f}; {rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
