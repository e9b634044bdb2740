"""Profiles made in float64 for an FP32 input (written before publish cast the reference to
the model's types) are rounded to FP32 at load, so undrifted traffic does not alarm.

The issue's own case: scikit-learn's diabetes data, profiled from float64 (as a CSV gives it),
served to a model that takes FP32. Before: ``s4`` PSI 1.14 and ``sex`` thousands of values
out of range on the reference rows themselves.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.datasets import load_diabetes

from mlserve.config import MonitoringConfig
from mlserve.monitoring.binning import Binning
from mlserve.monitoring.monitor import ModelMonitor
from mlserve.monitoring.profile import build_profile, in_precision
from mlserve.runtime.tensors import TensorSpec


def test_in_precision_rounds_edges_and_merges_bins_that_collapse() -> None:
    edges = [0.1, 0.1 + 1e-12, 0.5, 2.0]  # the first two round to the same float32
    entry = {
        "name": "x", "kind": "numeric", "column": 0, "n": 10, "missing": 0,
        "counts": [1, 2, 3, 1, 3], "edges": edges, "mean": 0.7, "std": 1.0,
        "min": 0.1 + 3e-12, "max": 2.5, "median": 0.3,
    }  # fmt: skip
    (got,) = in_precision([entry], [np.float32])
    f32 = [float(np.float32(e)) for e in edges]
    assert got["edges"] == [f32[0], f32[2], f32[3]]
    assert got["counts"] == [1, 2 + 3, 1, 3]  # [e0, e1) is empty once rounded: merged upward
    assert got["min"] == float(np.float32(0.1 + 3e-12)) and got["mean"] == 0.7
    # float64 inputs and categorical entries are left as they are
    assert in_precision([entry], [np.float64]) == [entry]
    exact = {**entry, "edges": f32[:1] + f32[2:], "counts": [1, 5, 1, 3], "min": f32[0]}
    assert in_precision([exact], [np.float32]) == [exact]  # medians are left alone


def _max_psi_and_out_of_range(monitor: ModelMonitor) -> tuple[float, int, list[str]]:
    report = monitor.report(monitor.state())["sections"]["inputs"]
    feats = report["features"]
    psi = max(f["psi"] for f in feats if f["psi"] is not None)
    return psi, sum(f["out_of_range"] for f in feats), [f["name"] for f in feats if f["alert"]]


@pytest.mark.parametrize("legacy", [True, False])
def test_undrifted_fp32_traffic_on_a_float64_profile(
    legacy: bool, caplog: pytest.LogCaptureFixture
) -> None:
    raw = load_diabetes()
    X64 = raw.data  # float64, as read from a CSV
    names = [str(n) for n in raw.feature_names]
    profile = build_profile(X64 if legacy else X64.astype(np.float32), names)
    spec = TensorSpec("X", "FP32", (-1, X64.shape[1]))
    config = MonitoringConfig(min_window=200)
    with caplog.at_level(logging.WARNING, logger="mlserve.monitoring"):
        monitor = ModelMonitor.build((spec,), (), config, profile)
    assert monitor is not None
    assert ("profiled in float64" in caplog.text) == legacy
    x = np.tile(X64.astype(np.float32), (4, 1))  # the reference rows, as FP32 requests
    for start in range(0, len(x), 64):
        monitor.observe({"X": x[start : start + 64]}, [], [], len(x[start : start + 64]))
    psi, out_of_range, alerts = _max_psi_and_out_of_range(monitor)
    assert out_of_range == 0 and alerts == [] and psi < 0.001
    # Exactly: every bin holds four times its reference count.
    binning = monitor.sections[0].binning
    window = np.asarray(monitor.state()["sections"]["inputs"]["window"]["counts"])
    assert binning.reference is not None
    np.testing.assert_array_equal(window, 4 * binning.reference)
    # What the issue saw without the rounding: the same rows against the raw float64 edges.
    if legacy:
        raw_counts = Binning(profile["features"]).count(x)
        assert int((raw_counts.out_low + raw_counts.out_high).sum()) >= 1000  # of 1,768 rows
