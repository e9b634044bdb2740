"""Request metrics kept cheaply on the request path: counters, histograms, their buckets.

The request path only increments plain Python counters and fixed-bucket histograms
(``RequestStats``: a few list updates and a ``bisect`` per request, no locks: each
worker's event loop is the only writer). A snapshot copies them into the typed
``RoleStats`` (``snapshot.py``); ``exposition.py`` renders merged snapshots for Prometheus.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from os import getpid
from time import time
from typing import Any

import numpy as np

from .snapshot import HistogramState, RoleStats

OUTCOMES = ("success", "invalid", "rejected", "error", "refused")
# refused: the version may not serve (its validation gate, require_gate = true).
SUCCESS, INVALID, REJECTED, ERROR, REFUSED = range(5)

# Seconds: from tens of microseconds (an inline model) to seconds (a slow model or a queue).
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)


class Histogram:
    """Cumulative-on-export histogram: per-bucket counts (last: +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # Prometheus buckets are "≤ le": the first bound ≥ value.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def observe_many(self, values: Any) -> None:
        """Observe every value of a 1-D numpy array at once."""
        if len(values):
            idx = np.searchsorted(self.bounds, values, side="left")
            for i, n in enumerate(np.bincount(idx, minlength=len(self.counts)).tolist()):
                self.counts[i] += n
            self.sum += float(values.sum())

    def state(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": self.sum}

    def snapshot(self) -> HistogramState:
        return HistogramState(list(self.counts), self.sum)


class RequestStats:
    """One loaded version in one traffic role: outcomes, latencies, rows."""

    __slots__ = ("duration", "inference", "last", "outcomes", "queue", "rows")

    def __init__(self) -> None:
        self.outcomes = [0] * len(OUTCOMES)
        self.duration = Histogram(LATENCY_BUCKETS)
        self.queue = Histogram(LATENCY_BUCKETS)
        self.inference = Histogram(LATENCY_BUCKETS)
        self.rows = 0
        self.last = 0.0  # wall-clock time of the last success (Triton's last_inference)

    def success(self, total_s: float, queue_s: float, infer_s: float, rows: int) -> None:
        # Histogram.observe three times, written out: one call a request instead of four.
        self.outcomes[0] += 1
        h = self.duration
        h.counts[bisect_left(h.bounds, total_s)] += 1
        h.sum += total_s
        h = self.queue
        h.counts[bisect_left(h.bounds, queue_s)] += 1
        h.sum += queue_s
        h = self.inference
        h.counts[bisect_left(h.bounds, infer_s)] += 1
        h.sum += infer_s
        self.rows += rows
        self.last = time()

    def failure(self, outcome: int) -> None:
        self.outcomes[outcome] += 1

    def snapshot(self) -> RoleStats:
        return RoleStats(
            list(self.outcomes),
            self.duration.snapshot(),
            self.queue.snapshot(),
            self.inference.snapshot(),
            self.rows,
            # Keyed by worker: a merge keeps each worker's own, never a sum of times.
            {str(getpid()): self.last},
        )


# Absolute differences of shadow scores: from float rounding to wholly different.
SHADOW_DIFF_BUCKETS = (1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)


def quantile(counts: list[int], q: float) -> float | None:
    """The q-quantile of a latency histogram, interpolated linearly within its bucket."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for bound, count in zip((*LATENCY_BUCKETS, math.inf), counts, strict=True):
        if count and seen + count >= rank:
            if bound == math.inf:
                return lower
            return lower + (bound - lower) * (rank - seen) / count
        seen += count
        lower = bound
    return lower
