"""``mlserve publish``: conversion checked against the estimator, lineage, atomic versions."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import httpx
import joblib
import numpy as np
import onnxruntime as ort
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlserve.governance.publish import PublishError, publish
from mlserve.monitoring.profile import load_profile

from .conftest import running_server


def _data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    y = (X[:, 0] - 0.5 * X[:, 1] + 0.3 * rng.normal(size=n) > 0).astype(np.int64)
    return X, y


def _write_csv(path: Path, X: np.ndarray) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"feat_{j}" for j in range(X.shape[1])])
        w.writerows(X.tolist())
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_publish_from_a_pickled_estimator_then_serve(tmp_path: Path) -> None:
    X, y = _data()
    est = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    pickled = tmp_path / "model.joblib"
    joblib.dump(est, pickled)
    ref = _write_csv(tmp_path / "ref.csv", X)
    registry = tmp_path / "registry"
    done = publish(registry, "clf", reference=ref, estimator=pickled, metrics={"auc": 0.9})
    vdir = registry / "clf" / "1"
    assert done.version == 1 and done.path == vdir
    assert {p.name for p in vdir.iterdir()} == {
        "model.onnx",
        "reference.json",
        "samples.npz",
        "lineage.json",
    }
    lineage = json.loads((vdir / "lineage.json").read_text())
    assert lineage["model_sha256"] == _sha(vdir / "model.onnx")
    assert lineage["reference_data_sha256"] == _sha(ref)
    assert lineage["estimator_sha256"] == _sha(pickled)
    assert lineage["parent_version"] is None and lineage["version"] == 1
    assert lineage["metrics"] == {"auc": 0.9}
    assert lineage["input"]["features"] == [f"feat_{j}" for j in range(5)]
    assert {"numpy", "onnxruntime", "scikit-learn", "skl2onnx", "mlserve"} <= set(
        lineage["libraries"]
    )
    assert lineage["verification"]["max_abs_error"] <= lineage["verification"]["tolerance"]
    # onnxruntime's outputs equal the estimator's
    sess = ort.InferenceSession(str(vdir / "model.onnx"), providers=["CPUExecutionProvider"])
    label, proba = sess.run(["label", "probabilities"], {"X": X})
    np.testing.assert_array_equal(label, est.predict(X))
    np.testing.assert_allclose(proba, est.predict_proba(X), atol=1e-5)
    # the reference profile describes the data and the model's outputs on it
    profile = load_profile(vdir / "reference.json")
    assert profile["n_rows"] == len(X)
    assert [f["name"] for f in profile["features"]] == [f"feat_{j}" for j in range(5)]
    assert set(profile["outputs"]) == {"label", "probabilities"}
    with np.load(vdir / "samples.npz") as s:
        np.testing.assert_array_equal(s["inputs.X"], X[:32])
        np.testing.assert_array_equal(s["outputs.label"], est.predict(X[:32]))
    # published, it loads (golden outputs checked at warm-up) and serves the same answers
    with running_server(registry) as srv:
        body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [8, 5],
                            "data": X[:8].ravel().tolist()}]}  # fmt: skip
        r = httpx.post(srv.url + "/v2/models/clf/infer", json=body)
        assert r.status_code == 200, r.text
        out = {o["name"]: o["data"] for o in r.json()["outputs"]}
        assert out["label"] == est.predict(X[:8]).tolist()
        np.testing.assert_allclose(
            np.reshape(out["probabilities"], (8, 2)), est.predict_proba(X[:8]), atol=1e-5
        )
        meta = httpx.get(srv.url + "/v2/models/clf").json()
        assert (
            meta["parameters"]["versions"]["1"]["lineage"]["model_sha256"]
            == (lineage["model_sha256"])
        )


def test_versions_count_up_with_parents_and_code_revision(tmp_path: Path) -> None:
    X, _ = _data(seed=1)
    target = X @ np.arange(1, 6, dtype=np.float32) + 2
    ref = tmp_path / "ref.npz"
    np.savez(ref, X=X)
    code = tmp_path / "code"
    code.mkdir()
    git = ["git", "-C", str(code), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    (code / "train.py").write_text("print('train')\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "train"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    registry = tmp_path / "registry"
    reg = LinearRegression().fit(X, target)
    first = publish(registry, "reg", reference=ref, estimator=reg, code_dir=code)
    second = publish(registry, "reg", reference=ref, estimator=reg, tags={"team": "risk"})
    assert (first.version, second.version) == (1, 2)
    assert first.lineage["code_revision"] == head
    assert second.lineage["parent_version"] == 1 and second.lineage["tags"] == {"team": "risk"}
    assert first.lineage["estimator"] == "LinearRegression"
    sess = ort.InferenceSession(str(second.path / "model.onnx"), providers=["CPUExecutionProvider"])
    (pred,) = sess.run(None, {"X": X})
    np.testing.assert_allclose(pred.ravel(), reg.predict(X), rtol=1e-5, atol=1e-4)
    # an existing ONNX file is published as is, checked to run on the reference data
    third = publish(registry, "reg", reference=ref, onnx_model=second.path / "model.onnx")
    assert third.version == 3 and third.max_error is None
    assert _sha(third.path / "model.onnx") == _sha(second.path / "model.onnx")
    assert third.lineage["source"] == "onnx"


def test_divergent_conversion_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    X, y = _data()
    est = LogisticRegression().fit(X, y)
    ref = tmp_path / "ref.npz"
    np.savez(ref, X=X)
    registry = tmp_path / "registry"
    # float32 onnxruntime against float64 scikit-learn is never exact: tolerance 0 refuses
    with pytest.raises(PublishError, match="differ from the estimator's"):
        publish(registry, "clf", reference=ref, estimator=est, tolerance=0.0)
    assert not (registry / "clf").exists()
    with pytest.raises(PublishError, match="invalid model name"):
        publish(registry, "../escape", reference=ref, estimator=est)
    with pytest.raises(PublishError, match="does not exist"):
        publish(registry, "clf", reference=ref, estimator=tmp_path / "missing.joblib")
    text = tmp_path / "text.csv"
    text.write_text("a,b\n1,x\n2,y\n")
    with pytest.raises(PublishError, match="text columns"):
        publish(registry, "clf", reference=text, estimator=est)
    assert not (registry / "clf").exists()


_RACER = """
import sys
import numpy as np
from sklearn.linear_model import LogisticRegression
from mlserve.governance.publish import publish
X = np.load(sys.argv[2])["X"]
est = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
for _ in range(3):
    print(publish(sys.argv[1], "raced", reference=sys.argv[2], estimator=est).version, flush=True)
