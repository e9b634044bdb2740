"""The validation gate: metrics against scikit-learn and fairlearn, criteria, enforcement."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import accuracy_score, mean_absolute_error, mean_squared_error, roc_auc_score

from mlserve.config import GateConfig
from mlserve.governance import quality as m
from mlserve.governance.gate import gate_status, validate_version
from mlserve.governance.publish import publish
from mlserve.registry.layout import VALIDATION_FILE

from .conftest import running_server, wait_for

TOKEN = "gate-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# ------------------------------------------------------------------ metrics against references
@pytest.mark.parametrize("seed", range(5))
def test_fairness_metrics_equal_fairlearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 500
    groups = rng.choice(["a", "b", "c"][: 2 + seed % 2], n)
    y_true = rng.integers(0, 2, n)
    y_pred = np.where(rng.random(n) < 0.7, y_true, rng.integers(0, 2, n))
    y_pred[groups == "b"] &= rng.random((groups == "b").sum()) < 0.6  # fewer positives for b
    assert m.demographic_parity_difference(y_pred, groups) == pytest.approx(
        demographic_parity_difference(y_true, y_pred, sensitive_features=groups), abs=1e-12
    )
    assert m.equalized_odds_difference(y_true, y_pred, groups) == pytest.approx(
        equalized_odds_difference(y_true, y_pred, sensitive_features=groups), abs=1e-12
    )


def test_quality_metrics_equal_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    score = np.round(rng.random(400) + 0.3 * y, 1)  # rounded: many ties
    proba = np.column_stack([1 - score / 2, score / 2])
    pred = (score > 0.6).astype(int)
    assert m.accuracy(y, pred) == accuracy_score(y, pred)
    assert m.roc_auc(y, proba) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    y3 = rng.integers(0, 3, 400)
    p3 = rng.dirichlet([1, 1, 1], 400) + np.eye(3)[y3] * 0.3
    p3 /= p3.sum(axis=1, keepdims=True)
    assert m.roc_auc(y3, p3) == pytest.approx(roc_auc_score(y3, p3, multi_class="ovr"), abs=1e-12)
    t, p = rng.normal(size=300), rng.normal(size=300)
    assert m.mae(t, p) == pytest.approx(mean_absolute_error(t, p), abs=1e-12)
    assert m.rmse(t, p) == pytest.approx(np.sqrt(mean_squared_error(t, p)), abs=1e-12)


# ------------------------------------------------------------------ a registry with a gate each
def _classification(n: int = 1200, seed: int = 0) -> dict[str, np.ndarray]:
    """Labels depend on x0, x1 only; column 4 is the group (a feature a biased model uses)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    X[:, 4] = rng.integers(0, 2, n)
    y = (X[:, 0] + 0.5 * X[:, 1] + 0.4 * rng.normal(size=n) > 0).astype(np.int64)
    return {"X": X, "y": y, "group": X[:, 4].astype(np.int64)}


def _biased(d: dict[str, np.ndarray]) -> np.ndarray:
    y = d["y"].copy()
    y[d["group"] == 1] = 0  # a history that never approved group 1
    return y


GOOD = "good"
CRITERIA = {  # model name → (gate line, how version 2 goes wrong)
    "acc": ("min_accuracy = 0.8", "flipped"),
    "auc": ("min_roc_auc = 0.8", "flipped"),
    "dp": ("max_demographic_parity_difference = 0.15", "biased"),
    "eo": ("max_equalized_odds_difference = 0.15", "biased"),
    "agree": ("min_agreement = 0.9", "flipped"),
    "mae": ("max_mae = 0.5", "shuffled"),
    "rmse": ("max_rmse = 0.5", "shuffled"),
}


