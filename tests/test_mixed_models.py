"""Multi-input (mixed-type) models: drift, explanations, the gate and payload export.

The model is a real scikit-learn Pipeline(ColumnTransformer(StandardScaler on the numeric
columns, OneHotEncoder on a text column), LogisticRegression) on the diabetes data (``sex``
as "F"/"M", target y > median), exported by skl2onnx with one ``[n, 1]`` input per column.
Numbers are checked against independent computations: scikit-learn's own predictions and
onnxruntime runs in-process.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlserve.attribution import Occlusion, plan
from mlserve.config import ModelConfig, MonitoringConfig
from mlserve.monitoring.monitor import ModelMonitor
from mlserve.monitoring.profile import build_profile, save_profile
from mlserve.runtime.columns import FeatureSchema
from mlserve.runtime.session import ModelSession

from .conftest import running_server, write_version

TEXT = "sex"


def _frame() -> tuple[Any, np.ndarray]:
    from sklearn.datasets import load_diabetes

    data = load_diabetes(as_frame=True)
    frame = data.frame.drop(columns="target")
    frame[TEXT] = np.where(frame[TEXT] > 0, "M", "F")
    return frame, (data.target > data.target.median()).to_numpy().astype(np.int64)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The fitted pipeline, its ONNX export in a registry with a reference profile, the
    model's session and schema, and the data."""
    pytest.importorskip("skl2onnx")
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame, y = _frame()
    numeric = [c for c in frame.columns if c != TEXT]
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), [TEXT]),
        ]
    )
    pipe = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=1000))]).fit(frame, y)
    types = [
        (c, StringTensorType([None, 1]) if c == TEXT else FloatTensorType([None, 1]))
        for c in frame.columns
    ]
    proto = convert_sklearn(
        pipe,
        initial_types=types,
        options={id(pipe): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    root = tmp_path_factory.mktemp("mixed") / "registry"
    vdir = write_version(root, "mixed", 1, proto)
    config = ModelConfig()
    session = ModelSession(
        "mixed", 1, vdir / "model.onnx", config.execution, config.inputs, 1 << 40
    )
    names = list(frame.columns)
    schema = FeatureSchema.from_inputs(session.inputs, names)
    assert schema is not None and not schema.single and schema.names == tuple(names)
    feeds = schema.feeds({c: frame[c].to_numpy() for c in names})
    label, proba = session.run(feeds)
    profile = build_profile(
        schema.table(feeds),
        schema.names,
        categorical=[TEXT],
        outputs={"label": label, "probabilities": proba},
    )
    save_profile(profile, vdir / "reference.json")
    return {
        "pipe": pipe,
        "frame": frame,
        "y": y,
        "root": root,
        "vdir": vdir,
        "session": session,
        "schema": schema,
        "feeds": feeds,
        "profile": profile,
    }


def _monitor(mixed: dict[str, Any], schema: FeatureSchema | None) -> ModelMonitor:
    session = mixed["session"]
    monitor = ModelMonitor.build(
        session.inputs,
        session.outputs,
        MonitoringConfig(),
        mixed["profile"],
        session.output_names,
        schema=schema,
    )
    assert monitor is not None
    return monitor


def _observe(monitor: ModelMonitor, mixed: dict[str, Any], feeds: dict[str, np.ndarray]) -> Any:
    """Observe ``feeds`` as requests of 1–5 rows (queued, flushed in batches); the report's
    inputs section."""
    session = mixed["session"]
    n = len(next(iter(feeds.values())))
    outputs = session.run(feeds)
    start = 0
    sizes = np.random.default_rng(0).integers(1, 6, n)

    async def main() -> None:
        nonlocal start
        for size in sizes:
            if start >= n:
                break
            part = {k: v[start : start + size] for k, v in feeds.items()}
            outs = [o[start : start + size] for o in outputs]
            monitor.observe(part, session.output_names, outs, len(outs[0]))
            start += int(size)

    asyncio.run(main())
    return monitor.report(monitor.state())["sections"]["inputs"]


def _alerting(section: dict[str, Any]) -> list[str]:
    return [f["name"] for f in section["features"] if f["alert"]]


@pytest.mark.parametrize("given", [True, False], ids=["schema", "derived"])
def test_drift_per_feature_by_name(mixed: dict[str, Any], given: bool) -> None:
    schema = mixed["schema"] if given else None
    feeds = mixed["feeds"]
    same = _observe(_monitor(mixed, schema), mixed, feeds)
    assert {f["name"] for f in same["features"]} == set(mixed["schema"].names)
    assert same["features"][0]["window_count"] == len(mixed["y"])
    assert not same["alert"] and _alerting(same) == []

    shifted = dict(feeds, bmi=feeds["bmi"] + np.float32(0.05))  # about one sd
    assert _alerting(_observe(_monitor(mixed, schema), mixed, shifted)) == ["bmi"]

    all_male = dict(feeds, sex=np.full_like(feeds["sex"], "M"))
    report = _observe(_monitor(mixed, schema), mixed, all_male)
    assert _alerting(report) == [TEXT]
    sex = next(f for f in report["features"] if f["name"] == TEXT)
    assert sex["chi2_pvalue"] < 1e-6


def test_unseen_categories_count_as_other(mixed: dict[str, Any]) -> None:
    feeds = mixed["feeds"]
    text = feeds[TEXT].copy()
    text[:40] = "X"  # not a reference level
    monitor = _monitor(mixed, mixed["schema"])
    _observe(monitor, mixed, dict(feeds, sex=text))
    section = monitor.state()["sections"]["inputs"]
    row = section["names"].index(TEXT)
    levels = next(e["levels"] for e in mixed["profile"]["features"] if e["name"] == TEXT)
    counts = section["total"][row]
    assert counts[len(levels)] == 40  # the "other" bin
    expected = [int((text[40:, 0] == level).sum()) for level in levels]
    assert counts[: len(levels)] == expected


def test_profile_that_names_other_inputs_is_a_load_failure(mixed: dict[str, Any]) -> None:
    from mlserve.errors import ModelLoadError

    profile = json.loads(json.dumps(mixed["profile"]))
    profile["features"][0]["name"] = "not_an_input"
    session = mixed["session"]
    with pytest.raises(ModelLoadError, match="not_an_input"):
        ModelMonitor.build(
            session.inputs,
            session.outputs,
            MonitoringConfig(),
            profile,
            session.output_names,
            schema=mixed["schema"],
        )


def test_explicit_features_input_still_selects_one_input(mixed: dict[str, Any]) -> None:
    session = mixed["session"]
    x = mixed["feeds"]["bmi"]
    profile = build_profile(x, ["bmi"])
    monitor = ModelMonitor.build(
        session.inputs,
        session.outputs,
        MonitoringConfig(features="bmi"),
        profile,
        session.output_names,
        schema=mixed["schema"],
    )
    assert monitor is not None and monitor.sections[0].source == "bmi"
    monitor.observe(mixed["feeds"], session.output_names, session.run(mixed["feeds"]), len(x))
    assert monitor.state()["sections"]["inputs"]["names"] == ["bmi"]


def test_explanations_equal_occlusion_computed_with_onnxruntime(mixed: dict[str, Any]) -> None:
    import onnxruntime as ort

    from mlserve.execution.runners import InlineRunner

    session = mixed["session"]
    occlusion = plan(session, MonitoringConfig(), mixed["profile"], mixed["schema"])
    assert isinstance(occlusion, Occlusion), occlusion
    derived = plan(session, MonitoringConfig(), mixed["profile"])
    assert isinstance(derived, Occlusion)
    assert derived.baseline.describe() == occlusion.baseline.describe()
    frame = mixed["frame"]
    baseline = {
        c: (frame[c].mode()[0] if c == TEXT else float(np.median(frame[c].to_numpy(np.float32))))
        for c in frame.columns
    }
    for name, value in zip(
        occlusion.baseline.feature_names, occlusion.baseline.values, strict=True
    ):
        assert value == (baseline[name] if name == TEXT else pytest.approx(baseline[name]))
    rows = frame.iloc[:7]
    feeds = {k: v[:7] for k, v in mixed["feeds"].items()}
    body, _, _ = asyncio.run(
        occlusion.explain(
            InlineRunner(session),
            occlusion.table(feeds),
            occlusion.outputs,
            session.limits,
        )
    )
    assert body["rows_evaluated"] == 7 * (len(frame.columns) + 1) + 1
    (out,) = body["outputs"]
    assert out["name"] == "probabilities"

    # Independently: f(x) − f(x with feature j := baseline), onnxruntime run per feature.
    ref = ort.InferenceSession(str(mixed["vdir"] / "model.onnx"))

    def proba(df: Any) -> np.ndarray:
        f = {
            c: df[c].to_numpy(object if c == TEXT else np.float32).reshape(-1, 1)
            for c in df.columns
        }
        return np.asarray(ref.run(["probabilities"], f)[0], dtype=np.float64)

    full = proba(rows)
    np.testing.assert_allclose(out["prediction"], full, rtol=1e-6)
    np.testing.assert_allclose(
        out["prediction"][:, 1], mixed["pipe"].predict_proba(rows)[:, 1], atol=1e-5
    )
    for j, name in enumerate(occlusion.baseline.feature_names):
        occluded = rows.copy()
        occluded[name] = baseline[name]
        np.testing.assert_allclose(
            out["attributions"][:, j], full - proba(occluded), atol=1e-6, err_msg=name
        )
    # the text feature moves the prediction for rows not already at its baseline
    sex = occlusion.baseline.feature_names.index(TEXT)
    differs = rows[TEXT].to_numpy() != baseline[TEXT]
    assert differs.any() and np.all(np.abs(out["attributions"][differs, sex, 1]) > 1e-4)
    assert np.all(out["attributions"][~differs, sex] == 0.0)


def test_mixed_model_served_with_drift_per_feature(mixed: dict[str, Any], tmp_path: Path) -> None:
    """A real server: [n, 1] inputs as today, drift per feature by name on /monitor; the
    payload log exports back into an evaluation set that validates like scikit-learn."""
    import httpx
    import pandas as pd

    from mlserve.execution.runners import InlineRunner
    from mlserve.governance.gate import validate_version
    from mlserve.governance.payload_export import export_payloads

    frame, y = mixed["frame"], mixed["y"]
    shifted = frame.copy()
    shifted["bmi"] = shifted["bmi"] + 0.05
    toml = mixed["root"] / "mixed" / "model.toml"
    toml.write_text("[payloads]\nsample = 1.0\n[gate]\nmin_accuracy = 0.5\n")
    payloads = tmp_path / "payloads"
    labels = ["id,row,label"]
    try:
        with (
            running_server(mixed["root"], "--payload-dir", str(payloads)) as server,
            httpx.Client(base_url=server.url) as client,
        ):
            for start in range(0, len(frame), 20):
                part = shifted.iloc[start : start + 20]
                inputs = [
                    {
                        "name": c,
                        "datatype": "BYTES" if c == TEXT else "FP32",
                        "shape": [len(part), 1],
                        "data": part[c].tolist(),
                    }
                    for c in frame.columns
                ]
                body = {"id": f"r{start}", "inputs": inputs}
                r = client.post("/v2/models/mixed/infer", json=body)
                assert r.status_code == 200, r.text
                predicted = next(o for o in r.json()["outputs"] if o["name"] == "label")
                assert predicted["data"] == mixed["pipe"].predict(part).tolist()
                labels += [f"r{start},{i},{y[start + i]}" for i in range(len(part))]
            r = client.get("/v2/models/mixed/monitor")
            assert r.status_code == 200, r.text
            section = r.json()["versions"]["1"]["drift"]["sections"]["inputs"]
            # explanations over HTTP equal the in-process occlusion (checked independently)
            r = client.post("/v2/models/mixed/explain", json={"inputs": inputs})
            assert r.status_code == 200, r.text
            explained = r.json()
        assert {f["name"] for f in section["features"]} == set(frame.columns)
        assert _alerting(section) == ["bmi"]
        assert explained["baseline"]["feature_names"] == list(mixed["schema"].names)
        occlusion = plan(mixed["session"], MonitoringConfig(), mixed["profile"])
        assert isinstance(occlusion, Occlusion)
        last = mixed["schema"].feeds({c: part[c].to_numpy() for c in frame.columns})
        body, _, _ = asyncio.run(
            occlusion.explain(
                InlineRunner(mixed["session"]),
                occlusion.table(last),
                occlusion.outputs,
                mixed["session"].limits,
            )
        )
        (served,) = explained["outputs"]
        np.testing.assert_allclose(served["attributions"], body["outputs"][0]["attributions"])

        (tmp_path / "labels.csv").write_text("\n".join(labels) + "\n")
        common = {"labels": tmp_path / "labels.csv", "registry": mixed["root"]}
        with pytest.raises(ValueError, match="parquet"):
            export_payloads(payloads, "mixed", out=tmp_path / "ev.npz", **common)
        out = tmp_path / "ev.parquet"
        summary = export_payloads(payloads, "mixed", out=out, **common)
        assert summary["feature_names"] == list(mixed["schema"].names)
        assert summary["rows"] == len(frame)
        report = validate_version(mixed["root"], "mixed", 1, out, write=False)
    finally:
        toml.unlink()
    exported = pd.read_parquet(out)
    assert exported[TEXT].tolist() == frame[TEXT].tolist()
    np.testing.assert_allclose(exported["bmi"], shifted["bmi"].astype(np.float32))
    expected = float(np.mean(mixed["pipe"].predict(shifted.astype({"bmi": np.float32})) == y))
    assert report.metrics["accuracy"] == expected


def _evaluation(mixed: dict[str, Any], path: Path) -> Path:
    """The data with labels and a group column that is not a feature, as csv or parquet."""
    frame = mixed["frame"].copy()
    frame["y"] = mixed["y"]
    frame["site"] = np.where(np.arange(len(frame)) % 3 == 0, "north", "south")
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_validate_mixed_model_equals_scikit_learn(
    mixed: dict[str, Any], tmp_path: Path, suffix: str
) -> None:
    from sklearn.metrics import accuracy_score, roc_auc_score

    from mlserve.governance.gate import validate_version

    (mixed["root"] / "mixed" / "model.toml").write_text(
        "[gate]\nmin_accuracy = 0.7\nmin_roc_auc = 0.75\n"
        "max_demographic_parity_difference = 0.5\nmax_equalized_odds_difference = 0.5\n"
    )
    try:
        data = _evaluation(mixed, tmp_path / f"eval{suffix}")
        report = validate_version(mixed["root"], "mixed", 1, data, write=False, group="site")
    finally:
        (mixed["root"] / "mixed" / "model.toml").unlink()
    pipe, frame, y = mixed["pipe"], mixed["frame"], mixed["y"]
    assert report.passed, report.table()
    assert report.metrics["accuracy"] == accuracy_score(y, pipe.predict(frame))
    assert report.metrics["roc_auc"] == pytest.approx(
        roc_auc_score(y, pipe.predict_proba(frame)[:, 1]), abs=1e-4
    )
    assert set(report.metrics["group_rows"]) == {"north", "south"}
    assert report.metrics["demographic_parity_difference"] is not None


def test_validate_without_labels_exits_2_and_writes_nothing(
    mixed: dict[str, Any], tmp_path: Path
) -> None:
    import subprocess
    import sys

    data = tmp_path / "nolabels.csv"
    mixed["frame"].to_csv(data, index=False)
    done = subprocess.run(
        [sys.executable, "-m", "mlserve", "validate", "--registry", str(mixed["root"]),
         "--model", "mixed", "--version", "1", "--data", str(data)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no labels" in done.stderr
    assert not (mixed["vdir"] / "validation.json").exists()
