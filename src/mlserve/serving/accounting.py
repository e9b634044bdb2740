"""Request accounting: each request's outcome per version and traffic role, failures by
reason, payload records, the drift windows of successes, and explain requests.

Every count goes to the version's ``EndpointStats`` (monitoring/hub.py) and its payload
sink; nothing is counted for a version with monitoring off or for an unknown model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidInput, MLServeError, RunTimeout, Unavailable
from ..monitoring.hub import MonitoringHub
from ..monitoring.request_stats import ERROR, INVALID, OUTCOMES, REFUSED, REJECTED
from ..monitoring.snapshot import ExplainSection
from ..registry.store import ModelStore
from ..routing.policy import PINNED, STABLE
from .endpoint import Endpoint, InferResult


class Accounting:
    """Counts every request's outcome where the metrics and the payload log read it."""

    def __init__(self, store: ModelStore[Endpoint], hub: MonitoringHub) -> None:
        self.store = store
        self.hub = hub
        # "model/version/outcome" → explain requests (mlserve_explain_requests_total).
        self.explained: dict[str, int] = {}

    def failed(
        self,
        endpoint: Endpoint,
        role: str,
        exc: MLServeError,
        request: Any = None,
        feeds: dict[str, np.ndarray] | None = None,
        body_bytes: int | None = None,
    ) -> None:
        """A request that ``endpoint`` took failed: payload record, outcome, reason."""
        if endpoint.payloads is not None:
            endpoint.payloads.failure(role, exc, request, feeds, body_bytes)
        stats = endpoint.stats
        if stats is None:
            return
        outcome = outcome_of(exc)
        stats.roles[role].failure(outcome)
        if outcome == INVALID:  # the client's fault: counted by reason too
            self.hub.rejected(stats, exc.reason if isinstance(exc, InvalidInput) else "size")

    def gate_refused(self, model: str, version: int | None) -> None:
        """A gate refusal (409) is counted as the ``refused`` outcome of the version refused
        (unpinned: the highest ready one), so an outage made by a failing gate shows in
        ``mlserve_requests_total``."""
        ready = self.store.ready_endpoints(model)
        refused = ready.get(version) if version is not None else ready.get(max(ready, default=0))
        if refused is not None and refused.stats is not None:
            refused.stats.roles[PINNED if version is not None else STABLE].failure(REFUSED)

    def count_shed(self, model: str, version: int | None) -> None:
        """Account a request refused by load shedding: the version's ``rejected`` outcome
        (what the overload alert watches) and nothing else (no payload record: shedding
        is when the server can least afford extra work)."""
        try:
            endpoint = self.store.resolve(model, version)
        except MLServeError:
            return
        if endpoint.stats is not None:
            endpoint.stats.roles[STABLE if version is None else PINNED].failure(REJECTED)

    def count_failure(self, model: str, version: int | None, exc: MLServeError) -> None:
        """Account a request that failed before the pipeline saw it (body, JSON, size)."""
        try:
            endpoint = self.store.resolve(model, version)
        except MLServeError:
            return  # unknown or unavailable: no per-version series for it
        self.failed(endpoint, STABLE if version is None else PINNED, exc)

    def succeeded(self, result: InferResult, total_s: float) -> bool:
        """Account a successful request (after its answer was sent): payload log, stats,
        drift windows. False when the version records no stats (monitoring off)."""
        payloads = result.endpoint.payloads
        if payloads is not None:
            payloads.success(result, total_s)
        stats = result.endpoint.stats
        if stats is None:
            return False
        feeds = result.feeds
        rows = len(feeds[result.endpoint.session.inputs[0].name])
        stats.roles[result.role].success(total_s, result.queue_s, result.infer_s, rows)
        monitor = stats.monitor
        if monitor is not None:
            if monitor.segment_parameter is None:
                monitor.observe(feeds, result.names, result.outputs, rows)
            else:
                params = result.request.get("parameters") if result.request else None
                segment = (
                    params.get(monitor.segment_parameter) if isinstance(params, dict) else None
                )
                monitor.observe(feeds, result.names, result.outputs, rows, segment)
        return True

    def count_explain(self, endpoint: Endpoint, outcome: int) -> None:
        key = f"{endpoint.model}/{endpoint.version}/{OUTCOMES[outcome]}"
        self.explained[key] = self.explained.get(key, 0) + 1

    def snapshot_section(self) -> ExplainSection:
        """The monitoring hub's source for ``mlserve_explain_requests_total``."""
        return ExplainSection(dict(self.explained))


def outcome_of(exc: MLServeError) -> int:
    """How a failed request counts: invalid (4xx), rejected (503/504: not run, or stopped
    for shutdown) or error (a run past its run timeout too)."""
    if 400 <= exc.status_code < 500:
        return INVALID
    if isinstance(exc, Unavailable) or (exc.status_code == 504 and not isinstance(exc, RunTimeout)):
        return REJECTED
    return ERROR
