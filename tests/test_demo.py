"""Tests for the built-in demo registry builder (mlserve.demo)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")
ort = pytest.importorskip("onnxruntime")

from mlserve import demo  # noqa: E402
from mlserve.demo import build_demo  # noqa: E402
from mlserve.monitoring import load_profile  # noqa: E402
from mlserve.reference_data import profile_from_file  # noqa: E402

# Slow: builds the demo workspace and serves it (-m "not slow" skips it).
pytestmark = pytest.mark.slow

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

VERSIONS = {"credit-risk": [1, 2, 3], "iris": [1]}
MODEL_FILES = [f"{m}/{v}/model.onnx" for m, vs in VERSIONS.items() for v in vs]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo build shared by the read-only tests of this module."""
    directory = tmp_path_factory.mktemp("demo") / "nested" / "workspace"  # does not exist yet
    assert build_demo(directory) == directory / "registry"
    return directory


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_layout(workspace: Path) -> None:
    registry = workspace / "registry"
    assert sorted(p.name for p in registry.iterdir()) == ["credit-risk", "iris"]
    for model, versions in VERSIONS.items():
        dirs = sorted(p.name for p in (registry / model).iterdir() if p.is_dir())
        assert dirs == [str(v) for v in versions]
        for v in versions:
            names = {p.name for p in (registry / model / str(v)).iterdir()}
            assert names == {
                "model.onnx",
                "lineage.json",
                "samples.npz",
                "reference.json",
                "validation.json",
            }
    toml_text = (registry / "credit-risk" / "model.toml").read_text()
    assert toml_text.startswith("#")
    from mlserve.config import parse_model_config

    config = parse_model_config(tomllib.loads(toml_text))
    assert config.versions.policy == "all"
    assert (config.routing.stable, config.routing.canary) == (1, 2)
    assert config.routing.canary_weight == 10 and config.routing.shadows == (2,)
    assert config.gate.require_gate and config.gate.max_equalized_odds_difference == 0.2
    assert not (registry / "iris" / "model.toml").exists()
    assert sorted(p.name for p in (workspace / "datasets").iterdir()) == [
        "credit-risk.npz",
        "iris.npz",
    ]
    assert not list(workspace.glob(".building-*"))
    marker = json.loads((workspace / ".mlserve-demo.json").read_text())
    assert marker["builder_version"] == demo.BUILDER_VERSION


def test_models_have_v2_signature(workspace: Path) -> None:
    for rel in MODEL_FILES:
        sess = _session(workspace / "registry" / rel)
        (inp,) = sess.get_inputs()
        n_features = 20 if rel.startswith("credit-risk") else 4
        assert (inp.name, inp.type, inp.shape) == ("X", "tensor(float)", [None, n_features])
        outs = {o.name: o.type for o in sess.get_outputs()}
        assert outs == {"label": "tensor(int64)", "probabilities": "tensor(float)"}


