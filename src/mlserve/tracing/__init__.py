"""Whether this process traces, and the tracer when it does (``--tracing``, ``OTEL_*``).

Tracing is off by default. ``--tracing on`` (``MLSERVE_TRACING``) turns it on; ``auto``, the
default, turns it on when the standard OpenTelemetry variables ask for traces. Off, nothing
here imports OpenTelemetry and no part of the request path holds a tracer; on, ``start``
builds one from the SDK (``spans.py``, the ``otel`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import (
    BATCH_REQUESTS,
    ERROR_CODE,
    ERROR_TYPE,
    HTTP_STATUS,
    MODEL,
    MODES,
    OUTCOME,
    ROUTE,
    ROWS,
    VERSION,
    check,
    exporters,
    missing_extra,
    wanted,
)

if TYPE_CHECKING:
    from .spans import Tracing

__all__ = [
    "BATCH_REQUESTS",
    "ERROR_CODE",
    "ERROR_TYPE",
    "HTTP_STATUS",
    "MODEL",
    "MODES",
    "OUTCOME",
    "ROUTE",
    "ROWS",
    "VERSION",
    "check",
    "exporters",
    "start",
    "wanted",
]


def start(mode: str) -> Tracing | None:
    """The process's tracer, configured by the ``OTEL_*`` variables, or None when off."""
    if not wanted(mode):
        return None
    try:
        from .spans import Tracing, provider_from_environ
    except ImportError as exc:
        raise ConfigError(missing_extra(exc.name)) from None
    return Tracing(*provider_from_environ())
