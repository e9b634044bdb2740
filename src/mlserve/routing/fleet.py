"""The fleet's traffic for the guardrails, read from Prometheus.

A replica's guardrails see only the requests its own workers answered; with several replicas
behind a load balancer a canary that fails on one replica's share of traffic may stay under
``min_requests`` (or the ratio) on every replica, while the fleet as a whole breaches. With
``[guardrails] source = "prometheus"`` the verdict reads the fleet's figures instead: the
recording rules shipped in ``deploy/prometheus/rules.yml``, which sum every replica's
counters by model, version and role over 5 minutes, queried through Prometheus's HTTP API
(``GET /api/v1/query``, one instant query per check):

- ``model_version_role:mlserve_requests:rate5m`` × 300 s: requests;
- ``model_version_role:mlserve_request_failures:rate5m`` × 300 s: requests not successful;
- ``model_version_role:mlserve_request_duration_seconds:p99_rate5m``: p99 latency.

The same ``judge`` then decides as for local figures. Anything that keeps the figures from
being read (connection refused, a timeout, an HTTP or query error, an answer that is not
Prometheus's, no recordings for the model at all: rules not loaded, replicas not scraped)
raises ``FleetUnavailable``; the caller falls back to the local judgement and says why.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .guardrails import Figures

REQUESTS = "model_version_role:mlserve_requests:rate5m"
FAILURES = "model_version_role:mlserve_request_failures:rate5m"
P99 = "model_version_role:mlserve_request_duration_seconds:p99_rate5m"
# The recordings' range: a rate times this is the window's count.
WINDOW_SECONDS = 300.0


class FleetUnavailable(Exception):
    """The fleet's figures could not be read; the message says why (no credentials)."""


def where(url: str) -> str:
    """``url`` without credentials, path or query: what verdicts and logs may show."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a number
        port = ""
    return f"{parts.scheme}://{host}{port}"


class PrometheusSource:
    """Reads one model's canary and stable figures from a Prometheus server."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.name = where(url)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector; ``FleetUnavailable`` on any failure."""
        target = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(target, timeout=self.timeout_s) as response:
                doc = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise FleetUnavailable(f"{self.name} answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            text = getattr(reason, "strerror", None) or str(reason) or type(exc).__name__
            raise FleetUnavailable(f"{self.name} unreachable: {text}") from exc
        except ValueError as exc:  # not JSON
            raise FleetUnavailable(f"{self.name} did not answer with JSON") from exc
        if not isinstance(doc, dict):
            raise FleetUnavailable(f"{self.name} did not answer with a JSON object")
        data = doc.get("data")
        if doc.get("status") != "success" or not isinstance(data, dict):
            raise FleetUnavailable(f"{self.name} refused the query: {doc.get('error', 'no data')}")
        result = data.get("result")
        if data.get("resultType") != "vector" or not isinstance(result, list):
            raise FleetUnavailable(f"{self.name} did not answer with a vector")
        return result

    def figures(self, model: str, canary: int, stable: int) -> tuple[Figures, Figures]:
        """The fleet's (canary, stable) figures over the recordings' window."""
        names = "|".join((REQUESTS, FAILURES, P99))
        expr = (
            f'{{__name__=~"{names}",model="{model}",'
            f'version=~"{canary}|{stable}",role=~"canary|stable"}}'
        )
        values: dict[tuple[str, str, str], float] = {}
        for sample in self.query(expr):
            try:
                labels = sample["metric"]
                key = (labels["__name__"], labels["version"], labels["role"])
                values[key] = float(sample["value"][1])
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise FleetUnavailable(f"{self.name} answered a malformed sample") from exc
        if not values:
            raise FleetUnavailable(
                f"{self.name} has no mlserve recordings for {model!r} "
                "(rules not loaded, or no replica scraped)"
            )

        def role(version: int, name: str) -> Figures:
            def get(metric: str) -> float:
                value = values.get((metric, str(version), name), 0.0)
                return value if math.isfinite(value) and value > 0 else 0.0

            p99 = values.get((P99, str(version), name))
            return Figures(
                round(get(REQUESTS) * WINDOW_SECONDS),
                round(get(FAILURES) * WINDOW_SECONDS),
                p99 if p99 is not None and math.isfinite(p99) else None,
            )

        return role(canary, "canary"), role(stable, "stable")
