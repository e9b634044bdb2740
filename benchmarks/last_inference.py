"""Cost of Triton's ``last_inference`` on the request path: ``RequestStats.success`` with the
wall-clock stamp of the last success (as shipped) against the same method without it.

Both run as Python methods in alternating rounds; CPU time per call (``process_time``), the
minimum and median over ``--rounds`` rounds of ``--calls`` calls each.

    python -m benchmarks.last_inference --rounds 8

Never run it while tests run: the machine has two cores.
"""

from __future__ import annotations

import argparse
import time
from bisect import bisect_left

from mlserve.monitoring.request_stats import RequestStats


class WithoutStamp(RequestStats):
    """``RequestStats.success`` as it was before ``last`` was kept."""

    __slots__ = ()

    def success(self, total_s: float, queue_s: float, infer_s: float, rows: int) -> None:
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


def _ns_per_call(cls: type[RequestStats], calls: int) -> float:
    call = cls().success
    t0 = time.process_time()
    for _ in range(calls):
        call(0.0003, 0.00001, 0.0002, 1)
    return (time.process_time() - t0) / calls * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    found: dict[str, list[float]] = {"without": [], "with": []}
    pair = (("without", WithoutStamp), ("with", RequestStats))
    for i in range(args.rounds):
        for name, cls in pair if i % 2 == 0 else pair[::-1]:
            found[name].append(_ns_per_call(cls, args.calls))
    for name, values in found.items():
        values.sort()
        print(f"{name:8s} min {values[0]:6.0f} ns  median {values[len(values) // 2]:6.0f} ns")


if __name__ == "__main__":
    main()
