"""Drift alerts: false alarms and power of the alert rule before and after commit c0d109b.

The demo's credit-risk data (``mlserve.demo._credit_risk_data``: 20 features, among them the
rare binary ``bankruptcies``) and its version-1 model (standard scaler + logistic
regression, trained on the demo's own training split as ``demo.py`` does, published with
``publish`` so the profile and the ONNX file are what a server loads; onnxruntime in
process). Reference: n = 10,000 rows from the generator. Every window is a fresh draw from
the generator with its own seed, never a resample of the reference (that would not be a fair
null). Three sections, as a server monitors them: the 20 inputs, ``label`` and
``probabilities`` (45 tests).

Rules, applied to the same windows (one column each):

- before: what the code did before c0d109b, which the current ``drift_report`` reproduces
  with its defaults — per section, ``a = alpha / (that section's tests)``, no effect floors,
  one evaluation; the version alerts when any section does.
- after, floors 0: the after rule's error control alone — ``a = alpha / (tests of every
  section × window_buckets)`` — with ``psi_floor`` and ``auc_floor`` at 0.
- after: ``ModelMonitor.report`` at the ``[monitoring]`` defaults — that budget, and an
  alert needs a large change too (PSI ≥ ``psi_floor`` or ``|AUC - 0.5|`` ≥ ``auc_floor``).

All are computed vectorised over many windows at once (``psi``, ``rank_z`` and
``rank_auc`` take stacked counts); every run checks the vectorised decisions against
``drift_report`` window by window, and the after rule against ``ModelMonitor.report`` fed
through ``observe``, and stops if they disagree.

Experiments: (a) false alarms per report at m = 200 / 1,000 / 5,000; (b) false alarms per
hour of operation at the defaults (60 buckets × 60 s): a Poisson stream of r rows a minute,
counted in 10 s slices; a report every 10 s sees the 59 newest full minutes and the current
one so far (``WindowedCounts.window``), one a minute the 60 newest full minutes; an hour
"has an alarm" when any report in it alerts; (c) power against a mean shift in
``region_cost_index`` (a feature the model hardly uses, so the inputs must catch it) and the
rate of ``bankruptcies`` tripled or set to 50 % (extra ones drawn among the rows without
one); (d) a daily seasonality of ±0.1 sd on two near-normal features and on two
right-skewed ones (hourly windows across days, each row shifted by the sine at its own
time), and a fresh 1,200-row hold-out set replayed 4 and 10 times into one window (a load
test looping over a hold-out split of the demo's size); (e) ``[monitoring] sample_rows``:
windows of 5 or 20 requests of 1,024 rows, binned whole or a sample of each request (false
alarms, and power against a 0.25 sd shift in ``region_cost_index``). Upper bounds (≤) are
one-sided 95 % Clopper–Pearson.

    python -m benchmarks.drift_power            # about 4 minutes on 2 cores
    python -m benchmarks.drift_power --quick    # a smoke run, about 10 s
    python -m benchmarks.drift_power --only e   # (e) alone
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from mlserve.config import MonitoringConfig
from mlserve.demo import _credit_risk_data
from mlserve.monitoring import Binning
from mlserve.monitoring._chi2 import chi2_isf
from mlserve.monitoring.drift import (
    drift_report,
    psi,
    rank_auc,
    rank_z,
    section_tests,
    z_critical,
)
from mlserve.monitoring.kernel import BinCounts
from mlserve.monitoring.monitor import ModelMonitor
from mlserve.runtime.tensors import TensorSpec

N_REF = 10_000
REF_SEED = 1
SHIFTED = "region_cost_index"
SEASONAL = {"near-normal": ("age", "credit_utilization"),
            "right-skewed": ("loan_amount", "monthly_expenses")}  # fmt: skip
RARE = "bankruptcies"
SIZES = (200, 1_000, 5_000)
CONFIG = MonitoringConfig()
# (e): windows of a few large requests, binned whole and through sample_rows.
SAMPLE_REQUESTS, SAMPLE_BATCH = (5, 20), 1_024
SAMPLE_ROWS = (256, 128, 64, 32)

Counts = NDArray[np.int64]
Rows = NDArray[np.float32]


# ---------------------------------------------------------------------------------------------
# the world: generator, model, profile


def draw(rows: int, seed: int) -> Rows:
    """``rows`` fresh rows of the demo's credit-risk generator (its train and test parts)."""
    d = _credit_risk_data(rows, seed)
    return np.concatenate([d["X_train"], d["X_test"]])


