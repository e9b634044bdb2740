"""The drift alert rule (commit c0d109b): one error budget per version, alerts that need a
large change, and the row cap — measured by simulation on fresh draws.

Reference data that is not the demo's: scikit-learn's bundled wine and diabetes features,
with fresh rows drawn from a multivariate normal fitted to them (every window a new draw,
never a resample of the reference). Each statistical test runs the rule before c0d109b on
the same windows as a control — ``drift_report`` with its defaults, per section (no floors,
the section's own tests, one evaluation), the version alerting when any section does — and
checks that it fails where the issue says it was wrong, so the test can fail.
``benchmarks/drift_power.py`` measures the same on the demo's data at full size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats
from sklearn.datasets import load_diabetes, load_wine

from mlserve.config import MonitoringConfig
from mlserve.monitoring import Binning, build_profile, drift_report
from mlserve.monitoring.drift import psi, section_tests
from mlserve.monitoring.kernel import BinCounts
from mlserve.monitoring.monitor import ModelMonitor
from mlserve.runtime.tensors import TensorSpec

N_REF = 10_000
DEFAULTS = MonitoringConfig()


class Source:
    """Fresh rows from a multivariate normal fitted to a bundled data set's features."""

    def __init__(self, loader: Callable[..., object]) -> None:
        bunch = loader()
        data = np.asarray(bunch.data, dtype=np.float64)  # type: ignore[attr-defined]
        self.names = [str(n) for n in bunch.feature_names]  # type: ignore[attr-defined]
        self.mean = data.mean(axis=0)
        cov = np.cov(data, rowvar=False)
        self.sd = np.sqrt(np.diag(cov))
        self.chol = np.linalg.cholesky(cov)

    def draw(self, rng: np.random.Generator, rows: int) -> np.ndarray:
        z = rng.standard_normal((rows, len(self.mean)))
        return (self.mean + z @ self.chol.T).astype(np.float32)

    def binning(self, rng: np.random.Generator) -> Binning:
        return Binning(build_profile(self.draw(rng, N_REF), self.names)["features"])


WINE = Source(load_wine)
DIABETES = Source(load_diabetes)


def before_alert(binning: Binning, window: BinCounts) -> bool:
    """The rule before c0d109b: the current drift_report's defaults reproduce it."""
    return drift_report(binning, window, alpha=0.01, m_min=200).alert


def after_alert(binning: Binning, window: BinCounts, **overrides: float) -> bool:
    """A one-section version's alert at the [monitoring] defaults (``ModelMonitor.report``)."""
    c = DEFAULTS
    kwargs = {
        "alpha": c.alpha, "m_min": c.min_window, "psi_floor": c.psi_floor,
        "auc_floor": c.auc_floor, "max_rows": c.max_window_rows,
        "tests": section_tests(binning), "evaluations": c.window_buckets, **overrides,
    }  # fmt: skip
    return drift_report(binning, window, **kwargs).alert  # type: ignore[arg-type]


def seasonal_window(
    source: Source, rng: np.random.Generator, rows: int, hour: int, cols: tuple[int, int]
) -> np.ndarray:
    """An hour's rows under a daily seasonality of ±0.1 sd on two features: each row is
    shifted by the sine at its own arrival time."""
    X = source.draw(rng, rows)
    t = hour + rng.random(rows)
    wave = np.sin(2 * np.pi * t / 24)[:, None]
    X[:, list(cols)] += (0.1 * source.sd[list(cols)] * wave).astype(np.float32)
    return X


def exceeds(hits: int, trials: int, alpha: float, level: float = 1e-3) -> bool:
    """True when ``hits`` in ``trials`` is too many for a rate of ``alpha`` (one-sided)."""
    return hits > stats.binom.ppf(1 - level, trials, alpha)


# ---------------------------------------------------------------------------------------------
# error control for the version


OUTPUTS = (TensorSpec("label", "INT64", (-1,)), TensorSpec("score", "FP32", (-1,)))
OUTPUT_NAMES = ["label", "score"]


