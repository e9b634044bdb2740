"""Drift per segment ([monitoring] segment_by): drift confined to one segment is seen.

A model that is not the demo's: a logistic regression on scikit-learn's wine data, with a
reference of fresh rows from a normal distribution fitted to it. One tenant (a request
parameter) or one level of a feature sends shifted rows; the whole traffic's window dilutes
the shift below the alert rule while the segment's window shows it. Through the real server
for the parameter, in process for the feature.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression

from mlserve.config import MonitoringConfig, parse_model_config
from mlserve.errors import ConfigError
from mlserve.monitoring.monitor import ModelMonitor
from mlserve.monitoring.profile import build_profile, save_profile
from mlserve.runtime.tensors import TensorSpec

from .conftest import running_server
from .support.metrics import parse

N_REF = 5_000


def _sampler() -> tuple[Any, list[str], Any]:
    data = load_wine()
    x = data.data.astype(np.float64)
    names = [n.replace("/", "_") for n in data.feature_names]
    mean, cov = x.mean(axis=0), np.cov(x, rowvar=False)

    def draw(rng: np.random.Generator, rows: int) -> np.ndarray:
        return rng.multivariate_normal(mean, cov, size=rows).astype(np.float32)

    model = LogisticRegression(max_iter=5000).fit(x, data.target)
    return draw, names, model


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    draw, names, model = _sampler()
    reference = draw(np.random.default_rng(1), N_REF)
    profile = build_profile(reference, names)
    proto = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, len(names)]))],
        options={id(model): {"zipmap": False}},
        target_opset=17,
    )
    root = tmp_path_factory.mktemp("segments")
    vdir = root / "wine" / "1"
    vdir.mkdir(parents=True)
    (vdir / "model.onnx").write_bytes(proto.SerializeToString())
    save_profile(profile, vdir / "reference.json")
    (root / "wine" / "model.toml").write_text(
        '[monitoring]\nsegment_by = "parameters.tenant"\nmax_segments = 3\nsample_rows = 0\n'
    )
    return {"root": root, "draw": draw, "names": names, "profile": profile}


def _std(draw: Any) -> np.ndarray:
    return np.asarray(draw(np.random.default_rng(0), 20_000), np.float64).std(axis=0)


@pytest.mark.slow
def test_drift_of_one_tenant_is_seen_in_its_segment_only(wine: dict[str, Any]) -> None:
    draw, names = wine["draw"], wine["names"]
    rng = np.random.default_rng(7)
    shift = np.zeros(len(names), np.float32)
    shift[0] = 0.6 * _std(draw)[0]  # alcohol, for tenant "b" only, after its baseline
    with running_server(wine["root"]) as srv, httpx.Client(base_url=srv.url) as client:

        def send(rows: np.ndarray, tenant: str | None) -> None:
            body: dict[str, Any] = {
                "inputs": [
                    {
                        "name": "input",
                        "shape": list(rows.shape),
                        "datatype": "FP32",
                        "data": rows.ravel().tolist(),
                    }
                ]
            }
            if tenant is not None:
                body["parameters"] = {"tenant": tenant}
            r = client.post("/v2/models/wine/infer", json=body)
            assert r.status_code == 200, r.text

        for _ in range(9):  # tenant "a": 9 × 250 undrifted rows
            send(draw(rng, 250), "a")
        for _ in range(4):  # tenant "b": its baseline (1,000 rows) as it always was ...
            send(draw(rng, 250), "b")
        for _ in range(4):  # ... then 1,000 shifted rows
            send(draw(rng, 250) + shift, "b")
        for i, tenant in enumerate(["c", "d", "e", None]):  # beyond max_segments: "(other)"
            send(draw(rng, 50 + i), tenant)
        drift = client.get("/v2/models/wine/versions/1/monitor").json()
        report = drift["versions"]["1"]["drift"]
        segments = report["segments"]
        assert segments["by"] == "parameters.tenant"
        by_name = segments["segments"]
        assert sorted(by_name) == ["(other)", "a", "b", "c"]  # three segments, then (other)
        assert segments["overflow_rows"] == 51 + 52 + 53
        assert by_name["a"]["features"][0]["window_count"] == 9 * 250
        assert by_name["a"]["baseline_rows"] == 1000 and not by_name["a"]["learning"]
        assert by_name["c"]["learning"] and by_name["c"]["baseline_rows"] == 50
        assert segments["alerting"] == {"b": [names[0]]}
        alcohol_b = by_name["b"]["features"][0]
        assert alcohol_b["alert"] and abs(alcohol_b["auc"] - 0.5) >= 0.05
        # The whole traffic: the shift is under a quarter of the rows, below the floors.
        whole = report["sections"]["inputs"]["features"][0]
        assert not whole["alert"], whole
        assert abs(whole["auc"] - 0.5) < 0.05
        metrics = client.get("/metrics").text
        alerts = parse(metrics).by(
            "mlserve_segment_drift_alert", "segment", model="wine", version="1"
        )
        assert alerts["b"] == 1 and alerts["a"] == 0, alerts


def _monitor(profile: dict[str, Any], config: MonitoringConfig) -> ModelMonitor:
    width = len(profile["features"])
    monitor = ModelMonitor.build((TensorSpec("input", "FP32", (-1, width)),), (), config, profile)
    assert monitor is not None
    return monitor


@pytest.mark.slow
def test_segment_by_a_feature_splits_rows_by_its_value() -> None:
    draw, names, _ = _sampler()
    rng = np.random.default_rng(3)
    reference = np.asarray(draw(rng, N_REF), np.float64)
    region = rng.integers(0, 2, N_REF).astype(np.float64)  # a two-level feature
    profile = build_profile(np.column_stack([reference, region]), [*names, "region"])
    config = MonitoringConfig(segment_by="region", sample_rows=0)  # every row of a batch
    monitor = _monitor(profile, config)
    before = np.asarray(draw(rng, 3_000), np.float64)  # each region's baseline, undrifted
    before_regions = rng.integers(0, 2, 3_000).astype(np.float64)
    rows = np.asarray(draw(rng, 4_000), np.float64)
    regions = rng.integers(0, 2, 4_000).astype(np.float64)
    rows[regions == 1, 1] += 1.5 * reference[:, 1].std()  # malic_acid, region 1 only
    for x, r in ((before, before_regions), (rows, regions)):
        batch = np.column_stack([x, r]).astype(np.float32)
        monitor.observe({"input": batch}, (), [], len(batch))
    state = json.loads(json.dumps(monitor.state()))  # what workers exchange
    segments = monitor.report(state)["segments"]
    assert sorted(segments["segments"]) == ["0", "1"]
    counts = {k: r["features"][0]["window_count"] for k, r in segments["segments"].items()}
    all_regions = np.concatenate([before_regions, regions])
    assert counts == {"0": int((all_regions == 0).sum()), "1": int((all_regions == 1).sum())}
    assert segments["alerting"] == {"1": [names[1]]}
    assert all(r["baseline_rows"] == 1000 for r in segments["segments"].values())


@pytest.mark.slow
def test_a_segment_that_always_differed_is_judged_against_itself() -> None:
    """Regions differ by nature: a region whose feature sits 1 sd above the other's in the
    reference and in the traffic alike has not drifted, and must not alert."""
    draw, names, _ = _sampler()
    rng = np.random.default_rng(5)
    sd = np.asarray(draw(rng, 20_000), np.float64).std(axis=0)

    def rows(n: int) -> np.ndarray:
        x = np.asarray(draw(rng, n), np.float64)
        region = rng.integers(0, 2, n).astype(np.float64)
        x[region == 1, 0] += sd[0]
        return np.column_stack([x, region])

    profile = build_profile(rows(N_REF), [*names, "region"])
    monitor = _monitor(profile, MonitoringConfig(segment_by="region"))
    traffic = rows(6_000).astype(np.float32)
    monitor.observe({"input": traffic}, (), [], len(traffic))
    report = monitor.report(monitor.state())
    assert not report["alert"]
    assert report["segments"]["alerting"] == {}, report["segments"]["alerting"]
    # The same traffic judged against the whole reference would have alerted on both.
    whole = report["sections"]["inputs"]["features"][0]
    assert not whole["alert"]


def test_segments_share_one_error_budget_and_release_idle_places() -> None:
    draw, names, _ = _sampler()
    rng = np.random.default_rng(9)
    profile = build_profile(np.asarray(draw(rng, N_REF)), names)
    now = [0.0]
    config = MonitoringConfig(
        segment_by="parameters.t", max_segments=2, bucket_seconds=1.0, window_buckets=3,
        sample_rows=0,
    )  # fmt: skip
    monitor = ModelMonitor.build(
        (TensorSpec("input", "FP32", (-1, len(names))),), (), config, profile,
        clock=lambda: now[0],
    )  # fmt: skip
    assert monitor is not None and monitor.segments is not None
    for tenant in ("squat-1", "squat-2"):  # two values seen once take both places
        monitor.observe({"input": draw(rng, 1)}, (), [], 1, tenant)
    monitor.observe({"input": draw(rng, 5)}, (), [], 5, "acme")
    assert sorted(monitor.segments.segments) == ["(other)", "squat-1", "squat-2"]
    assert monitor.segments.overflow_rows == 5
    now[0] = 10.0  # the squatters' rows have left the window: their places are free
    monitor.observe({"input": draw(rng, 5)}, (), [], 5, "acme")
    assert "acme" in monitor.segments.segments and "squat-1" not in monitor.segments.segments
    # Long values keep a digest: two that share their first 64 characters stay apart.
    a, b = "x" * 70 + "a", "x" * 70 + "b"
    assert monitor.segments.label(a) != monitor.segments.label(b)
    assert len(monitor.segments.label(a)) <= 64
    # The segments' budget is alpha over every segment's tests (max_segments + 1 of them).
    monitor.observe({"input": draw(rng, 1500)}, (), [], 1500, "acme")
    report = monitor.report(monitor.state())["segments"]["segments"]["acme"]
    assert report["tests"] == 2 * len(names) * 3
    assert report["alpha_per_test"] == pytest.approx(config.alpha / (2 * len(names) * 3 * 3))


def test_segment_by_names_what_it_cannot_find() -> None:
    draw, names, _ = _sampler()
    profile = build_profile(np.asarray(draw(np.random.default_rng(0), 500)), names)
    # A typo in a monitoring key must not take the model out of service: the version loads,
    # segments are off, and the report says why.
    typo = _monitor(profile, MonitoringConfig(segment_by="regoin"))
    assert typo.segments is None and typo.segment_error is not None
    assert re.search(r"segment_by = 'regoin' is not a feature.*parameters\.", typo.segment_error)
    assert typo.report(typo.state())["segments"]["error"] == typo.segment_error
    with pytest.raises(ConfigError, match=r"max_segments must be in 1\.\.64"):
        parse_model_config({"monitoring": {"segment_by": "parameters.t", "max_segments": 0}})
    with pytest.raises(ConfigError, match="segment_by must name a feature"):
        parse_model_config({"monitoring": {"segment_by": "parameters."}})


def test_segments_are_free_when_not_configured(tmp_path: Path) -> None:
    draw, names, _ = _sampler()
    profile = build_profile(np.asarray(draw(np.random.default_rng(0), 500)), names)
    monitor = _monitor(profile, MonitoringConfig())
    assert monitor.segments is None and monitor.segment_parameter is None
    monitor.observe({"input": draw(np.random.default_rng(1), 10)}, (), [], 10)
    assert "segments" not in monitor.state() and "segments" not in monitor.report(monitor.state())
