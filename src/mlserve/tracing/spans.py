"""OpenTelemetry spans of a request: the request itself, its queue wait, its session run, the
batch that served it and its shadows; and the SDK set up from the ``OTEL_*`` variables.

A transport starts a request's span from the W3C ``traceparent``/``tracestate`` it received
(``Tracing.request``, a carrier dict: HTTP headers or gRPC metadata) and passes the
``RequestTrace`` down; the runners add their spans from the times they already measure, so
a span costs nothing where tracing is off. Imported only when tracing is on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from time import perf_counter, time_ns
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from .. import __version__
from ..errors import MLServeError
from .base import (
    BATCH_REQUESTS,
    ERROR_CODE,
    ERROR_TYPE,
    MODEL,
    OUTCOME,
    ROUTE,
    ROWS,
    VERSION,
    exporters,
)
from .exporting import StoppableExporter, limit_exporter_logs

if TYPE_CHECKING:
    import numpy as np

_PROPAGATOR = TraceContextTextMapPropagator()
# How long a shutdown may spend exporting what is buffered (the exit bound is the drain + 5 s).
SHUTDOWN_S = 2.0


def provider_from_environ() -> tuple[TracerProvider, list[StoppableExporter]]:
    """A tracer provider as the ``OTEL_*`` variables describe it: the resource
    (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``; service name ``mlserve`` when
    neither names one), the sampler (``OTEL_TRACES_SAMPLER[_ARG]``, the SDK's default
    parent-based always-on), and one batch span processor (``OTEL_BSP_*``) per exporter
    of ``OTEL_TRACES_EXPORTER`` (``otlp``, the default: OTLP over HTTP, configured by
    ``OTEL_EXPORTER_OTLP_*``; ``console``); and its exporters, for ``Tracing`` to stop."""
    made: list[StoppableExporter] = []
    for name in exporters():
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            made.append(StoppableExporter(OTLPSpanExporter()))
        else:
            made.append(StoppableExporter(ConsoleSpanExporter()))
    limit_exporter_logs()
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "mlserve"}))
    # No exit hook: Tracing.shutdown stops it within its bound (the SDK's hook waits up to
    # 30 s a processor on an unreachable collector).
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    for exporter in made:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, made


class Timed(Protocol):
    """What ``RequestTrace.around`` runs: a runner (``execution/base.py``'s ``Runner``, which
    sits above tracing) called without a trace, returning its outputs and the seconds it
    spent queued and running."""

    kind: str

    async def run(
        self, feeds: dict[str, np.ndarray], output_names: Sequence[str] | None
    ) -> tuple[list[np.ndarray], float, float]: ...


class Tracing:
    """The process's tracer over an injected provider (tests give theirs), and the exporters
    its shutdown stops first."""

    def __init__(
        self, provider: trace.TracerProvider, exporters: Sequence[StoppableExporter] = ()
    ) -> None:
        self.provider = provider
        self.exporters = tuple(exporters)
        self.tracer = provider.get_tracer("mlserve", __version__)

    def request(
        self,
        carrier: Mapping[str, str],
        name: str,
        attributes: Mapping[str, AttributeValue],
        start_ns: int | None = None,
    ) -> RequestTrace | None:
        """The span of a request received by a transport (server kind), child of the
        ``traceparent`` in ``carrier`` (with its ``tracestate``) when there is a valid one;
        None when the sampler drops it (then nothing below records a span either)."""
        parent = _PROPAGATOR.extract(carrier)
        span = self.tracer.start_span(
            name, parent, SpanKind.SERVER, attributes, start_time=start_ns
        )
        if not span.is_recording():
            return None
        return RequestTrace(self, span)

    def batch(
        self,
        traces: Sequence[RequestTrace],
        model: str,
        version: str,
        requests: int,
        rows: int,
        enqueued: Sequence[float],
        started: float,
        failures: Sequence[BaseException],
    ) -> None:
        """The spans of a batch that ran (``batch_spans``)."""
        batch_spans(traces, model, version, requests, rows, enqueued, started, failures)

    def shutdown(self, timeout_s: float = SHUTDOWN_S) -> None:
        """At server shutdown: export what is buffered for at most ``timeout_s``, then stop
        the exporters without waiting on their retries (a collector that is unreachable
        loses the spans still buffered, rather than holding the exit)."""
        provider = self.provider
        end = perf_counter() + timeout_s
        flush = getattr(provider, "force_flush", None)
        if flush is not None:
            # The SDK's force_flush does not honour its timeout: bounded from outside.
            _bounded(flush, timeout_s, "mlserve trace flush")
        for exporter in self.exporters:
            exporter.shutdown()  # aborts the retries of an export in flight
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is not None:
            _bounded(shutdown, max(end - perf_counter(), 0.1), "mlserve trace shutdown")


class RequestTrace:
    """A request's span (or a shadow run's) and the spans made under it."""

    __slots__ = ("context", "served", "span", "tracing")

    def __init__(self, tracing: Tracing, span: Span) -> None:
        self.tracing = tracing
        self.span = span
        self.context = trace.set_span_in_context(span)
        # What served the request, set on the span with the rest at its end: the SDK checks
        # and locks each call, so one call costs less than several.
        self.served: dict[str, AttributeValue] | None = None

    def child(
        self,
        name: str,
        start_ns: int,
        attributes: Mapping[str, AttributeValue] | None = None,
        links: Sequence[Link] = (),
    ) -> Span:
        return self.tracing.tracer.start_span(
            name, self.context, SpanKind.INTERNAL, attributes, links, start_time=start_ns
        )

    def target(self, model: str, version: str, role: str) -> None:
        """The version and route chosen for the request (set on the span at its end)."""
        self.served = {MODEL: model, VERSION: version, ROUTE: role}

    async def around(
        self, runner: Timed, feeds: dict[str, np.ndarray], output_names: Sequence[str] | None
    ) -> tuple[list[np.ndarray], float, float]:
        """``runner.run`` (inline or thread), with its queue wait (thread) and session run
        as spans placed by the times the runner measured."""
        t0 = time_ns()
        try:
            outputs, queue_s, infer_s = await runner.run(feeds, output_names)
        except BaseException as exc:
            # A full or timed-out queue is the queue's failure; anything else the run's.
            queued = isinstance(exc, MLServeError) and exc.status_code in (503, 504)
            span = self.child("queue" if queued else "session.run", t0)
            _fail(span, exc)
            span.end()
            raise
        started = t0 + int(queue_s * 1e9)
        if runner.kind != "inline":
            self.child("queue", t0).end(started)
        rows = {ROWS: _rows(feeds)}
        self.child("session.run", started, rows).end(started + int(infer_s * 1e9))
        return outputs, queue_s, infer_s

    def shadow(self, model: str, version: str) -> RequestTrace:
        """A shadow run of this request (after its answer): a child span of its own."""
        span = self.child("shadow", time_ns(), {MODEL: model, VERSION: version, ROUTE: "shadow"})
        return RequestTrace(self.tracing, span)

    def end(
        self,
        status: int | None = None,
        error: BaseException | str | None = None,
        code: str | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> None:
        """End the span: ``status`` (the answer's HTTP status, or its equivalent for
        gRPC) gives the outcome, and a 5xx (or, without a status, any ``error``) sets the
        span's status to error with the message."""
        span = self.span
        found = dict(self.served or ())
        if attributes:
            found.update(attributes)
        if status is not None:
            found[OUTCOME] = outcome(status)
        if code is not None:
            found[ERROR_CODE] = code
        if found:
            span.set_attributes(found)
        if error is not None and (status is None or status >= 500):
            span.set_attribute(ERROR_TYPE, code or str(status or type(error).__name__))
            _fail(span, error)
        span.end()


