"""Tracing's entry point: ``start``, which builds the process's tracer from the SDK when
tracing is on (``spans.py``, the ``otel`` extra) and returns None when it is off; and,
re-exported from ``base``, the mode check (``wanted``, ``check``), ``exporters`` and the span
attribute names.
Off, nothing here imports OpenTelemetry and no part of the request path holds a tracer.
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
