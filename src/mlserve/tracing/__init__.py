"""Whether this process traces, and the tracer when it does (``--tracing``, ``OTEL_*``).

Tracing is off by default. ``--tracing on`` (``MLSERVE_TRACING``) turns it on; ``auto``, the
default, turns it on when the standard OpenTelemetry variables ask for traces. Off, nothing
here imports OpenTelemetry and no part of the request path holds a tracer; on, ``start``
builds one from the SDK (``spans.py``, the ``otel`` extra).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from .spans import Tracing

MODES = ("auto", "on", "off")
# Span attributes: OpenTelemetry's semantic conventions where they have one, mlserve.* else.
MODEL = "mlserve.model"
VERSION = "mlserve.model.version"
ROUTE = "mlserve.route"  # the role that served: stable, canary, pinned, shadow
OUTCOME = "mlserve.outcome"  # success, invalid, rejected, error: as mlserve_requests_total
ERROR_CODE = "mlserve.error.code"  # the error's stable code, as in the error body
ROWS = "mlserve.rows"
BATCH_REQUESTS = "mlserve.batch.requests"
HTTP_STATUS = "http.response.status_code"
ERROR_TYPE = "error.type"
# Any of these set (and no "none" exporter) asks for traces under --tracing auto.
_ASKING = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
)


def wanted(mode: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``mode`` (``auto``, ``on``, ``off``) and the environment turn tracing on."""
    env = os.environ if environ is None else environ
    if mode == "off":
        return False
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        if mode == "on":
            raise ConfigError(
                "--tracing on, but OTEL_SDK_DISABLED=true turns the OpenTelemetry SDK off: "
                "unset one of them"
            )
        return False
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",")}
    if exporters == {"none"}:
        if mode == "on":
            raise ConfigError(
                "--tracing on, but OTEL_TRACES_EXPORTER=none exports no spans: unset it or "
                "name an exporter (otlp, console)"
            )
        return False
    return mode == "on" or any(env.get(name) for name in _ASKING)


def start(mode: str) -> Tracing | None:
    """The process's tracer, configured by the ``OTEL_*`` variables, or None when off."""
    if not wanted(mode):
        return None
    try:
        from .spans import Tracing, provider_from_environ
    except ImportError as exc:
        raise ConfigError(
            f"tracing is on but OpenTelemetry is not installed ({exc.name} is missing): "
            "install mlserve[otel], or turn tracing off (--tracing off, or unset the "
            "OTEL_* variables)"
        ) from None
    return Tracing(provider_from_environ())