FEATURES = [str(n) for n in _credit_risk_data(10, 0)["feature_names"]]


class Seeds:
    """Distinct generator seeds: one per window, never the reference's or the training's."""

    def __init__(self, start: int) -> None:
        self.next = start

    def __call__(self) -> int:
        self.next += 1
        return self.next


@dataclass
class Section:
    key: str
    binning: Binning
    ref: NDArray[np.float64]  # [F, B]
    n: NDArray[np.float64]  # [F]
    bins: NDArray[np.int64]  # [F]: populated reference bins, at least 2
    numeric: NDArray[np.bool_]  # [F]
    tests: int


class World:
    """The published model and its profile; turns input rows into counts per section."""

    def __init__(self, root: Path) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        from mlserve.governance.publish import publish
        from mlserve.monitoring.profile import load_profile

        train = _credit_risk_data()  # the demo's own training data (its default seed)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(train["X_train"], train["y_train"])
        self.reference = draw(N_REF, REF_SEED)
        done = publish(
            root / "registry", "credit-risk", reference=self.reference,
            feature_names=FEATURES, estimator=model, tolerance=1e-5,
        )  # fmt: skip
        self.profile = load_profile(done.path / "reference.json")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(done.path / "model.onnx"), opts, providers=["CPUExecutionProvider"]
        )
        self.outputs = [o.name for o in self.session.get_outputs()]
        entries = {"inputs": self.profile["features"], **self.profile["outputs"]}
        self.sections = []
        for key, section in entries.items():
            b = Binning(section)
            assert b.reference is not None
            ref = b.reference.astype(np.float64)
            self.sections.append(
                Section(
                    key, b, ref, ref.sum(axis=1),
                    np.maximum(np.count_nonzero(ref, axis=1), 2),
                    np.arange(b.n_features) < b.n_numeric, section_tests(b),
                )
            )  # fmt: skip
        self.tests = sum(s.tests for s in self.sections)
        stats = {e["name"]: e for e in self.profile["features"]}
        self.std = {name: float(stats[name]["std"]) for name in FEATURES}
        col = FEATURES.index(RARE)
        big = np.concatenate([draw(50_000, 10_000 + i)[:, col] for i in range(4)])
        self.rare_rate = float(big.mean())  # the generator's rate, not the reference's

    def tensors(self, X: Rows) -> list[Any]:
        """The section tensors for input rows ``X``: X itself, then the model's outputs."""
        return [X, *self.session.run(self.outputs, {"X": X})]

    def counts(self, X: Rows, cuts: Sequence[int]) -> list[Counts]:
        """Counts of the slices of ``X`` between ``cuts`` (0, …, len(X)), per section:
        ``[slices, F, B]`` each."""
        out = []
        for sec, tensor in zip(self.sections, self.tensors(X), strict=True):
            b = sec.binning
            stack = np.zeros((len(cuts) - 1, b.n_features, b.n_bins), dtype=np.int64)
            for i in range(len(cuts) - 1):
                if cuts[i + 1] > cuts[i]:
                    stack[i] = b.count(tensor[cuts[i] : cuts[i + 1]]).counts
            out.append(stack)
        return out

    def windows(self, m: int, count: int, make: Callable[[int, int], Rows]) -> list[Counts]:
        """``count`` windows of ``m`` rows: ``make(m, i)`` draws window ``i`` (fresh seeds)."""
        chunk = max(1, 200_000 // m)  # windows per model call
        parts: list[list[Counts]] = []
        for start in range(0, count, chunk):
            k = min(chunk, count - start)
            X = np.concatenate([make(m, i) for i in range(start, start + k)])
            parts.append(self.counts(X, [m * i for i in range(k + 1)]))
        return [np.concatenate([p[s] for p in parts]) for s in range(len(self.sections))]


# ---------------------------------------------------------------------------------------------
# the rules, vectorised over windows


@dataclass(frozen=True)
class Rule:
    name: str
    alpha: float
    per_version: bool  # the family is every section's tests (else the section's own)
    evaluations: int
    psi_floor: float
    auc_floor: float
    max_rows: int
    m_min: int

    def kwargs(self, world: World, sec: Section) -> dict[str, Any]:
        """``drift_report`` arguments for this rule."""
        return {
            "alpha": self.alpha, "m_min": self.m_min, "psi_floor": self.psi_floor,
            "auc_floor": self.auc_floor, "max_rows": self.max_rows,
            "tests": world.tests if self.per_version else sec.tests,
            "evaluations": self.evaluations,
        }  # fmt: skip


BEFORE = Rule("before", 0.01, False, 1, 0.0, 0.0, 0, 200)
AFTER = Rule(
    "after", CONFIG.alpha, True, CONFIG.window_buckets, CONFIG.psi_floor, CONFIG.auc_floor,
    CONFIG.max_window_rows, CONFIG.min_window,
)  # fmt: skip
# The after rule's error control alone (its floors at 0): what the floors add is the rest.
UNFLOORED = Rule(
    "after, floors 0", AFTER.alpha, True, AFTER.evaluations, 0.0, 0.0, AFTER.max_rows,
    AFTER.m_min,
)  # fmt: skip
RULES = (BEFORE, UNFLOORED, AFTER)


@dataclass
class Stats:
    """The statistics of stacked windows of one section, shared by the rules."""

    m: NDArray[np.float64]  # [W, F]: rows in the window
    m_tested: NDArray[np.float64]  # [W, F]: rows the tests count (after the row cap)
    psi: NDArray[np.float64]
    z: NDArray[np.float64]
    auc: NDArray[np.float64]

    @classmethod
    def of(cls, sec: Section, counts: Counts, max_rows: int) -> Stats:
        cur = counts.astype(np.float64)
        m = cur.sum(axis=-1)
        tested = cur
        if max_rows > 0:
            rows = m[..., None]
            tested = np.where(rows > max_rows, cur * (max_rows / np.maximum(rows, 1.0)), cur)
        return cls(
            m, tested.sum(axis=-1), psi(sec.ref, tested), rank_z(sec.ref, tested),
            rank_auc(sec.ref, tested),
        )  # fmt: skip


def decide(world: World, sec: Section, st: Stats, rule: Rule) -> NDArray[np.bool_]:
    """``[W, F]``: which features alert, exactly as ``drift_report`` decides (``Checks``)."""
    family = world.tests if rule.per_version else sec.tests
    a = rule.alpha / (max(family, 1) * rule.evaluations)
    crit = np.array([chi2_isf(a, int(b) - 1) for b in sec.bins])
    with np.errstate(divide="ignore", invalid="ignore"):
        thr = np.where((sec.n > 0) & (st.m > 0), (1.0 / sec.n + 1.0 / st.m_tested) * crit, np.inf)
    enough = st.m >= rule.m_min
    psi_alert = enough & (st.psi > thr) & (st.psi >= rule.psi_floor)
    z = np.where(np.isfinite(st.z), st.z, 0.0)
    auc = np.where(np.isfinite(st.auc), st.auc, 0.5)
    rank_alert = (
        enough
        & sec.numeric
        & np.isfinite(st.z)
        & (np.abs(z) > z_critical(a))
        & np.isfinite(st.auc)
        & (np.abs(auc - 0.5) >= rule.auc_floor)
    )
    out: NDArray[np.bool_] = psi_alert | rank_alert
    return out


def feature_alerts(
    world: World, counts: list[Counts], rules: Sequence[Rule] = ()
) -> dict[str, list[NDArray[np.bool_]]]:
    """Per rule, per section: ``[W, F]`` feature alerts of the stacked windows ``counts``."""
    rules = rules or RULES
    out: dict[str, list[NDArray[np.bool_]]] = {r.name: [] for r in rules}
    for sec, c in zip(world.sections, counts, strict=True):
        stats: dict[int, Stats] = {}
        for rule in rules:
            if rule.max_rows not in stats:
                stats[rule.max_rows] = Stats.of(sec, c, rule.max_rows)
            out[rule.name].append(decide(world, sec, stats[rule.max_rows], rule))
    return out


def version_alerts(
    world: World, counts: list[Counts], rules: Sequence[Rule] = ()
) -> dict[str, NDArray[np.bool_]]:
    """Per rule, ``[W]``: the version alerts (any feature of any section)."""
    return {
        name: np.logical_or.reduce([f.any(axis=1) for f in per_section])
        for name, per_section in feature_alerts(world, counts, rules).items()
    }


def _bincounts(counts: Counts) -> BinCounts:
    f = counts.shape[0]
    zeros = np.zeros(f, dtype=np.int64)
    return BinCounts(counts.copy(), zeros, zeros.copy(), zeros.copy(), zeros * 0.0, zeros * 0.0)


class Checks:
    """Vectorised decisions against ``drift_report`` and ``ModelMonitor.report``."""

    def __init__(self) -> None:
        self.reports = 0
        self.monitor_reports = 0

    def check(self, world: World, counts: list[Counts], limit: int) -> None:
        w = min(limit, counts[0].shape[0])
        fast = feature_alerts(world, [c[:w] for c in counts])
        for rule in RULES:
            for s, (sec, c) in enumerate(zip(world.sections, counts, strict=True)):
                for i in range(w):
                    report = drift_report(sec.binning, _bincounts(c[i]), **rule.kwargs(world, sec))
                    slow = {f.name: f.alert for f in report.features}
                    got = {n: bool(fast[rule.name][s][i, sec.binning.row(n)]) for n in slow}
                    if got != slow:
                        raise AssertionError(f"{rule.name} {sec.key} window {i}: {got} != {slow}")
                    self.reports += 1

    def check_monitor(self, world: World, X: Rows) -> None:
        """The after rule equals what a version's monitor reports for the rows ``X``."""
        specs = [
            TensorSpec(o.name, "INT64" if "int64" in o.type else "FP32",
                       tuple(d if isinstance(d, int) else -1 for d in o.shape))
            for o in world.session.get_outputs()
        ]  # fmt: skip
        every_row = dataclasses.replace(CONFIG, sample_rows=0)  # X is one window, not a request
        monitor = ModelMonitor.build(
            (TensorSpec("X", "FP32", (-1, len(FEATURES))),), tuple(specs), every_row,
            world.profile, world.outputs, clock=lambda: 1_000.0,
        )  # fmt: skip
        assert monitor is not None
        monitor.observe({"X": X}, world.outputs, world.tensors(X)[1:], len(X))
        report = monitor.report(monitor.state(now=1_000.0))
        fast = bool(version_alerts(world, world.counts(X, [0, len(X)]), [AFTER])[AFTER.name][0])
        if fast != report["alert"]:
            raise AssertionError(f"ModelMonitor.report says {report['alert']}, the rule {fast}")
        self.monitor_reports += 1


# ---------------------------------------------------------------------------------------------
# statistics of the results


def upper95(k: int, n: int) -> float:
    """One-sided 95 % Clopper–Pearson upper bound on a rate seen k times in n trials."""
    if k >= n:
        return 1.0
    i = np.arange(k + 1)
    logc = np.array([math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) for j in i])

    def cdf(p: float) -> float:
        return float(np.exp(logc + i * math.log(p) + (n - i) * math.log1p(-p)).sum())

    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if mid <= 0 or cdf(mid) > 0.05:
            lo = mid
        else:
            hi = mid
    return hi


