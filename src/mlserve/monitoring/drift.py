"""Drift from bin counts: the statistics (PSI, Jensen–Shannon, binned KS, the rank test,
chi-square), the significant-and-large alert rule (``drift_report``) and time-windowed counts
that merge by addition across workers and replicas. Definitions, the empty-bin rule and the
error control are in docs/drift-statistics.md; the measured rates in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._chi2 import chi2_isf, chi2_sf
from .binning import Binning
from .kernel import BinCounts

__all__ = [
    "PSI_PSEUDO_COUNT",
    "ChiSquare",
    "DriftReport",
    "FeatureDrift",
    "WindowedCounts",
    "binned_ks",
    "chi_square",
    "drift_report",
    "js_distance",
    "merge",
    "midranks",
    "psi",
    "psi_threshold",
    "rank_auc",
    "rank_z",
    "section_tests",
    "z_critical",
]

PSI_PSEUDO_COUNT = 1.0

Floats = NDArray[np.float64]


# ---------------------------------------------------------------------------------------------
# statistics


def _pair(ref_counts: ArrayLike, cur_counts: ArrayLike) -> tuple[Floats, Floats]:
    ref = np.asarray(ref_counts, dtype=np.float64)
    cur = np.asarray(cur_counts, dtype=np.float64)
    if ref.ndim == 0 or cur.ndim == 0 or ref.shape[-1] != cur.shape[-1]:
        raise ValueError(f"count arrays must share their last (bin) axis: {ref.shape}, {cur.shape}")
    if np.any(ref < 0) or np.any(cur < 0):
        raise ValueError("counts must be non-negative")
    return ref, cur


def _proportions(counts: Floats) -> Floats:
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts / total, np.nan)


def psi(
    ref_counts: ArrayLike, cur_counts: ArrayLike, pseudo_count: float = PSI_PSEUDO_COUNT
) -> Floats:
    """Population stability index of the window against the reference (see module doc).

    ``pseudo_count`` is added to every bin populated on either side; 0 gives the raw PSI,
    infinite when a bin is empty on one side only.
    """
    if not pseudo_count >= 0:
        raise ValueError(f"pseudo_count must be >= 0, got {pseudo_count}")
    ref, cur = _pair(ref_counts, cur_counts)
    ref, cur = np.broadcast_arrays(ref, cur)
    active = (ref + cur) > 0
    p = _proportions(np.where(active, ref + pseudo_count, 0.0))
    q = _proportions(np.where(active, cur + pseudo_count, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(active, (q - p) * np.log(q / p), 0.0)
    empty = (ref.sum(axis=-1) == 0) | (cur.sum(axis=-1) == 0)
    result: Floats = np.where(empty, np.nan, terms.sum(axis=-1))
    return result


def js_distance(ref_counts: ArrayLike, cur_counts: ArrayLike) -> Floats:
    """Jensen–Shannon distance (natural log) between the two count distributions."""
    ref, cur = _pair(ref_counts, cur_counts)
    p, q = _proportions(ref), _proportions(cur)
    m = (p + q) / 2.0

    def kl(a: Floats) -> Floats:
        with np.errstate(invalid="ignore", divide="ignore"):
            terms = np.where(a > 0, a * np.log(a / m), 0.0)
        out: Floats = np.where(np.isnan(a), np.nan, terms).sum(axis=-1)
        return out

    result: Floats = np.sqrt(np.maximum((kl(p) + kl(q)) / 2.0, 0.0))
    return result


def binned_ks(ref_counts: ArrayLike, cur_counts: ArrayLike) -> Floats:
    """Max |ΔCDF| over the bin edges, the missing bin (last column) excluded."""
    ref, cur = _pair(ref_counts, cur_counts)
    f = np.cumsum(_proportions(ref[..., :-1]), axis=-1)
    g = np.cumsum(_proportions(cur[..., :-1]), axis=-1)
    result: Floats = np.abs(f - g).max(axis=-1, initial=0.0)
    return result


def rank_z(ref_counts: ArrayLike, cur_counts: ArrayLike) -> Floats:
    """Tie-corrected Wilcoxon–Mann–Whitney z of window vs reference, missing bin excluded.

    Positive when the window's values are larger. NaN when a side is empty or every value
    falls in one bin.
    """
    ref, cur = _pair(ref_counts, cur_counts)
    a, b = ref[..., :-1], cur[..., :-1]
    n, m = a.sum(axis=-1), b.sum(axis=-1)
    total = n + m
    below = np.cumsum(a, axis=-1) - a  # reference values in lower bins
    u = (b * (below + a / 2.0)).sum(axis=-1)  # pairs (ref < win), ties count half
    t = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        # Σ(t³ - t) / (N(N - 1)), factored so one bin holding everything gives exactly N + 1.
        big_n, big_n1 = total[..., None], total[..., None] - 1.0
        ties = ((t / big_n) * ((t - 1.0) / big_n1) * (t + 1.0)).sum(axis=-1)
        var = n * m / 12.0 * ((total + 1.0) - ties)
        z: Floats = np.where(var > 0, (u - n * m / 2.0) / np.sqrt(var), np.nan)
    return z


def rank_auc(ref_counts: ArrayLike, cur_counts: ArrayLike) -> Floats:
    """The rank test's effect size: P(window value > reference value), ties counting half,
    over the binned values (missing excluded). 0.5 when nothing moved; NaN when a side is
    empty. ``|auc - 0.5|`` is the common-language effect size of a location shift (a shift
    of d standard deviations of a normal feature gives about ``Φ(d / √2) - 0.5``).
    """
    ref, cur = _pair(ref_counts, cur_counts)
    a, b = ref[..., :-1], cur[..., :-1]
    n, m = a.sum(axis=-1), b.sum(axis=-1)
    below = np.cumsum(a, axis=-1) - a
    u = (b * (below + a / 2.0)).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc: Floats = np.where((n > 0) & (m > 0), u / (n * m), np.nan)
    return auc


def midranks(ref_counts: ArrayLike) -> Floats:
    """Per value bin: reference values in lower bins plus half of its own (missing
    excluded): a window's ``U = Σ counts · midranks``, the sum Prometheus can redo."""
    a = np.asarray(ref_counts, dtype=np.float64)[..., :-1]
    out: Floats = np.cumsum(a, axis=-1) - a / 2.0
    return out


