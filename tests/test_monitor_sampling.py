"""Large requests bin a bounded sample of their rows ([monitoring] sample_rows).

The sample's fairness is checked over many draws against a binomial bound; the windows'
counts against a direct numpy binning of the rows sampled; the drift test's window size
against the rows binned, not the rows claimed.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from scipy import stats

from mlserve.config import ConfigError, MonitoringConfig, parse_model_config, parse_model_toml
from mlserve.demo import build_demo
from mlserve.monitoring import build_profile
from mlserve.monitoring.monitor import ModelMonitor
from mlserve.runtime.tensors import TensorSpec

from .conftest import running_server
from .support.metrics import parse

INPUTS = (TensorSpec("X", "FP32", (-1, 3)),)
OUTPUTS = (TensorSpec("label", "INT64", (-1,)), TensorSpec("score", "FP32", (-1, 2)))
NAMES = ["label", "score"]


def make_monitor(sample_rows: int, seed: int = 0) -> tuple[ModelMonitor, dict]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2000, 3)).astype(np.float32)
    label = rng.integers(0, 3, 2000)
    score = rng.random((2000, 2)).astype(np.float32)
    profile = build_profile(x, ["a", "b", "c"], outputs={"label": label, "score": score})
    config = MonitoringConfig(sample_rows=sample_rows, min_window=10)
    monitor = ModelMonitor.build(INPUTS, OUTPUTS, config, profile, NAMES)
    assert monitor is not None
    return monitor, profile


def numeric_counts(values: np.ndarray, entry: dict) -> np.ndarray:
    """Value bins of one numeric feature, computed directly: bin = #edges <= x."""
    edges = np.asarray(entry["edges"], dtype=np.float64)
    bins = np.searchsorted(edges, values.astype(np.float64), side="right")
    return np.bincount(bins, minlength=len(edges) + 1)


def level_counts(values: np.ndarray, levels: list) -> np.ndarray:
    codes = [levels.index(v) if v in levels else len(levels) for v in values.tolist()]
    return np.bincount(codes, minlength=len(levels) + 1)


@pytest.mark.parametrize(("rows", "cap"), [(1000, 128), (1001, 128), (300, 7), (129, 128)])
def test_every_row_is_taken_with_the_same_chance(rows: int, cap: int) -> None:
    """Over many draws each row's times taken stays inside its binomial bound (level 1e-3
    across all rows, Bonferroni), at most ``cap`` rows a draw."""
    monitor, _ = make_monitor(cap)
    step = -(-rows // cap)
    trials = 4000
    taken = np.zeros(rows, dtype=np.int64)
    for _ in range(trials):
        idx = np.arange(rows)[monitor.sample(rows)]
        assert 0 < len(idx) <= cap
        taken[idx] += 1
    level = 1e-3 / rows
    low = stats.binom.ppf(level / 2, trials, 1 / step)
    high = stats.binom.isf(level / 2, trials, 1 / step)
    assert low <= taken.min() and taken.max() <= high, (taken.min(), taken.max(), low, high)
    # And the total is what the inclusion probability says: rows / step per draw on average.
    assert abs(taken.sum() / trials - rows / step) < 1.0


def test_windows_count_exactly_the_rows_sampled_of_every_tensor() -> None:
    """A 1,000-row request with sample_rows = 128: each section's window equals a direct
    binning of the same sampled rows (every 8th from one start) of its own tensor."""
    monitor, profile = make_monitor(128)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1000, 3)).astype(np.float32)
    label = rng.integers(0, 5, 1000)  # 3 and 4 are "other"
    score = rng.random((1000, 2)).astype(np.float32)
    monitor.observe({"X": x}, NAMES, [label, score], 1000)
    state = monitor.state()
    sections = state["sections"]
    window = np.asarray(sections["inputs"]["window"]["counts"])
    assert window[0].sum() == 125  # ceil(1000 / 128) = 8: rows start, start + 8, ...
    features = profile["features"]
    starts = [
        s
        for s in range(8)
        if all(
            np.array_equal(window[j, : len(f["edges"]) + 1], numeric_counts(x[s::8, j], f))
            for j, f in enumerate(features)
        )
    ]
    assert len(starts) == 1, starts
    start = starts[0]
    levels = profile["outputs"]["label"][0]["levels"]
    label_window = np.asarray(sections["label"]["window"]["counts"])[0]
    assert np.array_equal(label_window[: len(levels) + 1], level_counts(label[start::8], levels))
    score_window = np.asarray(sections["score"]["window"]["counts"])
    for j, entry in enumerate(profile["outputs"]["score"]):
        expect = numeric_counts(score[start::8, j], entry)
        assert np.array_equal(score_window[j, : len(expect)], expect)
    assert state["sampling"] == {"rows": 1000, "binned": 125}