def pct(k: int, n: int, bound: bool = False) -> str:
    text = f"{100 * k / n:.2f} %"
    if bound:
        text += f" (≤ {100 * upper95(k, n):.2f})"
    return text


# ---------------------------------------------------------------------------------------------
# experiments


@dataclass
class Row:
    experiment: str
    setting: str
    m: str
    trials: str
    cells: list[str]  # one per rule in RULES


def rates(world: World, counts: list[Counts], bound: bool) -> list[str]:
    hits = version_alerts(world, counts)
    w = counts[0].shape[0]
    return [pct(int(hits[r.name].sum()), w, bound) for r in RULES]


def false_alarms(world: World, seeds: Seeds, windows: int, checks: Checks) -> list[Row]:
    rows = []
    for m in SIZES:
        counts = world.windows(m, windows, lambda rows, _: draw(rows, seeds()))
        checks.check(world, counts, 30)
        checks.check_monitor(world, draw(m, seeds()))
        rows.append(Row("(a) false alarms per report", "undrifted", f"{m:,}",
                        f"{windows:,} windows", rates(world, counts, True)))  # fmt: skip
    return rows


def per_hour(world: World, seeds: Seeds, hours: int, checks: Checks) -> list[Row]:
    """A Poisson stream counted in 10 s slices. A report at the end of a slice sees the 59
    newest full minutes and the current minute so far (``WindowedCounts.window``); one a
    minute sees the 60 newest full minutes. Hour 0 fills the window and is not counted."""
    slices = 6  # per minute: 10 s each
    width = CONFIG.window_buckets  # buckets (minutes) per window, and minutes per hour
    cadences = {"60 s": slice(slices - 1, None, slices), "10 s": slice(None)}
    g = np.arange(width * slices) + width * slices  # the current hour's slices in `both`
    first = (g // slices - (width - 1)) * slices  # the window's first slice
    out = []
    for hourly in (1_000, 5_000):
        rate = hourly / 60  # rows a minute
        rng = np.random.default_rng(seeds())
        alarms = {(r.name, c): 0 for r in RULES for c in cadences}
        hits = {(r.name, c): 0 for r in RULES for c in cadences}
        reports = dict.fromkeys(cadences, 0)
        sizes: list[float] = []
        previous: list[Counts] | None = None
        for hour in range(hours + 1):
            cuts = np.concatenate([[0], np.cumsum(rng.poisson(rate / slices, width * slices))])
            current = world.counts(draw(int(cuts[-1]), seeds()), cuts.tolist())
            if previous is not None:
                stacked = []
                for p, c in zip(previous, current, strict=True):
                    both = np.concatenate([p, c])
                    cum = np.concatenate([np.zeros_like(both[:1]), np.cumsum(both, axis=0)])
                    stacked.append(cum[g + 1] - cum[first])  # [360, F, B]
                sizes += stacked[0][cadences["60 s"], 0].sum(axis=-1).tolist()
                if hour == 1:
                    checks.check(world, [s[::36] for s in stacked], 10)
                alerts = version_alerts(world, stacked)
                for cadence, pick in cadences.items():
                    reports[cadence] += len(g[pick])
                    for rule in RULES:
                        hit = alerts[rule.name][pick]
                        hits[(rule.name, cadence)] += int(hit.sum())
                        alarms[(rule.name, cadence)] += int(hit.any())
            previous = current
        for cadence in cadences:
            n = reports[cadence]
            cells = [
                f"{pct(alarms[(r.name, cadence)], hours, True)} of hours; "
                f"{pct(hits[(r.name, cadence)], n)} of reports"
                for r in RULES
            ]
            out.append(
                Row("(b) false alarms per hour", f"{rate:.1f} rows/min, a report every {cadence}",
                    f"≈ {np.mean(sizes):,.0f}", f"{hours:,} h, {n:,} reports", cells)
            )  # fmt: skip
    return out


def power(world: World, seeds: Seeds, windows: int, checks: Checks) -> list[Row]:
    col_shift, col_rare = FEATURES.index(SHIFTED), FEATURES.index(RARE)
    p = world.rare_rate

    def shifted(d: float) -> Callable[[int, int], Rows]:
        def make(rows: int, _: int) -> Rows:
            X = draw(rows, seeds())
            X[:, col_shift] += np.float32(d * world.std[SHIFTED])
            return X

        return make

    def rare(q: float) -> Callable[[int, int], Rows]:
        def make(rows: int, _: int) -> Rows:
            seed = seeds()
            X = draw(rows, seed)
            flip = np.random.default_rng([seed, 1]).random(rows) < (q - p) / (1 - p)
            X[flip, col_rare] = 1.0
            return X

        return make

    cases = [(f"{SHIFTED} +{d} sd", shifted(d)) for d in (0.1, 0.25, 0.5)]
    cases += [(f"{RARE} {100 * p:.1f} % → {100 * q:.1f} %", rare(q)) for q in (3 * p, 0.5)]
    out = []
    for label, make in cases:
        for m in SIZES:
            counts = world.windows(m, windows, make)
            checks.check(world, counts, 3)
            out.append(Row("(c) power", label, f"{m:,}", f"{windows:,} windows",
                           rates(world, counts, False)))  # fmt: skip
    return out


def seasonal(world: World, seeds: Seeds, days: int, checks: Checks) -> list[Row]:
    out = []
    for shape, names in SEASONAL.items():
        cols = [FEATURES.index(f) for f in names]
        amplitude = np.array([0.1 * world.std[f] for f in names], dtype=np.float32)

        def make(rows: int, i: int, cols: list[int] = cols, amp: Any = amplitude) -> Rows:
            seed = seeds()
            X = draw(rows, seed)
            hour = i % 24 + np.random.default_rng([seed, 2]).random(rows)  # arrival times
            wave = np.sin(2 * np.pi * hour / 24).astype(np.float32)
            X[:, cols] += wave[:, None] * amp
            return X

        for m in (1_000, 5_000):
            count = 24 * days
            counts = world.windows(m, count, make)
            checks.check(world, counts, 3)
            out.append(
                Row("(d) daily seasonality", f"±0.1 sd on {' and '.join(names)} ({shape})",
                    f"{m:,}", f"{count:,} hourly windows ({days} days)",
                    rates(world, counts, True))
            )  # fmt: skip
    return out


def replayed(world: World, seeds: Seeds, sets: int, checks: Checks) -> list[Row]:
    holdout = world.windows(1_200, sets, lambda rows, _: draw(rows, seeds()))
    out = []
    for k in (4, 10):
        counts = [k * c for c in holdout]
        checks.check(world, counts, 3)
        cells = []
        for per_section in feature_alerts(world, counts).values():
            hit = np.logical_or.reduce([f.any(axis=1) for f in per_section])
            n_feat = sum(f.sum(axis=1) for f in per_section)
            cells.append(
                f"{pct(int(hit.sum()), sets, True)}; features alerting: mean "
                f"{float(np.mean(n_feat)):.1f}, max {int(np.max(n_feat))}"
            )
        out.append(Row("(d) replayed hold-out set", f"1,200 fresh rows sent {k}×",
                       f"{1_200 * k:,}", f"{sets:,} sets", cells))  # fmt: skip
    return out


def sampled(world: World, seeds: Seeds, windows: int, checks: Checks) -> list[Row]:
    """Windows of 5 or 20 requests (``SAMPLE_REQUESTS``) of ``SAMPLE_BATCH`` rows each, binned
    whole or through ``[monitoring] sample_rows``: every k-th row of a request from a random
    start, k = ceil(rows / sample_rows), as ``ModelMonitor.sample`` takes them. The same draws for
    every sample size; the tests see the rows binned (m below), as the server's do."""
    col = FEATURES.index(SHIFTED)
    caps = (0, *SAMPLE_ROWS)
    out = []
    for n_requests, d in ((r, d) for r in SAMPLE_REQUESTS for d in (0.0, 0.25)):
        per_cap: dict[int, list[list[Counts]]] = {cap: [] for cap in caps}
        chunk = max(1, 250 // n_requests)  # windows per model call
        for start in range(0, windows, chunk):
            k = min(chunk, windows - start)
            requests = [draw(SAMPLE_BATCH, seeds()) for _ in range(k * n_requests)]
            starts = np.random.default_rng(seeds()).random(len(requests))
            for X in requests:
                X[:, col] += np.float32(d * world.std[SHIFTED])
            for cap in caps:
                step = -(-SAMPLE_BATCH // cap) if cap else 1
                taken = [X[int(u * step) :: step] for X, u in zip(requests, starts, strict=True)]
                m = n_requests * len(taken[0])
                per_cap[cap].append(
                    world.counts(np.concatenate(taken), [m * i for i in range(k + 1)])
                )
        for cap in caps:
            counts = [np.concatenate([p[s] for p in per_cap[cap]]) for s in range(3)]
            checks.check(world, counts, 3)
            m = int(counts[0][0, 0].sum())
            setting = f"{SHIFTED} +{d} sd" if d else "undrifted"
            rows = f"{n_requests} × {SAMPLE_BATCH:,} rows, sample_rows {cap or 'off'}"
            out.append(Row("(e) sampled requests", f"{setting}; {rows}", f"{m:,}",
                           f"{windows:,} windows", rates(world, counts, not d)))  # fmt: skip
    return out


def table(rows: list[Row]) -> str:
    lines = [
        "| experiment | setting | m (rows/window) | trials | "
        + " | ".join(r.name for r in RULES)
        + " |",
        "|---|---|---|---|" + "---|" * len(RULES),
    ]
    lines += [
        f"| {r.experiment} | {r.setting} | {r.m} | {r.trials} | {' | '.join(r.cells)} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (few windows)")
    parser.add_argument("--windows", type=int, default=2_000, help="windows per m in (a)")
    parser.add_argument("--hours", type=int, default=2_000, help="hours per stream in (b)")
    parser.add_argument("--power-windows", type=int, default=1_000, help="windows per case (c)")
    parser.add_argument("--days", type=int, default=84, help="days of hourly windows in (d)")
    parser.add_argument("--sets", type=int, default=2_000, help="replayed hold-out sets in (d)")
    parser.add_argument("--sample-windows", type=int, default=1_000, help="windows per case (e)")
    parser.add_argument("--only", default="abcde", help="experiments to run, e.g. e")
    args = parser.parse_args(argv)
    if args.quick:
        args.windows, args.hours, args.power_windows, args.days, args.sets = 100, 4, 40, 2, 100
        args.sample_windows = 50
    started = time.perf_counter()
    checks, seeds = Checks(), Seeds(1_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        world = World(Path(tmp))
    inputs = world.sections[0]
    print(
        f"drift_power {date.today()}: python {platform.python_version()}, numpy "
        f"{np.__version__}, onnxruntime {ort.__version__}; n = {N_REF:,}; sections "
        f"{', '.join(f'{s.key} ({s.tests} tests)' for s in world.sections)}; {RARE} "
        f"{100 * world.rare_rate:.2f} %, {int(inputs.bins[inputs.binning.row(RARE)])} populated "
        f"reference bins; after: alpha {AFTER.alpha} over {world.tests} tests × "
        f"{AFTER.evaluations} evaluations, psi_floor {AFTER.psi_floor}, auc_floor "
        f"{AFTER.auc_floor}, max_window_rows {AFTER.max_rows}\n",
        flush=True,
    )
    steps: list[tuple[str, Callable[[], list[Row]]]] = [
        ("a", lambda: false_alarms(world, seeds, args.windows, checks)),
        ("b", lambda: per_hour(world, seeds, args.hours, checks)),
        ("c", lambda: power(world, seeds, args.power_windows, checks)),
        ("d", lambda: seasonal(world, seeds, args.days, checks)),
        ("d", lambda: replayed(world, seeds, args.sets, checks)),
        ("e", lambda: sampled(world, seeds, args.sample_windows, checks)),
    ]
    rows: list[Row] = []
    for name, step in steps:
        if name not in args.only:
            continue
        t0 = time.perf_counter()
        rows += step()
        print(f"({name}) {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    print(table(rows))
    print(
        f"\nchecked: {checks.reports:,} section reports decide as drift_report does, "
        f"{checks.monitor_reports} windows as ModelMonitor.report does; "
        f"{time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
