"""Monitoring routes: ``/metrics``, the model monitor endpoint, and a live SSE stream."""

from __future__ import annotations

import asyncio
import math
import os
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..errors import InvalidInput, Overloaded
from ..governance import audit
from ..monitoring.request_stats import LATENCY_BUCKETS, OUTCOMES, quantile
from ..monitoring.snapshot import WorkerSnapshot
from ..names import check_model_name, parse_version
from ..service import InferenceService
from .operations import Answer, Operation, json_ok, per_target
from .v2 import JSONResponse

STREAM_MAX_SECONDS = 300.0
AUDIT_ENTRIES = 20  # the latest audit entries a stream sends
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

OPERATIONS = (
    Operation(
        "/metrics",
        "GET",
        "Prometheus metrics (OpenMetrics when the client prefers it)",
        "monitoring",
        Answer(
            "The exposition",
            ((TEXT_FORMAT.split(";")[0], "Text"), (OPENMETRICS.split(";")[0], "Text")),
        ),
    ),
    *(
        Operation(
            path,
            "GET",
            f"Drift, data quality and traffic of {which}"
            if pinned
            else "Drift, data quality and traffic of the model's ready versions",
            "monitoring",
            json_ok("The monitoring report", "MonitorReport"),
            (400, 404, 503),
        )
        for path, which, pinned in per_target("/monitor")
    ),
    Operation(
        "/v2/monitor/stream",
        "GET",
        "Server-Sent Events: one `snapshot` event per interval, until `max_seconds`",
        "monitoring",
        Answer("The event stream", (("text/event-stream", "EventStream"),)),
        (400, 503),
        parameters=("interval", "max_seconds"),
    ),
)


def routes(service: InferenceService) -> list[Route]:
    """Routes bound to ``service``."""
    streams = StreamSlots(MAX_STREAMS)  # open event streams on this worker

    rendering: dict[bool, asyncio.Future[list[bytes]]] = {}  # per format: the one in progress

    async def metrics(request: Request) -> Response:
        openmetrics = _prefers_openmetrics(request.headers.get("accept", ""))
        # Rendered in a thread, snapshot included, and sent a metric family at a time: with
        # 100 models × 2 versions × 20 features the exposition is ~26 MB and held the event
        # loop 1.2–1.9 s. In a thread it is Python code, which gives the GIL back to the loop
        # at every switch interval (5 ms; see hub.py's _Pacer). One render per format at a
        # time: a scrape arriving during one is answered with it (its snapshot is newer
        # than every earlier answer in that format, so counters still never go back), so
        # scrapes at once cannot add threads fighting the loop for the GIL.
        pending = rendering.get(openmetrics)
        if pending is None:
            pending = asyncio.ensure_future(
                asyncio.to_thread(service.hub.exposition_parts, openmetrics)
            )
            rendering[openmetrics] = pending
            pending.add_done_callback(lambda _: rendering.pop(openmetrics, None))
        parts = await asyncio.shield(pending)  # a client going away leaves it to the others
        return StreamingResponse(
            _each(parts),
            media_type=OPENMETRICS if openmetrics else TEXT_FORMAT,
            headers={"content-length": str(sum(map(len, parts)))},
        )

    async def monitor(request: Request) -> Response:
        model = check_model_name(request.path_params["model"])
        raw = request.path_params.get("version")
        version = parse_version(raw) if raw is not None else None
        return JSONResponse(await asyncio.to_thread(service.views.monitor, model, version))

    async def stream(request: Request) -> Response:
        interval = _number(request, "interval", 1.0, 0.5, 60.0)
        limit = _number(request, "max_seconds", STREAM_MAX_SECONDS, 1.0, 3600.0)
        # Taken here, before any await: streams opened at once cannot all pass the check
        # before one of them counts (each stream merges and renders its own snapshots).
        release = streams.admit()
        return _AdmittedStream(
            _snapshots(service, interval, limit),
            release,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    return [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v2/models/{model}/monitor", monitor, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/monitor", monitor, methods=["GET"]),
        Route("/v2/monitor/stream", stream, methods=["GET"]),
    ]


