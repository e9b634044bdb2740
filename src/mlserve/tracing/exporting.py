"""What mlserve puts around OpenTelemetry's exporters: a stop that can come before the batch
processor's own (so a shutdown does not wait on an unreachable collector's retries), and a
log filter that lets an exporter's complaints through once per interval per message,
counting the rest (a collector that answers errors would otherwise log several lines a
second per worker)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

# The loggers of OpenTelemetry's exporters (filters do not reach a logger's children).
EXPORTER_LOGGERS = "opentelemetry.exporter"
LOG_EVERY_S = 30.0


class StoppableExporter(SpanExporter):
    """``exporter``, whose shutdown may be called first by mlserve (it aborts retries and
    their waits) and again, silently, by its batch processor."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self._stopped = False
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.exporter.export(spans)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self.exporter.shutdown()


class RateLimited(logging.Filter):
    """Lets one record through per ``every_s`` seconds per (logger, level, message
    template); the next one let through says how many like it were dropped meanwhile."""

    def __init__(self, every_s: float = LOG_EVERY_S) -> None:
        super().__init__()
        self.every_s = every_s
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        with self._lock:
            last, dropped = self._seen.get(key, (-float("inf"), 0))
            if now - last < self.every_s:
                self._seen[key] = (last, dropped + 1)
                return False
            self._seen[key] = (now, 0)
        if dropped:
            record.msg = (
                f"{record.getMessage()} ({dropped} more like this in the last "
                f"{now - last:.0f} s not logged)"
            )
            record.args = None
        return True


def limit_exporter_logs(every_s: float = LOG_EVERY_S) -> RateLimited:
    """Put one ``RateLimited`` on every exporter logger that exists now (call after the
    exporters are imported: their loggers are made at import)."""
    limit = RateLimited(every_s)
    manager: Any = logging.root.manager
    for name in list(manager.loggerDict):
        if name == EXPORTER_LOGGERS or name.startswith(EXPORTER_LOGGERS + "."):
            found = logging.getLogger(name)
            for old in [f for f in found.filters if isinstance(f, RateLimited)]:
                found.removeFilter(old)
            found.addFilter(limit)
    return limit