def test_lineage(workspace: Path) -> None:
    expected = {
        "credit-risk/1": "StandardScaler → LogisticRegression",
        "credit-risk/2": "GradientBoostingClassifier",
        "credit-risk/3": "GradientBoostingClassifier",
        "iris/1": "StandardScaler → LogisticRegression",
    }
    parents = {"credit-risk/2": 1, "credit-risk/3": 2}
    for key, estimator in expected.items():
        vdir = workspace / "registry" / key
        lineage = json.loads((vdir / "lineage.json").read_text())
        digest = hashlib.sha256((vdir / "model.onnx").read_bytes()).hexdigest()
        assert lineage["model_sha256"] == digest
        assert lineage["estimator"] == estimator
        assert lineage["parent_version"] == parents.get(key)
        assert {"scikit-learn", "skl2onnx", "onnx", "onnxruntime"} <= set(lineage["libraries"])
        assert lineage["tags"]["source"] == "mlserve demo"
        assert lineage["created_at"].endswith("+00:00")
        data = workspace / "datasets" / f"{key.split('/')[0]}.npz"
        assert lineage["reference_data_sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
        assert 0.7 < lineage["metrics"]["accuracy"] <= 1
    marker = json.loads((workspace / ".mlserve-demo.json").read_text())
    assert set(marker["models"]) == set(expected)


def test_gate_passes_fair_versions_and_fails_the_biased_one(workspace: Path) -> None:
    reports = {
        rel: json.loads((workspace / "registry" / rel).with_name("validation.json").read_text())
        for rel in MODEL_FILES
    }
    for rel, report in reports.items():
        assert report["passed"] is (not rel.startswith("credit-risk/3")), rel
    failed = {c["name"] for c in reports["credit-risk/3/model.onnx"]["criteria"] if not c["passed"]}
    # the biased variant is accurate enough: only the fairness criteria stop it
    assert failed == {"max_demographic_parity_difference", "max_equalized_odds_difference"}
    groups = reports["credit-risk/3/model.onnx"]["metrics"]["groups"]
    assert set(groups) == {"0", "1"}
    assert groups["1"]["selection_rate"] < groups["0"]["selection_rate"] - 0.25


def test_samples_match_onnxruntime(workspace: Path) -> None:
    for rel in MODEL_FILES:
        vdir = (workspace / "registry" / rel).parent
        with np.load(vdir / "samples.npz") as samples:
            assert sorted(samples.files) == ["inputs.X", "outputs.label", "outputs.probabilities"]
            X = samples["inputs.X"]
            assert X.dtype == np.float32 and X.shape[0] == 32
            label, proba = _session(vdir / "model.onnx").run(["label", "probabilities"], {"X": X})
            np.testing.assert_array_equal(label, samples["outputs.label"])
            np.testing.assert_array_equal(proba, samples["outputs.probabilities"])
            assert samples["outputs.label"].dtype == np.int64
            assert samples["outputs.probabilities"].dtype == np.float32


@pytest.mark.parametrize("key", ["credit-risk/1", "credit-risk/2", "iris/1"])
def test_reference_profile(workspace: Path, key: str) -> None:
    """reference.json profiles the training data and the model's outputs on it."""
    vdir = workspace / "registry" / key
    profile = load_profile(vdir / "reference.json")
    with np.load(workspace / "datasets" / f"{key.split('/')[0]}.npz") as data:
        X, y, names = data["X_train"], data["y_train"], [str(n) for n in data["feature_names"]]
    n = X.shape[0]
    assert (profile["n_rows"], profile["bins"]) == (n, 10)
    assert [f["name"] for f in profile["features"]] == names
    assert [f["column"] for f in profile["features"]] == list(range(len(names)))
    for f in profile["features"]:
        assert f["kind"] == "numeric" and f["n"] == n and f["missing"] == 0
        assert sum(f["counts"]) == n and len(f["edges"]) <= 9
        col = X[:, f["column"]].astype(np.float64)
        bins = np.searchsorted(f["edges"], col, side="right")
        assert f["counts"] == np.bincount(bins, minlength=len(f["edges"]) + 1).tolist()
        assert (f["min"], f["max"]) == (col.min(), col.max())
        assert f["mean"] == pytest.approx(col.mean(), rel=1e-9)
    label, proba = _session(vdir / "model.onnx").run(["label", "probabilities"], {"X": X})
    assert set(profile["outputs"]) == {"label", "probabilities"}
    (lab,) = profile["outputs"]["label"]
    assert (lab["name"], lab["kind"], lab["missing"]) == ("label", "categorical", 0)
    assert sorted(lab["levels"]) == sorted(np.unique(y).tolist())
    assert lab["counts"] == [int(np.sum(label == lv)) for lv in lab["levels"]] + [0]
    probs = profile["outputs"]["probabilities"]
    assert [p["name"] for p in probs] == [f"probabilities[{j}]" for j in range(proba.shape[1])]
    for p in probs:
        assert p["kind"] == "numeric" and sum(p["counts"]) == n
        assert p["max"] == pytest.approx(float(proba[:, p["column"]].max()))


def test_reference_profile_equals_profile_command(workspace: Path) -> None:
    """``mlserve profile`` on the demo's training data remakes the demo's reference.json."""
    vdir = workspace / "registry" / "credit-risk" / "2"
    made = profile_from_file(workspace / "datasets" / "credit-risk.npz", model=vdir / "model.onnx")
    assert json.loads(json.dumps(made)) == load_profile(vdir / "reference.json")


@pytest.mark.parametrize(
    ("key", "minimum"), [("credit-risk/1", 0.75), ("credit-risk/2", 0.75), ("iris/1", 0.9)]
)
def test_accuracy(workspace: Path, key: str, minimum: float) -> None:
    with np.load(workspace / "datasets" / f"{key.split('/')[0]}.npz") as data:
        X_test, y_test = data["X_test"], data["y_test"]
    label, proba = _session(workspace / "registry" / key / "model.onnx").run(None, {"X": X_test})
    accuracy = float(np.mean(label == y_test))
    assert accuracy > minimum
    lineage = json.loads((workspace / "registry" / key / "lineage.json").read_text())
    assert lineage["metrics"]["accuracy"] == pytest.approx(accuracy)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_credit_risk_dataset(workspace: Path) -> None:
    with np.load(workspace / "datasets" / "credit-risk.npz") as data:
        d = {k: data[k] for k in data.files}
    assert set(d) == {
        "X_train",
        "y_train",
        "X_test",
        "y_test",
        "group_train",
        "group_test",
        "feature_names",
    }
    names = [str(n) for n in d["feature_names"]]
    assert len(names) == len(set(names)) == 20 == d["X_train"].shape[1] == d["X_test"].shape[1]
    assert not any("group" in n for n in names)
    assert d["X_train"].dtype == np.float32 and d["y_train"].dtype == np.int64
    assert d["group_train"].dtype == np.int64 and set(np.unique(d["group_train"])) == {0, 1}
    assert len(d["X_train"]) + len(d["X_test"]) >= 5000
    assert 0.3 < d["y_train"].mean() < 0.7
    X, g = d["X_train"].astype(np.float64), d["group_train"]
    assert not any(np.array_equal(X[:, j], g) for j in range(X.shape[1]))
    corr = [abs(np.corrcoef(X[:, j], g)[0, 1]) for j in range(X.shape[1])]
    assert max(corr) > 0.1


def test_iris_dataset(workspace: Path) -> None:
    with np.load(workspace / "datasets" / "iris.npz") as data:
        assert set(data.files) == {"X_train", "y_train", "X_test", "y_test", "feature_names"}
        assert data["X_train"].shape[1] == len(data["feature_names"]) == 4
        assert len(data["X_train"]) + len(data["X_test"]) == 150


def test_is_built_detects_tampering(workspace: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(workspace, copy)
    assert demo._is_built(copy)
    with (copy / "registry" / "iris" / "1" / "model.onnx").open("ab") as f:
        f.write(b"\0")
    assert not demo._is_built(copy)
    shutil.rmtree(copy)
    shutil.copytree(workspace, copy)
    (copy / "registry" / "credit-risk" / "2" / "reference.json").unlink()
    assert not demo._is_built(copy)


def test_idempotent_force_and_deterministic(workspace: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    registry = build_demo(other)
    keep = other / "notes.txt"
    keep.write_text("mine")
    before = {rel: (registry / rel).stat().st_mtime_ns for rel in MODEL_FILES}
    assert build_demo(other) == registry
    assert {rel: (registry / rel).stat().st_mtime_ns for rel in MODEL_FILES} == before
    assert build_demo(other, force=True) == registry
    for rel, mtime in before.items():
        assert (registry / rel).stat().st_mtime_ns != mtime
    assert keep.read_text() == "mine"
    assert not list(other.glob(".building-*"))
    for name in ("credit-risk", "iris"):  # two builds in different dirs: identical datasets
        a, b = (np.load(d / "datasets" / f"{name}.npz") for d in (workspace, other))
        with a, b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])
    for rel in MODEL_FILES:  # and byte-identical models and reference profiles
        for name in ("model.onnx", "reference.json"):
            new, old = (
                (registry / rel).with_name(name),
                (workspace / "registry" / rel).with_name(name),
            )
            assert new.read_bytes() == old.read_bytes()


def test_refuses_foreign_registry_without_force(tmp_path: Path) -> None:
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "mine.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="force=True"):
        build_demo(tmp_path)
    assert (tmp_path / "registry" / "mine.txt").read_text() == "mine"
    assert not (tmp_path / ".mlserve-demo.json").exists()


def test_missing_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "skl2onnx", None)
    with pytest.raises(RuntimeError, match=r"pip install 'mlserve\[demo\]'"):
        build_demo(tmp_path / "ws")
    assert not (tmp_path / "ws" / "registry").exists()


def test_failed_rebuild_keeps_previous_workspace(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(workspace, copy)
    before = {rel: (copy / "registry" / rel).read_bytes() for rel in MODEL_FILES}
    from mlserve.governance import publish as publish_module

    real_publish = publish_module.publish

    def failing_publish(registry: Path, model: str, **kwargs: object) -> object:
        if model == "iris":  # credit-risk has been written to the staging dir by now
            raise RuntimeError("simulated crash")
        return real_publish(registry, model, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(publish_module, "publish", failing_publish)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_demo(copy, force=True)
    assert {rel: (copy / "registry" / rel).read_bytes() for rel in MODEL_FILES} == before
    assert demo._is_built(copy)
    assert not list(copy.glob(".building-*"))
