"""Columns whose names are not identifiers (``mean radius``): skl2onnx renames its inputs
(``mean_radius``), publish gives them back the columns' names.

Scikit-learn's breast-cancer data under its own column names plus a text column, a
``ColumnTransformer`` pipeline, published from CSV (the CLI) and from a DataFrame (the
library), served by a real server and asked with the user's column names; answers are
compared with scikit-learn's ``predict_proba``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from mlserve.governance.publish import PublishError, publish
from mlserve.monitoring.profile import load_profile

from .conftest import running_server, wait_for


def _cancer() -> tuple[pd.DataFrame, Pipeline]:
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.data.copy()
    frame["site"] = np.random.default_rng(0).choice(["north", "south", "east"], len(frame))
    numeric = [c for c in frame.columns if c != "site"]
    pre = ColumnTransformer(
        [("num", "passthrough", numeric), ("cat", OneHotEncoder(handle_unknown="ignore"), ["site"])]
    )
    est = Pipeline([("pre", pre), ("clf", GradientBoostingClassifier(n_estimators=20))])
    return frame, est.fit(frame, bunch.target)


def _named_request(rows: pd.DataFrame) -> dict[str, Any]:
    """One V2 input per column, under the column's own name (the pandas-codec convention)."""
    inputs = []
    for name in rows.columns:
        text = not pd.api.types.is_numeric_dtype(rows[name])
        data = rows[name].tolist()
        datatype = "BYTES" if text else "FP64"
        inputs.append({"name": name, "datatype": datatype, "shape": [len(rows)], "data": data})
    return {"inputs": inputs}


@pytest.mark.slow
def test_spaced_column_names_publish_serve_and_monitor_under_their_own_names(
    tmp_path: Path,
) -> None:
    frame, est = _cancer()
    assert "mean radius" in frame.columns
    frame.to_csv(tmp_path / "train.csv", index=False)
    joblib.dump(est, tmp_path / "model.joblib")
    reg = tmp_path / "registry"
    cli = subprocess.run(
        [sys.executable, "-m", "mlserve", "publish", "--registry", str(reg), "--model",
         "cancer", "--estimator", str(tmp_path / "model.joblib"), "--reference",
         str(tmp_path / "train.csv")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "published cancer v1" in cli.stdout
    done = publish(reg, "cancer", reference=frame, estimator=est)
    assert done.version == 2
    for version in (1, 2):
        path = reg / "cancer" / str(version)
        names = [i.name for i in onnx.load(str(path / "model.onnx")).graph.input]
        assert names == list(frame.columns)
        profile = load_profile(path / "reference.json")
        assert [f["name"] for f in profile["features"]] == list(frame.columns)
        lineage = json.loads((path / "lineage.json").read_text())
        assert lineage["input"]["features"] == list(frame.columns)
    # CSV and DataFrame hold the same values: the same profile
    assert load_profile(reg / "cancer" / "1" / "reference.json") == load_profile(
        done.path / "reference.json"
    )

    (reg / "cancer" / "model.toml").write_text('[versions]\npolicy = "all"\n')
    rows = frame.sample(40, random_state=1)[list(reversed(frame.columns))]  # any order
    expected = est.predict_proba(rows)
    with running_server(reg) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        meta = c.get("/v2/models/cancer").json()
        assert [f["name"] for f in meta["parameters"]["features"]] == list(frame.columns)
        for version in (1, 2):
            r = c.post(f"/v2/models/cancer/versions/{version}/infer", json=_named_request(rows))
            assert r.status_code == 200, r.text
            out = {o["name"]: o for o in r.json()["outputs"]}
            proba = np.asarray(out["probabilities"]["data"], np.float64).reshape(-1, 2)
            np.testing.assert_allclose(proba, expected, atol=1e-5)
        # a request under skl2onnx's names is refused, naming the features it lacks
        bad = _named_request(rows.rename(columns={"mean radius": "mean_radius"}))
        r = c.post("/v2/models/cancer/infer", json=bad)
        assert r.status_code == 400 and "mean radius" in r.json()["error"], r.text

        def inputs_counted() -> bool:
            report = c.get("/v2/models/cancer/monitor").json()
            features = report["versions"]["2"]["drift"]["sections"]["inputs"]["features"]
            return any(f["name"] == "mean radius" and f["window_count"] > 0 for f in features)

        wait_for(inputs_counted)
        report = c.get("/v2/models/cancer/monitor").json()
        features = report["versions"]["2"]["drift"]["sections"]["inputs"]["features"]
        assert [f["name"] for f in features] == list(frame.columns)


def test_colliding_and_digit_names_keep_their_own_inputs(tmp_path: Path) -> None:
    """skl2onnx turns ``a b`` into ``a_b``, so the column really named ``a_b`` becomes
    ``a_b1``, and ``1st`` becomes ``_1st``: each column must still reach its own input."""
    rng = np.random.default_rng(3)
    n = 400
    frame = pd.DataFrame(
        {"a b": rng.normal(size=n), "a_b": rng.normal(size=n) * 3, "1st": rng.normal(size=n)}
    )
    y = (frame["a b"] - 2 * frame["a_b"] + 0.5 * frame["1st"] > 0).astype(int)
    pre = ColumnTransformer([("num", "passthrough", ["1st", "a_b", "a b"])])
    est = Pipeline([("pre", pre), ("clf", LogisticRegression())]).fit(frame, y)
    done = publish(tmp_path / "r", "m", reference=frame, estimator=est)
    sess = ort.InferenceSession(str(done.path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == list(frame.columns)
    feeds = {c: frame[c].to_numpy(np.float32).reshape(-1, 1) for c in frame.columns}
    proba = sess.run(["probabilities"], feeds)[0]
    np.testing.assert_allclose(proba, est.predict_proba(frame), atol=1e-5)
    swapped = dict(feeds, **{"a b": feeds["a_b"], "a_b": feeds["a b"]})
    assert not np.allclose(sess.run(["probabilities"], swapped)[0], proba, atol=1e-3)


def test_an_onnx_file_with_renamed_inputs_is_refused_in_one_short_message(
    tmp_path: Path,
) -> None:
    """A file converted by hand keeps skl2onnx's names: publish cannot feed it the columns
    and says so in a few lines, writing nothing."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    frame, est = _cancer()
    types = [
        (c, StringTensorType([None, 1]) if c == "site" else FloatTensorType([None, 1]))
        for c in frame.columns
    ]
    onx = convert_sklearn(est, initial_types=types, options={"zipmap": False})
    (tmp_path / "own.onnx").write_bytes(onx.SerializeToString())
    with pytest.raises(PublishError) as info:
        publish(
            tmp_path / "r", "m", reference=frame, estimator=est, onnx_model=tmp_path / "own.onnx"
        )
    text = str(info.value)
    assert len(text) < 600 and "\n" not in text, text
    assert "'mean_radius'" in text and "'mean radius'" in text
    assert "name its inputs as the columns" in text
    assert not (tmp_path / "r" / "m").exists() or not any((tmp_path / "r" / "m").iterdir())