def test_the_drift_test_counts_the_rows_binned_not_the_rows_claimed() -> None:
    """Sampled windows give the test the sampled n: its window count, and a threshold that
    is (1/n + 1/m) chi2 with m the rows binned."""
    sampled, _ = make_monitor(100)
    every, _ = make_monitor(0)
    rng = np.random.default_rng(2)
    for _ in range(10):
        x = rng.standard_normal((1000, 3)).astype(np.float32)
        outputs = [rng.integers(0, 3, 1000), rng.random((1000, 2)).astype(np.float32)]
        sampled.observe({"X": x}, NAMES, outputs, 1000)
        every.observe({"X": x}, NAMES, outputs, 1000)
    s_report = sampled.report(sampled.state())
    e_report = every.report(every.state())
    s_feature = s_report["sections"]["inputs"]["features"][0]
    e_feature = e_report["sections"]["inputs"]["features"][0]
    assert s_feature["window_count"] == 1000  # 10 requests x 100 rows
    assert e_feature["window_count"] == 10_000
    for feature, m in ((s_feature, 1000), (e_feature, 10_000)):
        n = feature["reference_count"]
        assert feature["psi_threshold"] == pytest.approx((1 / n + 1 / m) * feature["psi_critical"])
    assert s_report["sampling"] == {"sample_rows": 100, "rows": 10_000, "binned": 1000}
    assert e_report["sampling"] == {"sample_rows": 0, "rows": 10_000, "binned": 10_000}


def test_small_requests_are_binned_whole() -> None:
    monitor, profile = make_monitor(128)
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((n, 3)).astype(np.float32) for n in (1, 5, 128, 64)]
    for x in xs:
        monitor.observe(
            {"X": x}, NAMES, [np.zeros(len(x), np.int64), np.zeros((len(x), 2))], len(x)
        )
    window = np.asarray(monitor.state()["sections"]["inputs"]["window"]["counts"])
    whole = np.concatenate(xs)
    for j, f in enumerate(profile["features"]):
        assert np.array_equal(window[j, : len(f["edges"]) + 1], numeric_counts(whole[:, j], f))


def test_sample_rows_in_model_toml() -> None:
    config = parse_model_config(parse_model_toml(b"[monitoring]\nsample_rows = 64\n"))
    assert config.monitoring.sample_rows == 64
    assert parse_model_config(parse_model_toml(b"")).monitoring.sample_rows == 256
    with pytest.raises(ConfigError, match=r"\[monitoring\] sample_rows must be 0 \(every row\)"):
        parse_model_config(parse_model_toml(b"[monitoring]\nsample_rows = -1\n"))


@pytest.mark.slow
def test_a_server_counts_every_row_and_bins_a_sample(tmp_path: Path) -> None:
    """Over real HTTP: a 1,000-row request is counted whole (rows counter) and binned as 250
    rows (ceil(1000 / 256) = 4), which the monitor endpoint reports."""
    registry = build_demo(tmp_path / "demo")
    x = np.random.default_rng(4).standard_normal((1000, 20)).astype(np.float32)
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1000, 20],
                        "data": x.ravel().tolist()}]}  # fmt: skip
    with running_server(registry) as srv, httpx.Client(base_url=srv.url, timeout=30) as client:
        r = client.post("/v2/models/credit-risk/versions/1/infer", json=body)
        assert r.status_code == 200, r.text
        drift = client.get("/v2/models/credit-risk/versions/1/monitor").json()
        report = drift["versions"]["1"]["drift"]
        assert report["sampling"] == {"sample_rows": 256, "rows": 1000, "binned": 250}
        for section in report["sections"].values():
            assert {f["window_count"] for f in section["features"]} == {250}
        metrics = client.get("/metrics").text
    rows = parse(metrics).value("mlserve_inference_rows_total", model="credit-risk", version="1")
    assert rows == 1000, rows