def _build(registry: Path, data: Path, d: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(1)
    X = d["X"]
    target = X[:, 0] * 2 + X[:, 1] + 0.1 * rng.normal(size=len(X))
    fits = {
        GOOD: LogisticRegression().fit(X, d["y"]),
        "shuffled": LogisticRegression().fit(X, rng.permutation(d["y"])),
        "biased": LogisticRegression().fit(X, _biased(d)),
        "flipped": LogisticRegression().fit(X, 1 - d["y"]),
    }
    regs = {GOOD: LinearRegression().fit(X, target),
            "shuffled": LinearRegression().fit(X, rng.permutation(target))}  # fmt: skip
    np.savez(data.with_name("reg.npz"), X=X, y=target)
    for name, (line, bad) in CRITERIA.items():
        (registry / name).mkdir(parents=True)
        (registry / name / "model.toml").write_text(
            f'[versions]\npolicy = "all"\n[gate]\nrequire_gate = true\n{line}\n'
        )
        fitted = regs if name in ("mae", "rmse") else fits
        ref = data.with_name("reg.npz") if name in ("mae", "rmse") else data
        for kind in (GOOD, bad):
            publish(registry, name, reference=ref, estimator=fitted[kind])
    (registry / "ok").mkdir()
    (registry / "ok" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n[gate]\nrequire_gate = true\nmin_accuracy = 0.8\n'
        "max_p99_ms_batch1 = 1000.0\nmax_p99_ms_batch = 1000.0\n"
    )
    for _ in range(2):
        publish(registry, "ok", reference=data, estimator=fits[GOOD])
    (registry / "slow").mkdir()  # an impossible latency budget: nothing may serve
    (registry / "slow" / "model.toml").write_text(
        "[gate]\nrequire_gate = true\nmax_p99_ms_batch1 = 0.0\n"
    )
    publish(registry, "slow", reference=data, estimator=fits[GOOD])


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("gate")
    d = _classification()
    data = root / "eval.npz"
    np.savez(data, **d)
    registry = root / "registry"
    _build(registry, data, d)
    for name in (*CRITERIA, "ok"):
        ev = data.with_name("reg.npz") if name in ("mae", "rmse") else data
        for v in (1, 2):
            validate_version(registry, name, v, ev)
    validate_version(registry, "slow", 1, data)
    return registry, data


@pytest.mark.parametrize("name", list(CRITERIA))
def test_each_criterion_fails_the_bad_version_only(gated: tuple[Path, Path], name: str) -> None:
    registry, _ = gated
    reports = [json.loads((registry / name / str(v) / VALIDATION_FILE).read_text()) for v in (1, 2)]
    criterion = CRITERIA[name][0].split(" = ")[0]
    assert reports[0]["passed"], reports[0]["criteria"]
    assert not reports[1]["passed"]
    failed = [c["name"] for c in reports[1]["criteria"] if not c["passed"]]
    assert failed == [criterion]
    checked = {c["name"]: c for c in reports[1]["criteria"]}[criterion]
    assert checked["value"] is not None and checked["threshold"] == float(
        CRITERIA[name][0].split(" = ")[1]
    )


def test_reported_metrics_equal_the_references(gated: tuple[Path, Path]) -> None:
    registry, data = gated
    report = json.loads((registry / "dp" / "2" / VALIDATION_FILE).read_text())
    import onnxruntime as ort

    with np.load(data) as d:
        X, y, g = d["X"], d["y"], d["group"]
    sess = ort.InferenceSession(str(registry / "dp" / "2" / "model.onnx"))
    label, proba = sess.run(["label", "probabilities"], {"X": X})
    found = report["metrics"]
    assert found["accuracy"] == pytest.approx(accuracy_score(y, label), abs=1e-12)
    assert found["roc_auc"] == pytest.approx(roc_auc_score(y, proba[:, 1]), abs=1e-12)
    assert found["demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(y, label, sensitive_features=g), abs=1e-12
    )
    assert found["equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(y, label, sensitive_features=g), abs=1e-12
    )
    assert report["evaluation"]["rows"] == len(X) and report["evaluation"]["groups"] is True


def test_status_needs_the_same_model_file_and_gate(
    gated: tuple[Path, Path], tmp_path: Path
) -> None:
    registry, _ = gated
    vdir = tmp_path / "v"
    shutil.copytree(registry / "acc" / "1", vdir)
    gate = GateConfig(require_gate=True, min_accuracy=0.8)
    assert gate_status(vdir, gate).passed
    assert "another [gate]" in gate_status(vdir, GateConfig(min_accuracy=0.8, golden=False)).reason
    with (vdir / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    status = gate_status(vdir, gate)
    assert not status.passed and "different model.onnx" in status.reason
    (vdir / VALIDATION_FILE).unlink()
    assert "run `mlserve validate`" in gate_status(vdir, gate).reason


def test_a_change_of_thresholds_alone_is_judged_from_the_recorded_measurements(
    gated: tuple[Path, Path], tmp_path: Path
) -> None:
    """Editing a [gate] threshold used to fail every version ("validate again") and so take
    a require_gate model out of service. A threshold on a recorded measurement is judged
    from validation.json; what needs a new run still asks for one."""
    registry, data = gated
    vdir = tmp_path / "v"
    shutil.copytree(registry / "ok" / "1", vdir)  # judged with min_accuracy 0.8, p99s 1000 ms
    recorded = json.loads((vdir / VALIDATION_FILE).read_text())
    with np.load(data) as d:
        import onnxruntime as ort

        label = ort.InferenceSession(str(vdir / "model.onnx")).run(["label"], {"X": d["X"]})[0]
        accuracy = accuracy_score(d["y"], label)  # the reference, independent of the file
    assert recorded["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    base = {"require_gate": True, "max_p99_ms_batch1": 1000.0, "max_p99_ms_batch": 1000.0}

    looser = gate_status(vdir, GateConfig(**base, min_accuracy=accuracy - 0.01))
    assert looser.passed and "judged from the measurements" in looser.reason
    assert looser.summary is not None and looser.summary["rejudged"] is True
    tighter = gate_status(vdir, GateConfig(**base, min_accuracy=accuracy + 0.001))
    assert not tighter.passed and tighter.summary is not None
    assert f"min_accuracy {accuracy:.4g} (needs >= {accuracy + 0.001:.4g})" in tighter.reason
    assert tighter.summary["failed"] == ["min_accuracy"]
    exact = gate_status(vdir, GateConfig(**base, min_accuracy=accuracy))
    assert exact.passed  # >= is inclusive, as validate judges
    dropped = gate_status(vdir, GateConfig(require_gate=True, max_p99_ms_batch=1000.0))
    assert dropped.passed and dropped.summary is not None
    assert set(dropped.summary["criteria"]) == {
        "max_p99_ms_batch",
        "golden_outputs",
        "min_agreement",
    }
    # A new criterion on a measurement the file has (roc_auc is always measured)...
    auc = recorded["metrics"]["roc_auc"]
    with_auc = gate_status(vdir, GateConfig(**base, min_accuracy=0.8, min_roc_auc=auc + 0.01))
    assert not with_auc.passed and "min_roc_auc" in with_auc.reason
    # ...but one never measured, or a change of how things are measured, needs a new run.
    for needs_run in (
        GateConfig(**base, min_accuracy=0.8, min_agreement=0.9),  # no agreement was measured
        GateConfig(**base, min_accuracy=0.8, latency_batch_size=8),
        GateConfig(**base, min_accuracy=0.8, golden_tolerance=1e-3),
        GateConfig(**base, min_accuracy=0.8, positive_label=0),
    ):
        status = gate_status(vdir, needs_run)
        assert not status.passed and "needs new measurements: validate again" in status.reason
    # A version that failed is judged by the thresholds now in force too, both ways.
    failing = tmp_path / "failing"
    shutil.copytree(registry / "acc" / "2", failing)  # the flipped model: accuracy near 0
    low = json.loads((failing / VALIDATION_FILE).read_text())["metrics"]["accuracy"]
    assert not gate_status(failing, GateConfig(require_gate=True, min_accuracy=0.8)).passed
    assert gate_status(failing, GateConfig(require_gate=True, min_accuracy=low / 2)).passed


def test_server_enforces_the_gate(gated: tuple[Path, Path]) -> None:
    registry, _ = gated
    x = {"name": "X", "datatype": "FP32", "shape": [1, 5], "data": [0.5, 0.1, 0.0, 0.0, 1.0]}
    body = {"inputs": [x]}
    with (
        running_server(registry, env={"MLSERVE_ADMIN_TOKEN": TOKEN}) as srv,
        httpx.Client(base_url=srv.url, headers=AUTH) as c,
    ):
        for name in CRITERIA:
            criterion = CRITERIA[name][0].split(" = ")[0]
            for role in ("canary", "stable"):
                r = c.put(f"/v2/admin/models/{name}/routing", json={role: 2, "canary_weight": 10})
                assert r.status_code == 409, r.text
                assert criterion in r.json()["error"] and "only as a shadow" in r.json()["error"]
            r = c.post(f"/v2/models/{name}/versions/2/infer", json=body)
            assert r.status_code == 409 and r.json()["code"] == "gate_not_passed"
            r = c.post(f"/v2/models/{name}/infer", json=body)  # unpinned: the passing v1
            assert r.status_code == 200 and r.headers["mlserve-model-version"] == "1"
            meta = c.get(f"/v2/models/{name}").json()["parameters"]
            assert meta["gate_required"] is True
            assert meta["versions"]["1"]["gate"]["passed"] is True
            assert meta["versions"]["2"]["gate"]["failed"] == [criterion]
            monitor = c.get(f"/v2/models/{name}/monitor").json()
            assert monitor["versions"]["2"]["gate"]["passed"] is False
            lineage = json.loads((registry / name / "1" / "lineage.json").read_text())
            assert monitor["versions"]["1"]["lineage"]["model_sha256"] == lineage["model_sha256"]
            assert monitor["versions"]["1"]["lineage"]["source"] == "estimator"
        # a version that failed may still shadow
        r = c.put("/v2/admin/models/dp/routing", json={"shadows": [2]})
        assert r.status_code == 200, r.text
        # passing versions are accepted; the canary must not be the stable version (v2 here,
        # the highest passing version when the server first served: pinned)
        r = c.put("/v2/admin/models/ok/routing", json={"canary": 2, "canary_weight": 50})
        assert r.status_code == 400 and "it is the stable version" in r.json()["error"]
        r = c.put(
            "/v2/admin/models/ok/routing", json={"stable": 1, "canary": 2, "canary_weight": 50}
        )
        assert r.status_code == 200, r.text
        assert r.json()["serving"] == {
            "stable": 1,
            "canary": 2,
            "canary_weight": 50.0,
            "shadows": [],
        }
        routing = c.get("/v2/models/ok").json()["parameters"]["routing"]
        assert (routing["stable"], routing["canary"]) == ("1", "2")
        assert c.post("/v2/models/ok/versions/2/infer", json=body).status_code == 200
        # nothing passed: unpinned traffic is refused, and says why
        r = c.post("/v2/models/slow/infer", json=body)
        assert r.status_code == 409 and "max_p99_ms_batch1" in r.json()["error"]
        audit = (registry / "audit.jsonl").read_text()
        assert '"set_routing"' in audit


@pytest.mark.slow
def test_editing_a_gate_threshold_keeps_a_passing_version_serving(
    gated: tuple[Path, Path], tmp_path: Path
) -> None:
    """The new-user finding: raising min_accuracy from 0.8 to 0.85 on a running server took
    the model out of service until every version was validated again. Now the version keeps
    serving while it meets the new threshold, and a threshold it misses says so."""
    _, data = gated
    registry = tmp_path / "registry"
    (registry / "m").mkdir(parents=True)
    config = "[gate]\nrequire_gate = true\nmin_accuracy = {}\n"
    (registry / "m" / "model.toml").write_text(config.format(0.8))
    d = _classification(seed=5)
    publish(registry, "m", reference=data, estimator=LogisticRegression().fit(d["X"], d["y"]))
    report = validate_version(registry, "m", 1, data)
    accuracy = report.metrics["accuracy"]
    assert report.passed and accuracy > 0.86, accuracy
    x = {"name": "X", "datatype": "FP32", "shape": [1, 5], "data": [0.5, 0.1, 0.0, 0.0, 1.0]}
    with (
        running_server(registry, "--poll-seconds", "0.2") as srv,
        httpx.Client(base_url=srv.url) as c,
    ):

        def gate() -> dict[str, Any]:
            meta = c.get("/v2/models/m").json()["parameters"]["versions"]["1"]
            return dict(meta["gate"])

        assert c.post("/v2/models/m/infer", json={"inputs": [x]}).status_code == 200
        (registry / "m" / "model.toml").write_text(config.format(0.85))
        wait_for(
            lambda: gate()["criteria"]["min_accuracy"]["threshold"] == 0.85,
            20,
            what="the edited [gate] read",
        )
        assert gate()["passed"] is True and "judged from the measurements" in gate()["reason"]
        assert c.post("/v2/models/m/infer", json={"inputs": [x]}).status_code == 200
        (registry / "m" / "model.toml").write_text(config.format(round(accuracy + 0.01, 4)))
        wait_for(lambda: gate()["passed"] is False, 20, what="the tightened [gate] read")
        r = c.post("/v2/models/m/infer", json={"inputs": [x]})
        assert r.status_code == 409 and "min_accuracy" in r.json()["error"], r.text
        assert "judged from the measurements in validation.json" in r.json()["error"]


@pytest.mark.slow
def test_a_validation_linked_from_outside_the_registry_is_not_read(
    gated: tuple[Path, Path], tmp_path: Path
) -> None:
    """A hostile review: a validation.json symlink to a forged file outside the registry,
    placed beside a loaded version, opened its gate at the next scan (the no-reload path
    skipped the check the load makes)."""
    _, data = gated
    registry = tmp_path / "registry"
    (registry / "m").mkdir(parents=True)
    (registry / "m" / "model.toml").write_text("[gate]\nrequire_gate = true\nmin_accuracy = 0.8\n")
    d = _classification(seed=5)
    publish(registry, "m", reference=data, estimator=LogisticRegression().fit(d["X"], d["y"]))
    assert validate_version(registry, "m", 1, data).passed
    outside = tmp_path / "outside"
    outside.mkdir()
    os.replace(registry / "m" / "1" / VALIDATION_FILE, outside / VALIDATION_FILE)
    x = {"name": "X", "datatype": "FP32", "shape": [1, 5], "data": [0.5, 0.1, 0.0, 0.0, 1.0]}
    with (
        running_server(registry, "--poll-seconds", "0.1") as srv,
        httpx.Client(base_url=srv.url) as c,
    ):
        assert c.post("/v2/models/m/infer", json={"inputs": [x]}).status_code == 409
        (registry / "m" / "1" / VALIDATION_FILE).symlink_to(outside / VALIDATION_FILE)

        def reason() -> str:
            meta = c.get("/v2/models/m").json()["parameters"]["versions"]["1"]
            return str(meta["gate"]["reason"])

        wait_for(lambda: "leads out of the registry" in reason(), 15, what="the link refused")
        r = c.post("/v2/models/m/infer", json={"inputs": [x]})
        assert r.status_code == 409 and "leads out of the registry" in r.json()["error"]


@pytest.mark.slow
def test_validation_written_to_a_running_server_opens_the_gate(
    gated: tuple[Path, Path], tmp_path: Path
) -> None:
    _, data = gated
    registry = tmp_path / "registry"
    (registry / "m").mkdir(parents=True)
    (registry / "m" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n[gate]\nrequire_gate = true\nmin_accuracy = 0.8\n'
    )
    d = _classification(seed=5)
    est = LogisticRegression().fit(d["X"], d["y"])
    for _ in range(2):
        publish(registry, "m", reference=data, estimator=est)
    validate_version(registry, "m", 1, data)
    env = {"MLSERVE_ADMIN_TOKEN": TOKEN}
    with (
        running_server(registry, "--poll-seconds", "0.2", env=env) as srv,
        httpx.Client(base_url=srv.url, headers=AUTH) as c,
    ):
        r = c.put("/v2/admin/models/m/routing", json={"canary": 2, "canary_weight": 20})
        assert r.status_code == 409 and "run `mlserve validate`" in r.json()["error"]
        out = subprocess.run(
            [sys.executable, "-m", "mlserve", "validate", "--registry", str(registry),
             "--model", "m", "--version", "2", "--data", str(data)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "min_accuracy" in out.stdout and "m v2: PASSED" in out.stdout
        wait_for(  # picked up by the next registry scans
            lambda: (
                c.put(
                    "/v2/admin/models/m/routing", json={"canary": 2, "canary_weight": 20}
                ).status_code
                == 200
            ),
            20,
            interval=0.2,
            what="the passed validation to let v2 be a canary",
        )
        # Read as a validation, in one scan: the version is not reloaded for it.
        synced = [
            json.loads(line)["after"]
            for line in (registry / "audit.jsonl").read_text().splitlines()
            if json.loads(line)["action"] == "sync"
        ]
        assert "m v2: validation read" in synced, synced
        assert not [s for s in synced if "reloaded" in str(s)], synced


@pytest.mark.slow
def test_cli_validate_exit_codes(gated: tuple[Path, Path]) -> None:
    registry, data = gated
    base = [sys.executable, "-m", "mlserve", "validate", "--registry", str(registry)]
    fail = subprocess.run(
        [*base, "--model", "eo", "--version", "2", "--data", str(data), "--dry-run"],
        capture_output=True,
        text=True,
    )
    assert fail.returncode == 1
    assert "max_equalized_odds_difference" in fail.stdout and "FAIL" in fail.stdout
    missing = subprocess.run(
        [*base, "--model", "eo", "--version", "2", "--data", str(data) + ".nope"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "mlserve:" in missing.stderr
    # without a group column a fairness gate cannot pass
    with np.load(data) as d:
        np.savez(data.with_name("nogroup.npz"), X=d["X"], y=d["y"])
    no_group = subprocess.run(
        [*base, "--model", "dp", "--version", "1", "--data", str(data.with_name("nogroup.npz")),
         "--dry-run"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert no_group.returncode == 1 and "no group column" in no_group.stdout
    # a classifier judged on real-valued labels: unusable input, exit 2
    floats = subprocess.run(
        [*base, "--model", "dp", "--version", "1", "--data", str(data.with_name("reg.npz")),
         "--dry-run"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert floats.returncode == 2 and "whole numbers" in floats.stderr


def test_golden_and_batch_latency_criteria(gated: tuple[Path, Path], tmp_path: Path) -> None:
    registry, data = gated
    reg = tmp_path / "registry"
    shutil.copytree(registry / "ok", reg / "ok")
    (reg / "ok" / "model.toml").write_text(
        "[gate]\nrequire_gate = true\nmax_p99_ms_batch = 0.0\nlatency_batch_size = 512\n"
    )
    report = validate_version(reg, "ok", 1, data, write=False)
    assert [c.name for c in report.failed()] == ["max_p99_ms_batch"]
    assert report.metrics["p99_ms_batch"] > 0 and report.metrics["latency_batch_size"] == 512
    samples = reg / "ok" / "2" / "samples.npz"
    with np.load(samples) as s:
        tampered = {k: s[k] for k in s.files}
    tampered["outputs.probabilities"] = tampered["outputs.probabilities"][::-1].copy()
    np.savez(samples, **tampered)
    (reg / "ok" / "model.toml").write_text("[gate]\nrequire_gate = true\n")
    report = validate_version(reg, "ok", 2, data, write=False)
    assert [c.name for c in report.failed()] == ["golden_outputs"]
    assert report.criteria[-2].value is not None and report.criteria[-2].value > 0.01


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d.update(criteria=5),
        lambda d: d.update(criteria=None),
        lambda d: d["criteria"][0].update(name=[1]),
        lambda d: d["criteria"][0].update(value="high", passed=False),
        lambda d: d["criteria"][0].update(passed="yes"),
        lambda d: d.clear(),
    ],
)
def test_malformed_validation_never_raises(
    gated: tuple[Path, Path], tmp_path: Path, mangle: Any
) -> None:
    registry, _ = gated
    vdir = tmp_path / "v"
    shutil.copytree(registry / "acc" / "1", vdir)
    doc = json.loads((vdir / VALIDATION_FILE).read_text())
    mangle(doc)
    (vdir / VALIDATION_FILE).write_text(json.dumps(doc))
    status = gate_status(vdir, GateConfig(require_gate=True, min_accuracy=0.8))
    assert not status.passed and "malformed" in status.reason


@pytest.mark.parametrize("gate", [None, [1], "x", 5, "missing"])
@pytest.mark.parametrize("config", [GateConfig(), GateConfig(require_gate=True, min_accuracy=0.8)])
def test_a_recorded_gate_that_is_not_a_table_never_raises(
    gated: tuple[Path, Path], tmp_path: Path, gate: Any, config: GateConfig
) -> None:
    """A hostile review: {"gate": null} raised TypeError out of gate_status, which failed the
    version's load even without require_gate."""
    registry, _ = gated
    vdir = tmp_path / "v"
    shutil.copytree(registry / "acc" / "1", vdir)
    doc = json.loads((vdir / VALIDATION_FILE).read_text())
    if gate == "missing":
        del doc["gate"]
    else:
        doc["gate"] = gate
    (vdir / VALIDATION_FILE).write_text(json.dumps(doc))
    status = gate_status(vdir, config)
    assert not status.passed and "another [gate]" in status.reason


def test_a_malformed_validation_leaves_the_server_serving(
    gated: tuple[Path, Path], tmp_path: Path
) -> None:
    registry, _ = gated
    reg = tmp_path / "registry"
    shutil.copytree(registry / "acc", reg / "acc")
    shutil.copytree(registry / "ok", reg / "ok")
    path = reg / "acc" / "1" / VALIDATION_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), "criteria": 5}))
    x = {"name": "X", "datatype": "FP32", "shape": [1, 5], "data": [0.5, 0.1, 0.0, 0.0, 1.0]}
    with running_server(reg) as srv:  # ready: the initial load finished
        meta = httpx.get(srv.url + "/v2/models/acc").json()["parameters"]["versions"]
        assert "malformed" in meta["1"]["gate"]["reason"]
        # nothing of acc passes now: not ready for unpinned traffic, which gets 409
        assert httpx.get(srv.url + "/v2/models/acc/ready").status_code == 503
        assert httpx.post(srv.url + "/v2/models/acc/infer", json={"inputs": [x]}).status_code == 409
        assert httpx.post(srv.url + "/v2/models/ok/infer", json={"inputs": [x]}).status_code == 200


def test_validations_from_before_a_new_gate_key_still_count(
    gated: tuple[Path, Path], tmp_path: Path
) -> None:
    registry, _ = gated
    vdir = tmp_path / "v"
    shutil.copytree(registry / "acc" / "1", vdir)
    doc = json.loads((vdir / VALIDATION_FILE).read_text())
    del doc["gate"]["min_group_rows"]  # written by a release without that key
    (vdir / VALIDATION_FILE).write_text(json.dumps(doc))
    assert gate_status(vdir, GateConfig(require_gate=True, min_accuracy=0.8)).passed


def _fairness_report(gated: tuple[Path, Path], tmp_path: Path, **arrays: Any) -> Any:
    registry, data = gated
    with np.load(data) as d:
        ev = {k: d[k] for k in d.files}
    ev.update(arrays)
    path = tmp_path / "ev.npz"
    np.savez(path, **ev)
    return validate_version(registry, "dp", 2, path, write=False)


def test_fairness_needs_two_real_groups_and_defined_rates(
    gated: tuple[Path, Path], tmp_path: Path
) -> None:
    with np.load(gated[1]) as d:
        y, g = d["y"], d["group"]
    one_group = _fairness_report(gated, tmp_path, group=np.zeros_like(g))
    (dp,) = [c for c in one_group.criteria if c.name == "max_demographic_parity_difference"]
    assert not dp.passed and dp.value is None and "at least 2 groups" in dp.note
    tiny = g.copy()
    tiny[:] = 0
    tiny[:3] = 1  # a second group of 3 rows is not enough evidence
    assert not _fairness_report(gated, tmp_path, group=tiny).passed
    # y of shape (n, 1) is one label per row, not an n × n comparison
    column = _fairness_report(gated, tmp_path, y=y[:, None])
    flat = _fairness_report(gated, tmp_path)
    assert column.metrics["accuracy"] == flat.metrics["accuracy"] > 0.5


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (lambda y: np.where(np.arange(len(y)) == 3, np.nan, y), "NaN"),
        (lambda y: y.astype(str), "labels are text"),
        (lambda y: np.stack([y, y], axis=1), "one per row"),
    ],
)
def test_unusable_labels_are_refused(
    gated: tuple[Path, Path], tmp_path: Path, labels: Any, message: str
) -> None:
    from mlserve.governance.gate import GateError

    with np.load(gated[1]) as d:
        y = d["y"]
    with pytest.raises(GateError, match=message):
        _fairness_report(gated, tmp_path, y=labels(y))


def test_text_labels_in_a_csv_say_what_to_do(gated: tuple[Path, Path], tmp_path: Path) -> None:
    """A new user's CSV with "malignant"/"benign" labels got "could not convert string to
    float"; it is told that the model predicts numbers."""
    from mlserve.governance.gate import GateError

    registry, data = gated
    with np.load(data) as d:
        frame = pd.DataFrame(d["X"], columns=[f"f{j}" for j in range(d["X"].shape[1])])
        frame["label"] = np.where(d["y"] == 1, "malignant", "benign")
    frame.to_csv(tmp_path / "eval.csv", index=False)
    with pytest.raises(GateError, match=r"label column holds text .*encode them"):
        validate_version(registry, "acc", 1, tmp_path / "eval.csv", write=False)


def test_an_evaluation_set_without_labels_exits_2_and_writes_nothing(
    gated: tuple[Path, Path], tmp_path: Path
) -> None:
    registry, data = gated
    target = registry / "acc" / "1" / "validation.json"
    before = target.read_bytes()
    with np.load(data) as d:
        np.savez(tmp_path / "nolabels.npz", X=d["X"], group=d["group"])
    done = subprocess.run(
        [sys.executable, "-m", "mlserve", "validate", "--registry", str(registry),
         "--model", "acc", "--version", "1", "--data", str(tmp_path / "nolabels.npz")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and "no labels" in done.stderr
    assert target.read_bytes() == before