def _version(rows: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """A version with three sections and a short family (7 tests): inputs bmi and bp, a
    3-level label cut from s5 and a score from s1 (other columns than the inputs, so the
    sections are far from identical and the union over them matters)."""
    names = DIABETES.names
    x = rows[:, [names.index("bmi"), names.index("bp")]]
    label = np.digitize(rows[:, names.index("s5")], [-0.02, 0.02]).astype(np.int64)
    score = rows[:, names.index("s1")].astype(np.float32)
    return np.ascontiguousarray(x), [label, score]


class Version:
    """A version's monitor on a clock the test moves."""

    def __init__(self, rng: np.random.Generator, config: MonitoringConfig) -> None:
        x, (label, score) = _version(DIABETES.draw(rng, N_REF))
        profile = build_profile(x, ["bmi", "bp"], outputs={"label": label, "score": score})
        self.now = 0.0
        monitor = ModelMonitor.build(
            (TensorSpec("X", "FP32", (-1, 2)),), OUTPUTS, config, profile, OUTPUT_NAMES,
            clock=lambda: self.now,
        )  # fmt: skip
        assert monitor is not None
        self.monitor = monitor

    def observe(self, rows: np.ndarray, now: float) -> dict:
        """Count ``rows`` at time ``now``; the monitor's state then."""
        self.now = now
        x, outputs = _version(rows)
        self.monitor.observe({"X": x}, OUTPUT_NAMES, outputs, len(x))
        return self.monitor.state(now=now)


def _sections(version: Version, state: dict) -> list[tuple[Binning, BinCounts]]:
    """Each section's binning and window, as the monitor's report reads them."""
    out = []
    for s in version.monitor.sections:
        w = state["sections"][s.key]["window"]
        arrays = [np.asarray(w[k]) for k in ("counts", "out_low", "out_high", "n_finite")]
        window = BinCounts(*arrays, np.asarray(w["sums"]), np.asarray(w["sumsq"]))
        out.append((s.binning, window))
    return out


@pytest.mark.slow
def test_version_false_alarms_within_alpha_across_three_sections() -> None:
    """alpha = 0.2 for the version (inputs, label, score: 7 tests), one evaluation, no
    floors, 800 fresh windows of 500 rows through ``ModelMonitor.report``: the version's
    false alarms stay within alpha (one-sided binomial, level 1e-3). The control, alpha per
    section and any section alerting, breaks that bound (measured: 0.155 after, 0.42
    before with this seed)."""
    config = MonitoringConfig(
        alpha=0.2, window_buckets=1, psi_floor=0.0, auc_floor=0.0, sample_rows=0
    )
    rng = np.random.default_rng(101)
    version = Version(rng, config)
    assert sum(section_tests(s.binning) for s in version.monitor.sections) == 7
    trials, after, before = 800, 0, 0
    for i in range(trials):
        now = 60.0 * (i + 1) + 1.0  # a bucket of its own: the window holds this draw only
        state = version.observe(DIABETES.draw(rng, 500), now)
        report = version.monitor.report(state)
        assert all(r["tests"] == 7 and r["evaluations"] == 1 for r in report["sections"].values())
        after += report["alert"]
        before += any(
            drift_report(b, w, alpha=0.2, m_min=200).alert for b, w in _sections(version, state)
        )
    print("version false alarms: after", after / trials, "before", before / trials)
    assert not exceeds(after, trials, 0.2), after / trials
    assert exceeds(before, trials, 0.2), before / trials  # the control fails the bound


@pytest.mark.slow
def test_false_alarms_per_window_length_within_alpha_when_every_bucket_reports() -> None:
    """A window of 6 buckets reported at the end of every bucket: the version's false
    alarms per window length (any of its 6 reports) stay within alpha = 0.2, because each
    test runs at alpha / (tests × 6). With one evaluation the same stream alarms in far
    more window lengths than alpha (measured: 0.12 and 0.47 with this seed)."""
    config = MonitoringConfig(
        alpha=0.2, window_buckets=6, psi_floor=0.0, auc_floor=0.0, sample_rows=0
    )
    rng = np.random.default_rng(102)
    version = Version(rng, config)
    lengths, per_bucket = 250, 100
    after = once = 0
    for length in range(lengths + 1):
        hit_after = hit_once = False
        for b in range(6):
            now = 60.0 * (6 * length + b) + 30.0
            state = version.observe(DIABETES.draw(rng, per_bucket), now)
            if length == 0:
                continue  # the first window length fills the window
            hit_after |= version.monitor.report(state)["alert"]
            hit_once |= any(
                drift_report(bn, w, alpha=0.2, m_min=200, tests=7).alert
                for bn, w in _sections(version, state)
            )
        after += hit_after
        once += hit_once
    print("per window length: after", after / lengths, "one evaluation", once / lengths)
    assert not exceeds(after, lengths, 0.2), after / lengths
    assert exceeds(once, lengths, 0.2), once / lengths


# ---------------------------------------------------------------------------------------------
# alerts that mean something: seasonality and replays do not alert, a real shift does


@pytest.mark.slow
def test_daily_seasonality_does_not_alert_at_the_default_floors() -> None:
    """±0.1 sd daily seasonality on two wine features, hourly windows of 5,000 rows across
    10 days (240 windows): at most 1 % alert at the defaults (measured: 0). The control
    alerts in most hours (measured: 0.61), as the issue reports for the rule before."""
    rng = np.random.default_rng(103)
    binning = WINE.binning(rng)
    cols = (WINE.names.index("alcohol"), WINE.names.index("color_intensity"))
    after = before = 0
    trials = 240
    for i in range(trials):
        window = binning.count(seasonal_window(WINE, rng, 5_000, i % 24, cols))
        after += after_alert(binning, window)
        before += before_alert(binning, window)
    print("seasonality: after", after / trials, "before", before / trials)
    assert after <= 0.01 * trials
    assert before >= 0.3 * trials


def test_a_replayed_hold_out_set_does_not_alert_at_the_default_floors() -> None:
    """1,200 fresh diabetes rows sent 4 times into one window (a load test looping over a
    hold-out split), 200 sets: the copies are not independent rows, which the significance
    tests assume, but the effect floors stay silent (measured: 0). The control alerts on
    most sets, several features each (measured: 1.0, 4.0 features on average)."""
    rng = np.random.default_rng(104)
    binning = DIABETES.binning(rng)
    after = before = 0
    features = 0
    trials = 200
    for _ in range(trials):
        once = binning.count(DIABETES.draw(rng, 1_200))
        window = BinCounts(*(4 * a for a in once.arrays()))
        after += after_alert(binning, window)
        report = drift_report(binning, window, alpha=0.01, m_min=200)
        before += report.alert
        features += len(report.alerting)
    print("replay: after", after / trials, "before", before / trials, "features", features / trials)
    assert after <= 0.01 * trials
    assert before >= 0.5 * trials


@pytest.mark.slow
def test_a_quarter_sd_shift_alerts_at_5000_rows() -> None:
    """A +0.25 sd shift in one wine feature at m = 5,000 (200 windows): the default floors
    (|AUC - 0.5| ≈ 0.07 against a floor of 0.05) and the version's budget still catch it in
    at least 95 % of windows (measured: 1.0)."""
    rng = np.random.default_rng(105)
    binning = WINE.binning(rng)
    j = WINE.names.index("magnesium")
    hits = 0
    trials = 200
    for _ in range(trials):
        X = WINE.draw(rng, 5_000)
        X[:, j] += np.float32(0.25 * WINE.sd[j])
        report = drift_report(
            binning, binning.count(X), psi_floor=DEFAULTS.psi_floor,
            auc_floor=DEFAULTS.auc_floor, evaluations=DEFAULTS.window_buckets,
        )  # fmt: skip
        hits += "magnesium" in report.alerting
    print("quarter sd shift caught", hits / trials)
    assert hits >= 0.95 * trials, hits / trials


# ---------------------------------------------------------------------------------------------
# what a report carries, and the row cap


def test_reports_carry_the_effect_size_beside_the_p_value() -> None:
    """Each numeric feature reports its rank test's p-value, its effect (auc: P(window >
    reference)) and PSI, with the parts of the decision: significant, large, alert. A
    0.5 sd shift of a normal feature has AUC ≈ Φ(0.5 / √2) = 0.638 (binned: a little less);
    an unshifted one ≈ 0.5."""
    rng = np.random.default_rng(106)
    X = rng.standard_normal((N_REF, 3)).astype(np.float32)
    levels = rng.integers(0, 3, N_REF)
    ref = np.column_stack([X, levels])
    binning = Binning(build_profile(ref, ["a", "b", "c", "k"], categorical=["k"])["features"])
    win = np.column_stack([rng.standard_normal((5_000, 3)), rng.integers(0, 3, 5_000)])
    win[:, 0] += 0.5
    counts = binning.count(win.astype(np.float32))
    report = drift_report(
        binning, counts, psi_floor=0.1, auc_floor=0.05, tests=7, evaluations=60
    ).to_dict()
    feats = {f["name"]: f for f in report["features"]}
    a, b, k = feats["a"], feats["b"], feats["k"]
    expected = stats.norm.cdf(0.5 / math.sqrt(2))
    assert expected - 0.03 < a["auc"] < expected + 0.005
    assert a["rank_pvalue"] < 1e-12 and a["significant"] and a["large"] and a["alert"]
    assert a["psi"] == pytest.approx(float(psi(binning.reference[0], counts.counts[0])))
    assert abs(b["auc"] - 0.5) < 0.02 and not b["large"] and not b["alert"]
    assert b["rank_pvalue"] is not None and b["psi"] is not None
    assert k["auc"] is None and k["rank_pvalue"] is None and k["psi"] is not None
    assert (report["psi_floor"], report["auc_floor"], report["tests"]) == (0.1, 0.05, 7)
    assert report["evaluations"] == 60
    assert report["alpha_per_test"] == pytest.approx(0.01 / (7 * 60))


@pytest.mark.slow
def test_the_row_cap_silences_a_huge_seasonal_window_even_without_floors() -> None:
    """A busy model: 100,000 rows an hour under the ±0.1 sd seasonality on two wine
    features, 48 hourly windows, no floors. Uncapped, the thresholds shrink with the window
    and most hours alert (measured: 0.67); with ``max_rows`` = 1,000 the tests count the
    window as 1,000 rows and the seasonality stops alerting (measured: 0)."""
    rng = np.random.default_rng(107)
    binning = WINE.binning(rng)
    cols = (WINE.names.index("alcohol"), WINE.names.index("color_intensity"))
    capped = uncapped = 0
    trials = 48
    for i in range(trials):
        window = binning.count(seasonal_window(WINE, rng, 100_000, i % 24, cols))
        capped += after_alert(binning, window, psi_floor=0.0, auc_floor=0.0, max_rows=1_000)
        uncapped += after_alert(binning, window, psi_floor=0.0, auc_floor=0.0)
    print("row cap: capped", capped / trials, "uncapped", uncapped / trials)
    assert capped <= 1
    assert uncapped >= trials // 4


def test_reports_name_the_test_that_fired() -> None:
    """An alert says which test fired: PSI, the rank test, or both (a red feature whose PSI
    sits below its floor was read as a PSI alert; new-user finding)."""
    rng = np.random.default_rng(21)
    ref = rng.normal(size=(20_000, 1))
    binning = Binning(build_profile(ref, ["x"])["features"])
    shifted = drift_report(
        binning, binning.count(rng.normal(0.25, 1.0, size=(20_000, 1))), psi_floor=0.1,
        auc_floor=0.05,
    ).feature("x")  # fmt: skip
    assert shifted.alert and shifted.fired_by == "rank" and shifted.psi < 0.1
    moved = drift_report(
        binning, binning.count(rng.normal(1.0, 1.0, size=(5_000, 1))), psi_floor=0.1,
        auc_floor=0.05,
    ).feature("x")  # fmt: skip
    assert moved.fired_by == "psi+rank"
    quiet = drift_report(binning, binning.count(rng.normal(size=(5_000, 1)))).feature("x")
    assert not quiet.alert and quiet.fired_by is None
