"""The part of tracing that needs no OpenTelemetry: whether this process traces (off by
default: ``--tracing on``, ``MLSERVE_TRACING``, turns it on; ``auto``, the default, turns it
on when the standard ``OTEL_*`` variables ask for traces), which exporters it makes, the
check before a server starts, and the attribute names its spans carry. The package
re-exports it; ``spans.py`` (the ``otel`` extra) builds on it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.util import find_spec

from ..errors import ConfigError

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


def exporters(environ: Mapping[str, str] | None = None) -> list[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (default ``otlp``), refused when mlserve
    cannot make one: another name, or OTLP over another protocol than HTTP."""
    env = os.environ if environ is None else environ
    names = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    names = [n for n in names if n and n != "none"] or ["otlp"]
    for name in names:
        if name not in ("otlp", "console"):
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER names {name!r}: mlserve exports spans with 'otlp' "
                "(OTLP over HTTP) or 'console'"
            )
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if "otlp" in names and protocol != "http/protobuf":
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL is {protocol!r}: mlserve exports OTLP over HTTP "
            "(http/protobuf); set it so, with the collector's HTTP endpoint (port 4318)"
        )
    return names


def check(mode: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse, before a server starts, tracing that could not start in its workers (the
    extra missing, an exporter or protocol mlserve does not ship), without importing it."""
    if not wanted(mode, environ):
        return
    names = exporters(environ)
    needed = ["opentelemetry.sdk"]
    if "otlp" in names:
        needed.append("opentelemetry.exporter.otlp.proto.http")
    for module in needed:
        try:
            found = find_spec(module)
        except ModuleNotFoundError:
            found = None
        if found is None:
            raise ConfigError(missing_extra(module))


def missing_extra(module: str | None) -> str:
    return (
        f"tracing is on but OpenTelemetry is not installed ({module} is missing): install "
        "mlserve[otel], or turn tracing off (--tracing off, or unset the OTEL_* variables)"
    )