class ChiSquare(NamedTuple):
    """A chi-square test of homogeneity: statistic, degrees of freedom and p-value."""

    statistic: Floats
    dof: NDArray[np.int64]
    pvalue: Floats


def chi_square(ref_counts: ArrayLike, cur_counts: ArrayLike) -> ChiSquare:
    """Chi-square test of homogeneity of the 2 × B table (reference, window).

    Columns zero in both rows are dropped; no continuity correction. NaN when a row is empty;
    statistic 0, p-value 1 when fewer than two columns remain.
    """
    ref, cur = _pair(ref_counts, cur_counts)
    ref, cur = np.broadcast_arrays(ref, cur)
    col = ref + cur
    keep = col > 0
    n = ref.sum(axis=-1, keepdims=True)
    m = cur.sum(axis=-1, keepdims=True)
    total = n + m
    with np.errstate(invalid="ignore", divide="ignore"):
        e_ref, e_cur = col * n / total, col * m / total
        terms = (ref - e_ref) ** 2 / e_ref + (cur - e_cur) ** 2 / e_cur
    empty = (n[..., 0] == 0) | (m[..., 0] == 0)
    stat = np.where(empty, np.nan, np.where(keep, terms, 0.0).sum(axis=-1))
    dof = np.maximum(keep.sum(axis=-1) - 1, 0).astype(np.int64)
    flat_stat, flat_dof = stat.reshape(-1), dof.reshape(-1)
    pvalue = np.array(
        [
            math.nan if math.isnan(s) else 1.0 if d == 0 else chi2_sf(float(s), float(d))
            for s, d in zip(flat_stat.tolist(), flat_dof.tolist(), strict=True)
        ],
        dtype=np.float64,
    ).reshape(stat.shape)
    return ChiSquare(np.where(dof > 0, stat, np.where(empty, np.nan, 0.0)), dof, pvalue)


@functools.lru_cache(maxsize=4096)
def _chi2_upper(alpha: float, df: int) -> float:
    return chi2_isf(alpha, df)