"""


@pytest.mark.slow
def test_racing_publishers_get_distinct_complete_versions(tmp_path: Path) -> None:
    X, _ = _data()
    ref = tmp_path / "ref.npz"
    np.savez(ref, X=X)
    registry = tmp_path / "registry"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(registry), str(ref)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    numbers = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        numbers += [int(line) for line in out.split()]
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]
    entries = sorted(p.name for p in (registry / "raced").iterdir() if not p.name.startswith("."))
    assert entries == ["1", "2", "3", "4", "5", "6"]
    assert not [p for p in (registry / "raced").iterdir() if p.name.startswith(".publish-")]
    for v in entries:
        vdir = registry / "raced" / v
        lineage = json.loads((vdir / "lineage.json").read_text())
        assert lineage["version"] == int(v)
        assert lineage["model_sha256"] == _sha(vdir / "model.onnx")
        assert (vdir / "reference.json").is_file() and (vdir / "samples.npz").is_file()


@pytest.mark.slow
def test_cli_publish(tmp_path: Path) -> None:
    X, y = _data()
    pickled = tmp_path / "m.joblib"
    joblib.dump(LogisticRegression().fit(X, y), pickled)
    ref = tmp_path / "ref.npz"
    np.savez(ref, X=X)
    cmd = [sys.executable, "-m", "mlserve", "publish", "--registry", str(tmp_path / "r"),
           "--model", "m", "--reference", str(ref)]  # fmt: skip
    ok = subprocess.run(
        [*cmd, "--estimator", str(pickled), "--metric", "auc=0.91", "--tag", "owner=risk"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "published m v1" in ok.stdout
    lineage = json.loads((tmp_path / "r" / "m" / "1" / "lineage.json").read_text())
    assert lineage["metrics"] == {"auc": 0.91} and lineage["tags"] == {"owner": "risk"}
    bad = subprocess.run(
        [*cmd, "--estimator", str(tmp_path / "nope.joblib")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_published_versions_are_readable_by_others_and_inputs_are_checked(
    tmp_path: Path,
) -> None:
    X, y = _data()
    ref = tmp_path / "ref.npz"
    np.savez(ref, X=X)
    est = LogisticRegression().fit(X, y)
    done = publish(tmp_path / "r", "m", reference=ref, estimator=est)
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(done.path.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's 0700
    with pytest.raises(PublishError, match="finite number"):
        publish(tmp_path / "r", "m", reference=ref, estimator=est, metrics={"auc": float("nan")})
    with pytest.raises(PublishError, match="parent must be a version"):
        publish(tmp_path / "r", "m", reference=ref, estimator=est, parent=-5)
    with pytest.raises(PublishError, match="not a file"):
        publish(tmp_path / "r", "m", reference=ref, estimator=tmp_path)
    pickled = tmp_path / "dict.joblib"
    joblib.dump({"not": "an estimator"}, pickled)
    with pytest.raises(PublishError, match="not a fitted scikit-learn estimator"):
        publish(tmp_path / "r", "m", reference=ref, estimator=pickled)
    assert sorted(p.name for p in (tmp_path / "r" / "m").iterdir() if p.is_dir()) == ["1"]
