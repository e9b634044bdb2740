"""Wall-clock bounds that hold on a busy machine: scaled by a baseline measured in the test.

A fixed bound ("under 0.1 s") fails when the machine is loaded, though nothing is wrong.
Time the same operation unloaded first (:func:`baseline`), then bound the loaded one by a
multiple of it (:func:`bound`), never below the fixed floor the test used to assert.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed(operation: Callable[[], object]) -> float:
    """Seconds ``operation()`` took."""
    start = time.perf_counter()
    operation()
    return time.perf_counter() - start


def baseline(operation: Callable[[], object], runs: int = 5) -> float:
    """The median of ``runs`` timings of ``operation`` (after one untimed warm-up)."""
    operation()
    return statistics.median(timed(operation) for _ in range(runs))


def bound(floor: float, base: float, factor: float = 20.0) -> float:
    """``max(floor, factor × base)``: the floor on a quiet machine, more when the baseline
    shows the machine is slow right now."""
    return max(floor, factor * base)
