"""Guardrails: compare a canary with its stable version and roll it back (or step it up).

Every ``check_seconds`` the guard reads the merged request statistics (all workers) and
keeps a short history, so each verdict covers the last ``window_seconds``: the canary's
failure rate (any outcome but success) against the stable version's, its p99 latency
against the stable p99 (from the histogram buckets), and drift alerts on its inputs or
outputs. No verdict before the canary has ``min_requests`` in the window. A breach rolls
the canary back (weight 0, canary cleared) and stays rolled back: nothing re-enables it
by itself, so the guard never flaps. A canary healthy for ``promote_after_seconds`` is
stepped up the ``steps`` schedule, then promoted. Every action is logged, audited and
counted.

``judge`` is the rule, on ``Figures`` (requests, failures, p99) from whichever source: this
replica's windows (``decide``, ``Figures.of``) or the fleet's recordings in Prometheus
(``routing/fleet.py``); each ``Verdict`` names its source.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..config import GuardrailConfig, RoutingConfig
from ..monitoring.snapshot import HistogramState, RoleStats

log = logging.getLogger("mlserve.guardrails")


@dataclasses.dataclass
class Verdict:
    """One check of one canary: the figures and the decision."""

    model: str
    canary: int
    stable: int
    canary_requests: int
    stable_requests: int
    canary_failure_rate: float | None
    stable_failure_rate: float | None
    canary_p99_s: float | None
    stable_p99_s: float | None
    drift_alert: bool
    action: str  # "none" | "wait" | "rollback" | "step" | "promote"
    reason: str
    # Whose traffic the figures are: "local" (this replica's workers) or "prometheus" (the
    # fleet's, from the recording rules); source_note says why a fleet verdict fell back.
    source: str = "local"
    source_note: str = ""


@dataclasses.dataclass(frozen=True)
class Figures:
    """One role's traffic over a verdict's window: requests, failed ones, p99 latency."""

    requests: int
    failures: int
    p99_s: float | None

    @classmethod
    def of(
        cls,
        state: RoleStats | None,
        quantile: Callable[[list[int], float], float | None],
    ) -> Figures:
        """From window statistics (``window_delta``): outcome counts and latency buckets."""
        if state is None or not state.outcomes:
            return cls(0, 0, None)
        total = sum(state.outcomes)
        return cls(total, total - state.outcomes[0], quantile(state.duration.counts, 0.99))


def window_delta(now: RoleStats, then: RoleStats | None) -> RoleStats:
    """Role statistics of one endpoint over a window: ``now`` minus ``then`` (outcomes and
    request durations)."""
    if then is None:
        return now
    # Clamped: a worker that restarted makes merged counters go down for a while.
    return RoleStats(
        outcomes=[max(a - b, 0) for a, b in zip(now.outcomes, then.outcomes, strict=True)],
        duration=HistogramState(
            [max(a - b, 0) for a, b in zip(now.duration.counts, then.duration.counts, strict=True)]
        ),
    )


def decide(
    model: str,
    routing: RoutingConfig,
    stable_version: int,
    canary: RoleStats | None,
    stable: RoleStats | None,
    drift_alert: bool,
    config: GuardrailConfig,
    healthy_since: float | None,
    now: float,
    quantile: Callable[[list[int], float], float | None],
) -> Verdict:
    """The verdict on a canary from its and the stable version's window statistics."""
    return judge(
        model,
        routing,
        stable_version,
        Figures.of(canary, quantile),
        Figures.of(stable, quantile),
        drift_alert,
        config,
        healthy_since,
        now,
    )


