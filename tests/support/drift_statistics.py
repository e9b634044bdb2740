"""One feature's drift window (:class:`Window`) and what a replica's drift rule makes of it
(:func:`statistics`), computed with mlserve's own functions: the expected values the
Prometheus rules and the fleet's replicas are checked against."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from mlserve.monitoring import drift as mlserve_drift


@dataclass
class Window:
    """One feature's drift inputs: window and reference counts in bin order (value bins, then
    missing), midranks (numeric features), psi_critical, and its version's rule."""

    window: np.ndarray
    reference: np.ndarray
    midranks: np.ndarray | None
    psi_critical: float
    rule: dict[str, float]


def statistics(w: Window) -> dict[str, float]:
    """The replica's rule (``drift_report``) on one window, with mlserve's own functions."""
    rule = w.rule
    ref, m = w.reference, float(w.window.sum())
    n = float(ref.sum())
    out: dict[str, float] = {"window_rows": m}
    # The fixture's rule is the one mlserve would export for it.
    a = rule["alpha_per_test"]
    assert rule["z_critical"] == pytest.approx(mlserve_drift.z_critical(a), rel=1e-9)
    bins = max(int(np.count_nonzero(ref)), 2)
    want = mlserve_drift.psi_threshold(n, n, bins, a) / (2 / n)
    assert w.psi_critical == pytest.approx(want, rel=1e-9), "psi_critical is not chi2(1 - a)"
    if m <= 0 or n <= 0:
        return out
    cap = rule.get("max_window_rows", 0.0)
    tested = w.window * (cap / m) if 0 < cap < m else w.window
    m_t = float(tested.sum())
    out["window_rows_capped"] = m_t
    out["psi"] = float(mlserve_drift.psi(ref, tested))
    out["psi_threshold"] = (1.0 / n + 1.0 / m_t) * w.psi_critical
    numeric = w.midranks is not None
    z = auc = math.nan
    if numeric:
        assert w.midranks is not None
        assert w.midranks.tolist() == mlserve_drift.midranks(ref).tolist()
        z = float(mlserve_drift.rank_z(ref, tested))
        auc = float(mlserve_drift.rank_auc(ref, tested))
        if math.isfinite(auc):
            out["auc"] = auc
        if math.isfinite(z):
            out["rank_z"] = z
    enough = m >= rule["min_window"]
    psi_alert = out["psi"] > out["psi_threshold"] and out["psi"] >= rule["psi_floor"]
    rank_alert = (
        numeric
        and math.isfinite(z)
        and abs(z) > rule["z_critical"]
        and abs(auc - 0.5) >= rule["auc_floor"]
    )
    out["alert"] = 1.0 if enough and (psi_alert or rank_alert) else 0.0
    return out
