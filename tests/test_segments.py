"""Drift per segment ([monitoring] segment_by): drift confined to one segment is seen.

A model that is not the demo's: a logistic regression on scikit-learn's wine data, with a
reference of fresh rows from a normal distribution fitted to it. One tenant (a request
parameter) or one level of a feature sends shifted rows; the whole traffic's window dilutes
the shift below the alert rule while the segment's window shows it. Through the real server
for the parameter, in process for the feature.
"""

from __future__ import annotations

import json
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
from mlserve.errors import ConfigError, ModelLoadError
from mlserve.monitoring.monitor import ModelMonitor
from mlserve.monitoring.profile import build_profile, save_profile
from mlserve.runtime.tensors import TensorSpec

from .conftest import running_server

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
        '[monitoring]\nsegment_by = "parameters.tenant"\nmax_segments = 3\n'
    )
    return {"root": root, "draw": draw, "names": names, "profile": profile}


def _std(draw: Any) -> np.ndarray:
    return np.asarray(draw(np.random.default_rng(0), 20_000), np.float64).std(axis=0)


def test_drift_of_one_tenant_is_seen_in_its_segment_only(wine: dict[str, Any]) -> None:
    draw, names = wine["draw"], wine["names"]
    rng = np.random.default_rng(7)
    shift = np.zeros(len(names), np.float32)
    shift[0] = 1.0 * _std(draw)[0]  # alcohol, one standard deviation, for tenant "b" only
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
        send(draw(rng, 250) + shift, "b")  # tenant "b": 250 shifted rows
        for i, tenant in enumerate(["c", "d", "e", None]):  # beyond max_segments: "other"
            send(draw(rng, 50 + i), tenant)
        drift = client.get("/v2/models/wine/versions/1/monitor").json()
        report = drift["versions"]["1"]["drift"]
        segments = report["segments"]
        assert segments["by"] == "parameters.tenant"
        by_name = segments["segments"]
        assert sorted(by_name) == ["a", "b", "c", "other"]  # three segments, then "other"
        assert by_name["a"]["features"][0]["window_count"] == 9 * 250
        assert by_name["other"]["features"][0]["window_count"] == 51 + 52 + 53
        assert segments["alerting"] == {"b": [names[0]]}
        alcohol_b = by_name["b"]["features"][0]
        assert alcohol_b["alert"] and abs(alcohol_b["auc"] - 0.5) >= 0.05
        # The whole traffic: the shift is a tenth of the rows, below the effect floors.
        whole = report["sections"]["inputs"]["features"][0]
        assert not whole["alert"], whole
        assert abs(whole["auc"] - 0.5) < 0.05
        metrics = client.get("/metrics").text
        assert 'mlserve_segment_drift_alert{model="wine",version="1",segment="b"} 1' in metrics
        assert 'mlserve_segment_drift_alert{model="wine",version="1",segment="a"} 0' in metrics


def _monitor(profile: dict[str, Any], config: MonitoringConfig) -> ModelMonitor:
    width = len(profile["features"])
    monitor = ModelMonitor.build((TensorSpec("input", "FP32", (-1, width)),), (), config, profile)
    assert monitor is not None
    return monitor


def test_segment_by_a_feature_splits_rows_by_its_value() -> None:
    draw, names, _ = _sampler()
    rng = np.random.default_rng(3)
    reference = np.asarray(draw(rng, N_REF), np.float64)
    region = rng.integers(0, 2, N_REF).astype(np.float64)  # a two-level feature
    profile = build_profile(np.column_stack([reference, region]), [*names, "region"])
    config = MonitoringConfig(segment_by="region")
    monitor = _monitor(profile, config)
    rows = np.asarray(draw(rng, 4_000), np.float64)
    regions = rng.integers(0, 2, 4_000).astype(np.float64)
    rows[regions == 1, 1] += 1.5 * reference[:, 1].std()  # malic_acid, region 1 only
    batch = np.column_stack([rows, regions]).astype(np.float32)
    monitor.observe({"input": batch}, (), [], len(batch))
    state = json.loads(json.dumps(monitor.state()))  # what workers exchange
    report = monitor.report(state)
    segments = report["segments"]
    assert sorted(segments["segments"]) == ["0", "1"]
    counts = {k: r["features"][0]["window_count"] for k, r in segments["segments"].items()}
    assert counts == {"0": int((regions == 0).sum()), "1": int((regions == 1).sum())}
    assert segments["alerting"] == {"1": [names[1]]}
    # The reference's region split; the segment's windows count exactly its rows.
    seg1 = monitor.segments
    assert seg1 is not None
    window = seg1.windows["1"].window()
    assert int(window.counts[0].sum()) == int((regions == 1).sum())


def test_segment_by_names_what_it_cannot_find() -> None:
    draw, names, _ = _sampler()
    profile = build_profile(np.asarray(draw(np.random.default_rng(0), 500)), names)
    with pytest.raises(
        ModelLoadError, match=r"segment_by = 'regoin' is not a feature.*parameters\."
    ):
        _monitor(profile, MonitoringConfig(segment_by="regoin"))
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