def judge(
    model: str,
    routing: RoutingConfig,
    stable_version: int,
    canary: Figures,
    stable: Figures,
    drift_alert: bool,
    config: GuardrailConfig,
    healthy_since: float | None,
    now: float,
) -> Verdict:
    """The verdict on a canary from its and the stable version's figures, whichever
    source (this replica's windows, or the fleet's recordings) they come from."""
    c_n, s_n = canary.requests, stable.requests
    c_rate = canary.failures / c_n if c_n else None
    s_rate = stable.failures / s_n if s_n else None
    c_p99, s_p99 = canary.p99_s, stable.p99_s
    verdict = Verdict(model, routing.canary, stable_version, c_n, s_n, c_rate, s_rate, c_p99,
                      s_p99, drift_alert, "wait", "")  # fmt: skip
    if c_n < config.min_requests:
        verdict.reason = f"{c_n} canary requests in the window, {config.min_requests} needed"
        return verdict
    if s_n < config.min_requests:  # nothing to compare with (e.g. a 100 % canary)
        verdict.reason = f"{s_n} stable requests in the window, {config.min_requests} needed"
        return verdict
    # A breach needs the canary's failure rate over max_failure_ratio × the stable's, and
    # that difference to be significant (one-sided two-proportion z-test, z > 3): noise in
    # small counts never rolls a canary back, and a clean stable does not make one failure
    # an infinite ratio.
    c_fail, s_fail = canary.failures, stable.failures
    c_rate = c_fail / c_n
    s_rate = s_fail / s_n
    pooled = (c_fail + s_fail) / (c_n + s_n)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / c_n + 1 / s_n))
    z = (c_rate - s_rate) / spread if spread > 0 else 0.0
    if c_rate > config.max_failure_ratio * s_rate and z > 3.0:
        verdict.action = "rollback"
        verdict.reason = (
            f"failure rate {c_rate:.3f} over {config.max_failure_ratio} × the "
            f"stable {s_rate:.3f} (z = {z:.1f})"
        )
    elif c_p99 is not None and s_p99 and c_p99 > config.max_p99_ratio * s_p99:
        verdict.action = "rollback"
        verdict.reason = f"p99 {c_p99 * 1e3:.2f} ms over {config.max_p99_ratio} × {s_p99 * 1e3:.2f}"
    elif drift_alert and config.rollback_on_drift:
        verdict.action = "rollback"
        verdict.reason = "drift alert on the canary's inputs or outputs"
    elif (
        config.promote_after_seconds > 0
        and healthy_since is not None
        and now - healthy_since >= config.promote_after_seconds
    ):
        higher = sorted(w for w in config.steps if w > routing.canary_weight)
        verdict.action = "step" if higher and higher[0] < 100 else "promote"
        verdict.reason = f"healthy for {now - healthy_since:.0f} s"
    else:
        verdict.action = "none"
        verdict.reason = "healthy"
    return verdict


class Guard:
    """Keeps the windows and the healthy-since times; ``check`` returns the verdicts."""

    def __init__(self) -> None:
        self._history: dict[str, deque[tuple[float, RoleStats]]] = {}
        self.healthy_since: dict[str, float] = {}
        self.last: dict[str, Verdict] = {}
        # model → what the current window started from (canary version, weight, routing file)
        self.split_seen: dict[str, tuple[Any, ...]] = {}

    def windowed(self, key: str, state: RoleStats, window_s: float, now: float) -> RoleStats:
        """The statistics of ``key`` over (about) the last ``window_s`` seconds.

        The history holds cumulative snapshots; the window is the newest minus the newest
        one that is at least ``window_s`` old (or the oldest kept, early on).
        """
        history = self._history.setdefault(key, deque())
        while len(history) > 1 and now - history[1][0] >= window_s:
            history.popleft()
        # The first look is a baseline, not "all time": counters outlive rollbacks.
        base = history[0][1] if history else state
        history.append((now, state))
        return window_delta(state, base)

    def forget(self, model: str) -> None:
        self.healthy_since.pop(model, None)
        self.split_seen.pop(model, None)
        for key in [k for k in self._history if k.startswith(model + "/")]:
            del self._history[key]

    @staticmethod
    def now() -> float:
        return time.monotonic()