def outcome(status: int) -> str:
    """The outcome a status counts as in ``mlserve_requests_total``."""
    if status < 400:
        return "success"
    if status in (503, 504):
        return "rejected"
    return "invalid" if status < 500 else "error"


def batch_spans(
    traces: Sequence[RequestTrace],
    model: str,
    version: str,
    requests: int,
    rows: int,
    enqueued: Sequence[float],
    started: float,
    failures: Sequence[BaseException],
) -> None:
    """The spans of a batch that ran (times by ``perf_counter``, as the batcher keeps
    them), made when its results are delivered: each traced request's queue wait; the
    batch, from its oldest request's arrival, child of the first traced request and linked
    to every traced request it served; its session run, failed when some requests failed."""
    now_ns, now = time_ns(), perf_counter()

    def ns(t: float) -> int:
        return now_ns - int((now - t) * 1e9)

    begun = ns(started)
    for traced, at in zip(traces, enqueued, strict=True):
        traced.child("queue", ns(at)).end(begun)
    links = [Link(t.span.get_span_context()) for t in traces]
    batch = traces[0].child(
        "batch",
        ns(min(enqueued)),
        {MODEL: model, VERSION: version, BATCH_REQUESTS: requests, ROWS: rows},
        links,
    )
    run = RequestTrace(traces[0].tracing, batch).child("session.run", begun, {ROWS: rows})
    if failures:
        for exc in failures:
            run.record_exception(exc)
        run.set_status(
            Status(
                StatusCode.ERROR, f"{len(failures)} of {requests} requests failed: {failures[0]}"
            )
        )
    run.end(now_ns)
    batch.end(now_ns)


def _bounded(call: Callable[[], object], timeout_s: float, name: str) -> None:
    """Run ``call`` for at most ``timeout_s`` (what it has not done by then is abandoned to
    a daemon thread, which the exit ends)."""
    worker = threading.Thread(target=call, name=name, daemon=True)
    worker.start()
    worker.join(timeout_s)


def _fail(span: Span, error: BaseException | str) -> None:
    if isinstance(error, BaseException):
        span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, str(error)))


def _rows(feeds: Mapping[str, Any]) -> int:
    for array in feeds.values():
        return len(array) if getattr(array, "ndim", 0) else 1
    return 0