async def _each(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _prefers_openmetrics(accept: str) -> bool:
    """OpenMetrics when the client accepts it at least as much as the text format."""
    quality = {"openmetrics": 0.0, "text": 0.0}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if media == "application/openmetrics-text":
            quality["openmetrics"] = max(quality["openmetrics"], q)
        elif media in ("text/plain", "text/*", "*/*"):
            quality["text"] = max(quality["text"], q)
    return quality["openmetrics"] > 0 and quality["openmetrics"] >= quality["text"]


def _number(request: Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        raise InvalidInput(f"query parameter {name!r} must be a number in [{low:g}, {high:g}]")
    return value


MAX_STREAMS = 16  # open event streams per worker


class StreamSlots:
    """The event streams a worker may hold open at once, counted when a stream is admitted.

    ``admit`` checks and takes a slot in one step with no await in between, so requests
    that arrive together are counted one after another on the event loop: never more than
    ``limit`` are admitted. Over the limit it raises ``Overloaded`` (a JSON 503 with
    Retry-After). The slot is given back once, when the response ends (finished, client
    gone, cancelled) or, should it never be sent, when the response is collected.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def admit(self) -> Callable[[], None]:
        if self.open >= self.limit:
            raise Overloaded(f"{self.limit} event streams are open on this worker; try again later")
        self.open += 1
        taken = [True]

        def release() -> None:
            if taken[0]:
                taken[0] = False
                self.open -= 1

        return release


class _AdmittedStream(StreamingResponse):
    """A streaming response that gives its slot back when it ends, whatever ends it."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None], **kw: Any):
        super().__init__(content, **kw)
        self._release = release
        # A response built but never sent (a middleware dropping it) still frees its slot.
        weakref.finalize(self, release)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


async def _snapshots(
    service: InferenceService, interval: float, limit: float
) -> AsyncIterator[bytes]:
    """Server-Sent Events: one ``snapshot`` event per interval; ends after ``limit`` seconds
    (EventSource clients reconnect) or when the server starts shutting down."""
    previous: tuple[float, WorkerSnapshot] | None = None
    audit_seen: tuple[int, int, int] | None = None
    deadline = time.monotonic() + limit
    yield b"retry: 1000\n\n"
    while not service.views.shutting_down and time.monotonic() < deadline:
        merged = await asyncio.to_thread(service.hub.merged)
        reports = service.hub.reports(merged)
        now = time.time()
        event = snapshot_event(merged, reports, previous, now)
        event["models"] = service.views.models_state()
        changed, entries = await asyncio.to_thread(_audit_if_changed, service, audit_seen)
        if previous is None or changed != audit_seen:
            event["audit"] = entries
            audit_seen = changed
        previous = (now, merged)
        yield b"event: snapshot\ndata: " + orjson.dumps(event) + b"\n\n"
        wake = time.monotonic() + interval
        while not service.views.shutting_down and time.monotonic() < wake:
            await asyncio.sleep(min(0.5, wake - time.monotonic()))


def _audit_if_changed(
    service: InferenceService, seen: tuple[int, int, int] | None
) -> tuple[tuple[int, int, int] | None, list[dict[str, Any]]]:
    """The audit log's identity (inode, size, mtime) and, when it differs from ``seen``,
    its latest entries. A log that cannot be read has none: the stream goes on."""
    path = service.audit.path
    try:
        st = os.stat(path)
        fingerprint = (st.st_ino, st.st_size, st.st_mtime_ns)
        if fingerprint == seen:
            return seen, []
        entries = audit.latest(path, AUDIT_ENTRIES)
        for entry in entries:  # the stream is unauthenticated: no token hashes to guess at
            if isinstance(entry.get("actor"), str):
                entry["actor"] = entry["actor"].split(":", 1)[0]
        return fingerprint, entries
    except OSError:
        return None, []


def snapshot_event(
    merged: WorkerSnapshot,
    reports: dict[str, Any],
    previous: tuple[float, WorkerSnapshot] | None,
    now: float,
) -> dict[str, Any]:
    """Per version and role: totals, request rate and latency quantiles since the previous
    snapshot (estimated from histogram buckets as PromQL's histogram_quantile does), the
    cumulative latency bucket counts (for clients that compute over their own windows), and
    drift: alerts, and every feature's PSI against its threshold."""
    before = previous[1].endpoints if previous else {}
    elapsed = now - previous[0] if previous else None
    endpoints: dict[str, Any] = {}
    for key, entry in merged.endpoints.items():
        roles = {}
        earlier = before.get(key)
        for role, state in entry.roles.items():
            old = earlier.roles.get(role) if earlier is not None else None
            counts = state.duration.counts
            done = sum(state.outcomes)
            if old is not None:
                counts = [a - b for a, b in zip(counts, old.duration.counts, strict=True)]
                done -= sum(old.outcomes)
            roles[role] = {
                "requests": dict(zip(OUTCOMES, state.outcomes, strict=True)),
                "rate_per_s": done / elapsed if elapsed else None,
                "latency_s": {f"p{int(q * 100)}": quantile(counts, q) for q in (0.5, 0.9, 0.99)},
                "duration_counts": state.duration.counts,
            }
        report = reports.get(key)
        sections = (report or {}).get("sections", {})
        endpoints[key] = {
            "roles": roles,
            "pending": entry.pending,
            "drift_alert": bool(report and report["alert"]),
            "alerting": {
                section: [f["name"] for f in rep["features"] if f["alert"]]
                for section, rep in sections.items()
                if rep["alert"]
            },
            "features": {
                section: [
                    {
                        "name": f["name"],
                        "psi": f["psi"],
                        "threshold": f["psi_threshold"],
                        "psi_floor": rep.get("psi_floor"),
                        "auc": f.get("auc"),
                        "auc_floor": rep.get("auc_floor"),
                        "pvalue": f["rank_pvalue"]
                        if f.get("rank_pvalue") is not None
                        else f.get("chi2_pvalue"),
                        "min_rows": rep.get("m_min"),
                        "fired_by": f.get("fired_by"),
                        "significant": f.get("significant"),
                        "large": f.get("large"),
                        "rows": f["window_count"],
                        "alert": f["alert"],
                    }
                    for f in rep["features"]
                ]
                for section, rep in sections.items()
            },
        }
    return {"time": now, "latency_buckets": LATENCY_BUCKETS, "endpoints": endpoints}