def z_critical(alpha: float) -> float:
    """``|z|`` above which the two-sided rank test rejects at level ``alpha`` (z² ~ χ²(1))."""
    return math.sqrt(_chi2_upper(float(alpha), 1))


def psi_threshold(n: float, m: float, bins: int, alpha: float) -> float:
    """``(1/n + 1/m) · χ²⁻¹(1 - alpha; bins - 1)``: PSI above it is drift at level ``alpha``."""
    if n <= 0 or m <= 0:
        raise ValueError(f"n and m must be positive, got {n}, {m}")
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return (1.0 / n + 1.0 / m) * _chi2_upper(float(alpha), int(bins) - 1)


def merge(*parts: BinCounts) -> BinCounts:
    """Counts of several windows, workers or replicas combined: exact addition."""
    if not parts:
        raise ValueError("merge needs at least one BinCounts")
    total = parts[0].copy()
    for p in parts[1:]:
        total.add_(p)
    return total


# ---------------------------------------------------------------------------------------------
# reports


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift over a window. Statistics are NaN while the window is empty."""

    name: str
    kind: str  # "numeric" | "categorical"
    psi: float
    js: float
    ks: float | None  # binned KS; numeric features only
    rank_z: float | None  # numeric features only
    rank_pvalue: float | None  # two-sided; numeric features only
    auc: float | None  # the rank test's effect: P(window > reference); numeric only
    chi2: float | None  # categorical features only
    chi2_dof: int | None
    chi2_pvalue: float | None
    psi_threshold: float  # inf until the window has rows
    psi_critical: float  # χ²⁻¹(1 - alpha_per_test; bins - 1): threshold / (1/n + 1/m)
    reference_count: int  # n
    window_count: int  # m (rows, missing included)
    missing: int  # window rows with this feature missing
    out_of_range: int  # window values outside the reference [min, max]
    significant: bool  # a test rejects at alpha_per_test (window of at least m_min rows)
    large: bool  # an effect reaches its floor (PSI ≥ psi_floor or |auc - 0.5| ≥ auc_floor)
    alert: bool  # significant and large, by the same test
    fired_by: str | None = None  # the test(s) that alert: "psi", "rank" or "psi+rank"


@dataclass(frozen=True)
class DriftReport:
    """Drift of every feature of one section over one window, with the alert rule's inputs."""

    features: tuple[FeatureDrift, ...]
    alpha: float  # family-wise level over ``tests`` × ``evaluations``
    alpha_per_test: float  # alpha / (tests × evaluations) (Bonferroni)
    tests: int
    m_min: int
    evaluations: int = 1
    psi_floor: float = 0.0
    auc_floor: float = 0.0
    max_rows: int = 0  # 0: no cap
    z_critical: float = math.inf

    @property
    def alert(self) -> bool:
        """True when any feature alerts."""
        return any(f.alert for f in self.features)

    @property
    def alerting(self) -> tuple[str, ...]:
        """Names of the features that alert."""
        return tuple(f.name for f in self.features if f.alert)

    def feature(self, name: str) -> FeatureDrift:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"no feature named {name!r} in this report")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN and infinity become None)."""

        def clean(v: Any) -> Any:
            return None if isinstance(v, float) and not math.isfinite(v) else v

        return {
            "alert": self.alert,
            "alpha": self.alpha,
            "alpha_per_test": self.alpha_per_test,
            "tests": self.tests,
            "evaluations": self.evaluations,
            "m_min": self.m_min,
            "psi_floor": self.psi_floor,
            "auc_floor": self.auc_floor,
            "max_rows": self.max_rows,
            "z_critical": clean(self.z_critical),
            "features": [{k: clean(v) for k, v in asdict(f).items()} for f in self.features],
        }


def section_tests(binning: Binning) -> int:
    """Tests one report of this section runs: 2 per numeric feature, 1 per categorical."""
    return 2 * binning.n_numeric + (binning.n_features - binning.n_numeric)


def drift_report(
    binning: Binning,
    window: BinCounts,
    *,
    alpha: float = 0.01,
    m_min: int = 200,
    psi_floor: float = 0.0,
    auc_floor: float = 0.0,
    max_rows: int = 0,
    tests: int | None = None,
    evaluations: int = 1,
) -> DriftReport:
    """Compare ``window`` with ``binning.reference`` feature by feature; apply the alert rule.

    A feature alerts when its window holds ``m_min`` rows or more and a test is both
    significant at ``alpha / (tests × evaluations)`` and large: PSI above its calibrated
    threshold and at least ``psi_floor``, or (numeric features) the rank test's |z| above
    ``z_critical`` and ``|auc - 0.5|`` at least ``auc_floor``. ``tests``: the family the
    error is controlled over (default: this section's; a version's monitor passes the sum
    over its sections); ``evaluations``: distinct decisions per window length.
    ``max_rows`` > 0 scales a larger window's counts down to that many rows first.
    """
    if binning.reference is None:
        raise ValueError("the binning has no reference counts (build it from a profile)")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if evaluations < 1:
        raise ValueError(f"evaluations must be >= 1, got {evaluations}")
    ref, cur = binning.reference, window.counts
    if cur.shape != ref.shape:
        raise ValueError(f"window counts have shape {cur.shape}, the reference {ref.shape}")
    k = binning.n_numeric
    family = max(section_tests(binning) if tests is None else tests, 1)
    a = alpha / (family * evaluations)
    z_crit = z_critical(a)
    # Python lists: the loop below then touches no numpy scalars.
    n, m = ref.sum(axis=1).tolist(), cur.sum(axis=1).tolist()
    tested = cur.astype(np.float64)
    if max_rows > 0:
        rows = cur.sum(axis=1, keepdims=True).astype(np.float64)
        tested = np.where(rows > max_rows, tested * (max_rows / np.maximum(rows, 1.0)), tested)
    m_tested = tested.sum(axis=1).tolist()
    populated = np.count_nonzero(ref, axis=1).tolist()
    psis, jss = psi(ref, tested).tolist(), js_distance(ref, tested).tolist()
    kss, zs = binned_ks(ref, tested).tolist(), rank_z(ref, tested).tolist()
    aucs = rank_auc(ref, tested).tolist()
    chi = chi_square(ref[k:], tested[k:])  # categorical rows only
    chi_stat, chi_dof, chi_p = chi.statistic.tolist(), chi.dof.tolist(), chi.pvalue.tolist()
    missing = cur[:, -1].tolist()
    out_of_range = (window.out_low + window.out_high).tolist()
    features = []
    for row in binning.section_rows:
        numeric = row < k
        n_i, m_i = int(n[row]), int(m[row])
        bins = max(populated[row], 2)
        crit = _chi2_upper(float(a), bins - 1)
        thr = (1.0 / n_i + 1.0 / m_tested[row]) * crit if n_i > 0 and m_i > 0 else math.inf
        z, auc = zs[row], aucs[row]
        p_rank = math.erfc(abs(z) / math.sqrt(2.0)) if numeric and math.isfinite(z) else None
        enough = m_i >= m_min
        psi_sig = enough and psis[row] > thr
        psi_large = psis[row] >= psi_floor
        rank_sig = enough and numeric and math.isfinite(z) and abs(z) > z_crit
        rank_large = numeric and math.isfinite(auc) and abs(auc - 0.5) >= auc_floor
        features.append(
            FeatureDrift(
                name=binning.names[row],
                kind=binning.kinds[row],
                psi=psis[row],
                js=jss[row],
                ks=kss[row] if numeric else None,
                rank_z=z if numeric else None,
                rank_pvalue=p_rank,
                auc=auc if numeric else None,
                chi2=None if numeric else chi_stat[row - k],
                chi2_dof=None if numeric else chi_dof[row - k],
                chi2_pvalue=None if numeric else chi_p[row - k],
                psi_threshold=thr,
                psi_critical=crit,
                reference_count=n_i,
                window_count=m_i,
                missing=missing[row],
                out_of_range=out_of_range[row],
                significant=psi_sig or rank_sig,
                large=psi_large or rank_large,
                alert=(psi_sig and psi_large) or (rank_sig and rank_large),
                fired_by="+".join(
                    name
                    for name, fired in (
                        ("psi", psi_sig and psi_large),
                        ("rank", rank_sig and rank_large),
                    )
                    if fired
                )
                or None,
            )
        )
    return DriftReport(
        tuple(features), alpha, a, family, m_min, evaluations, psi_floor, auc_floor, max_rows,
        z_crit,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# windows


class WindowedCounts:
    """A ring of time buckets of ``BinCounts`` for one section: the live window.

    Time is cut into buckets of ``bucket_seconds`` (bucket id = floor(now / bucket_seconds));
    the ring keeps the newest ``window_buckets`` of them. ``add_batch`` moves the ring forward
    to the current bucket (zeroing the buckets it reuses) and bins the rows into it with the
    kernel; a batch stamped earlier than the current bucket goes into the current bucket.
    ``window`` sums the newest buckets that are still inside the window at ``now``, so
    buckets expire even when no traffic arrives. Thread-safe: one lock, held for the
    kernel call or the sum.
    """

    def __init__(
        self,
        binning: Binning,
        *,
        bucket_seconds: float = 60.0,
        window_buckets: int = 60,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not bucket_seconds > 0:
            raise ValueError(f"bucket_seconds must be > 0, got {bucket_seconds}")
        if window_buckets < 1:
            raise ValueError(f"window_buckets must be >= 1, got {window_buckets}")
        self.binning = binning
        self._counter = binning.clone()  # its own kernel binding: other owners cannot move it
        self.bucket_seconds = float(bucket_seconds)
        self.window_buckets = int(window_buckets)
        self._clock = clock
        self._buckets = [binning.zeros() for _ in range(self.window_buckets)]
        self._ids: list[int | None] = [None] * self.window_buckets
        self._current: int | None = None
        self._bucket = self._buckets[0]  # the current bucket's counts
        self._retired = binning.zeros()  # buckets that left the ring, for ``total``
        self._lock = threading.Lock()

    def _bucket_id(self, now: float | None) -> int:
        return math.floor((self._clock() if now is None else now) / self.bucket_seconds)

    def add_batch(self, X: ArrayLike, now: float | None = None) -> None:
        """Bin the rows of ``X`` into the bucket of time ``now`` (default: the clock's)."""
        bid = self._bucket_id(now)
        lock = self._lock
        lock.acquire()
        try:
            if self._current is None or bid > self._current:
                self._advance(bid)
            self._counter.count(X, out=self._bucket)
        finally:
            lock.release()

    def _advance(self, bid: int) -> None:
        """Make ``bid`` the current bucket, zeroing the slots of the buckets it skips to."""
        cur = self._current
        first = bid if cur is None else max(cur + 1, bid - self.window_buckets + 1)
        for i in range(first, bid + 1):
            slot = i % self.window_buckets
            if self._ids[slot] is not None:  # leaving the ring: keep it in the running total
                self._retired.add_(self._buckets[slot])
            self._buckets[slot].clear()
            self._ids[slot] = i
        self._current = bid
        self._bucket = self._buckets[bid % self.window_buckets]

    def window(self, n_buckets: int | None = None, now: float | None = None) -> BinCounts:
        """Counts summed over the newest ``n_buckets`` buckets (default: all) up to ``now``."""
        w = self.window_buckets if n_buckets is None else int(n_buckets)
        if not 1 <= w <= self.window_buckets:
            raise ValueError(f"n_buckets must be in 1..{self.window_buckets}, got {n_buckets}")
        bid = self._bucket_id(now)
        total = self.binning.zeros()
        with self._lock:
            for slot, i in enumerate(self._ids):
                if i is not None and bid - w < i <= bid:
                    total.add_(self._buckets[slot])
        return total

    def total(self) -> BinCounts:
        """Everything counted since start (or ``reset``): the ring plus retired buckets."""
        total = self._retired.copy()
        with self._lock:
            for slot, i in enumerate(self._ids):
                if i is not None:
                    total.add_(self._buckets[slot])
        return total

    def reset(self) -> None:
        """Forget every bucket."""
        with self._lock:
            for b in self._buckets:
                b.clear()
            self._retired.clear()
            self._ids = [None] * self.window_buckets
            self._current = None
            self._bucket = self._buckets[0]
