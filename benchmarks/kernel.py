"""Cost of binning rows for drift: compiled kernel vs numpy twin, and drift per window vs scipy.

One row of 20 features through each path (the Python call included), the same per row when
5,000 rows go in one call, and the cost of one drift check of a 5,000-row window against a
10,000-row reference: our counts + ``drift_report`` against ``scipy.stats.ks_2samp`` on the
raw values of each of the 20 features. Medians (and bests) over ``--runs`` runs; each run
times a loop of calls.

    python benchmarks/kernel.py --runs 7

Never run it while tests run: the machine has two cores.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from scipy import stats

from mlserve.monitoring import Binning, WindowedCounts, build_profile, drift_report
from mlserve.monitoring import _kernel_py as twin
from mlserve.monitoring.kernel import BinCounts

try:
    from mlserve.monitoring import _kernel as compiled
except ImportError:  # pragma: no cover
    compiled = None

F, N_REF, M_WINDOW = 20, 10_000, 5_000


def per_call_us(fn: Callable[[], object], calls: int, runs: int) -> tuple[float, float]:
    """(median, best) over runs of the mean time of one call, in microseconds."""
    for _ in range(max(1, calls // 10)):  # warm up
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples), min(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--calls", type=int, default=100_000, help="calls per run, one row each")
    args = parser.parse_args()
    runs, calls = args.runs, args.calls

    rng = np.random.default_rng(0)
    names = [f"x{j}" for j in range(F)]
    reference = rng.standard_normal((N_REF, F), dtype=np.float32)
    binning = Binning(build_profile(reference, names)["features"])
    spec = (binning.cols, binning.edges, binning.n_edges, binning.ref_min, binning.ref_max)
    window_rows = rng.standard_normal((M_WINDOW, F), dtype=np.float32)
    row = window_rows[:1].copy()
    out = BinCounts.zeros(F, binning.n_bins)

    results: list[tuple[str, float, float, str]] = []

    def record(name: str, timing: tuple[float, float], unit: str, scale: float = 1.0) -> None:
        results.append((name, timing[0] * scale, timing[1] * scale, unit))

    impls = [("cython", compiled), ("numpy twin", twin)] if compiled else [("numpy twin", twin)]
    for label, impl in impls:
        n_calls = calls if impl is compiled else max(1, calls // 50)
        binner = impl.RowBinner(*spec)
        binner.bind(*out.arrays())
        arrays = out.arrays()
        record(
            f"{label}: RowBinner.add, 1 row",
            per_call_us(lambda b=binner: b.add(row), n_calls, runs),
            "µs/row",
        )
        record(
            f"{label}: bin_rows(12 arrays), 1 row",
            per_call_us(lambda i=impl, a=arrays: i.bin_rows(row, *spec, *a), n_calls // 4, runs),
            "µs/row",
        )
        record(
            f"{label}: RowBinner.add, {M_WINDOW} rows",
            per_call_us(lambda b=binner: b.add(window_rows), 20 if impl is compiled else 5, runs),
            "µs/row",
            1 / M_WINDOW,
        )

    # The library's paths above the kernel (with whichever kernel the shim chose).
    record(
        "Binning.count, 1 row",
        per_call_us(lambda: binning.count(row, out=out), calls // 4, runs),
        "µs/row",
    )
    windowed = WindowedCounts(binning, bucket_seconds=60, window_buckets=60)
    record(
        "WindowedCounts.add_batch, 1 row",
        per_call_us(lambda: windowed.add_batch(row), calls // 4, runs),
        "µs/row",
    )

    # One drift check of a 5,000-row window: ours from counts, scipy's KS on raw values.
    def ours() -> None:
        drift_report(binning, binning.count(window_rows))

    def ks(method: str) -> None:
        for j in range(F):
            stats.ks_2samp(reference[:, j], window_rows[:, j], method=method)

    record(
        f"counts + drift_report, {M_WINDOW} rows × {F}",
        per_call_us(ours, 20, runs),
        "ms/window",
        1e-3,
    )
    record(
        f"scipy ks_2samp asymp × {F}", per_call_us(lambda: ks("asymp"), 3, runs), "ms/window", 1e-3
    )
    record(
        f"scipy ks_2samp exact × {F}", per_call_us(lambda: ks("exact"), 1, runs), "ms/window", 1e-3
    )

    width = max(len(r[0]) for r in results)
    print(f"binning: {F} features, {binning.n_bins - 2} edges, {runs} runs (median, best)")
    for name, median, best, unit in results:
        print(f"  {name:<{width}}  {median:10.3f}  {best:10.3f}  {unit}")


if __name__ == "__main__":
    main()
