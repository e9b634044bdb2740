"""Rollout with a model of our own (scikit-learn's breast-cancer data, not the demo): traffic
moves only when someone says so, a failed gate is loud, and every move is audited.

Two versions published through ``mlserve publish`` (logistic regressions with different
regularisation), validated through ``mlserve validate``, served by a real server; requests
over real HTTP with routing keys.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from mlserve.governance.publish import publish

from .conftest import running_server, wait_for
from .support.metrics import parse

# Slow: every test here starts real servers and waits on them (-m "not slow" skips them).
pytestmark = pytest.mark.slow

TOKEN = "rollout-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GATE = "[gate]\nrequire_gate = true\nmin_accuracy = 0.9\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import pandas as pd

    raw = load_breast_cancer(as_frame=True)
    frame, y = raw.data, raw.target
    root = tmp_path_factory.mktemp("rollout")
    good = root / "eval.csv"
    frame.assign(y=y).to_csv(good, index=False)
    flipped = root / "flipped.csv"  # the labels inverted: accuracy ~ 0.05, the gate fails
    frame.assign(y=1 - y).to_csv(flipped, index=False)
    nolabels = root / "nolabels.csv"  # the typo of the issue: a file without the label column
    frame.to_csv(nolabels, index=False)
    estimators = [
        LogisticRegression(C=c, max_iter=5000).fit(frame, y) for c in (1.0, 0.05)
    ]  # fmt: skip
    return {
        "frame": frame,
        "y": y.to_numpy(),
        "good": good,
        "flipped": flipped,
        "nolabels": nolabels,
        "estimators": estimators,
        "pd": pd,
    }


def _registry(tmp_path: Path, data: dict[str, Any], toml: str) -> Path:
    root = tmp_path / "registry"
    publish(root, "cancer", reference=data["frame"], estimator=data["estimators"][0])
    (root / "cancer" / "model.toml").write_text('[versions]\npolicy = "all"\n' + toml)
    return root


def _validate(
    root: Path, version: int, path: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlserve", "validate", "--registry", str(root), "--model",
         "cancer", "--version", str(version), "--data", str(path), *extra],
        capture_output=True, text=True,
    )  # fmt: skip


def _rows(data: dict[str, Any], n: int = 1) -> dict[str, Any]:
    frame = data["frame"].iloc[:n]
    return {
        "inputs": [
            {"name": c, "datatype": "FP64", "shape": [n], "data": frame[c].tolist()}
            for c in frame.columns
        ]
    }


def _served(c: httpx.Client, data: dict[str, Any], keys: range) -> dict[str, int]:
    seen: dict[str, int] = {}
    for k in keys:
        r = c.post(
            "/v2/models/cancer/infer",
            json=_rows(data),
            headers={"mlserve-routing-key": f"customer-{k}"},
        )
        assert r.status_code == 200, r.text
        v = r.headers["mlserve-model-version"]
        seen[v] = seen.get(v, 0) + 1
    return seen


def _audit(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / "audit.jsonl").read_text().splitlines()]


@pytest.fixture()
def server(tmp_path: Path, data: dict[str, Any]) -> Iterator[tuple[Path, httpx.Client, Any]]:
    root = _registry(tmp_path, data, GATE)
    assert _validate(root, 1, data["good"]).returncode == 0
    env = {"MLSERVE_ADMIN_TOKEN": TOKEN}
    with (
        running_server(root, "--poll-seconds", "0.1", env=env) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        yield root, c, srv


def test_publish_and_validate_never_move_traffic(
    server: tuple[Path, httpx.Client, Any], data: dict[str, Any]
) -> None:
    root, c, srv = server
    assert _served(c, data, range(50)) == {"1": 50}
    publish(root, "cancer", reference=data["frame"], estimator=data["estimators"][1])
    wait_for(lambda: c.get("/v2/models/cancer").json()["versions"] == ["1", "2"])
    out = _validate(root, 2, data["good"])
    assert out.returncode == 0 and "cancer v2: PASSED" in out.stdout, out.stdout + out.stderr
    wait_for(lambda: c.get("/v2/models/cancer/versions/2").json()["parameters"]["gate"]["passed"])
    assert _served(c, data, range(200)) == {"1": 200}  # before: v1; after: still v1
    meta = c.get("/v2/models/cancer").json()["parameters"]
    assert meta["routing"] == {"stable": "1", "canary": None, "canary_weight": 0.0}
    records = _audit(root)
    pins = [r for r in records if r["action"] == "pin"]
    assert len(pins) == 1 and pins[0]["after"]["pinned_stable"] == 1
    assert pins[0]["before"]["serving"] == pins[0]["after"]["serving"]  # a record, no move
    assert not [r for r in records if r["action"] == "serving"]  # nothing moved
    # The canary PUT takes effect and the metadata agrees (it did not while stable = 0
    # meant "the highest version": the canary was that version and silently dropped).
    r = c.put(
        "/v2/admin/models/cancer/routing", headers=AUTH, json={"canary": 2, "canary_weight": 20}
    )
    assert r.status_code == 200, r.text
    assert r.json()["serving"] == {"stable": 1, "canary": 2, "canary_weight": 20.0, "shadows": []}
    meta = c.get("/v2/models/cancer").json()["parameters"]
    assert meta["routing"] == {"stable": "1", "canary": "2", "canary_weight": 20.0}
    seen = _served(c, data, range(1000))
    # Sticky CRC-32 keys: the share is exact for these keys; check it against the policy.
    from mlserve.routing.policy import bucket

    expected = sum(bucket(f"customer-{k}") < 2000 for k in range(1000))
    assert seen == {"1": 1000 - expected, "2": expected}
    # Promote, then roll back: the previous stable serves again.
    r = c.post("/v2/admin/models/cancer/promote", headers=AUTH)
    assert r.json()["serving"]["stable"] == 2 and _served(c, data, range(20)) == {"2": 20}
    r = c.post("/v2/admin/models/cancer/rollback", headers=AUTH)
    assert r.status_code == 200 and r.json()["serving"]["stable"] == 1
    assert _served(c, data, range(20)) == {"1": 20}
    actions = [(r["action"], r["after"]["serving"]) for r in _audit(root)[-3:]]
    assert [a for a, _ in actions] == ["set_routing", "promote", "rollback"]
    assert [s["stable"] for _, s in actions] == [1, 2, 1]
    # A canary equal to the stable version, or one not ready, is refused with the reason:
    # named as the stable, or the pinned one once the override is reset.
    r = c.put("/v2/admin/models/cancer/routing", headers=AUTH, json={"canary": 1})
    assert r.status_code == 400 and "canary must differ from stable" in r.json()["error"]
    r = c.delete("/v2/admin/models/cancer/routing", headers=AUTH)
    assert r.json()["override"] is None and r.json()["serving"]["stable"] == 1  # the pin
    r = c.put("/v2/admin/models/cancer/routing", headers=AUTH, json={"canary": 1})
    assert r.status_code == 400 and "it is the stable version" in r.json()["error"]
    r = c.put("/v2/admin/models/cancer/routing", headers=AUTH, json={"canary": 9})
    assert r.status_code == 400 and "does not exist in the registry" in r.json()["error"]
    assert srv.proc.poll() is None


def test_a_failing_validation_of_the_serving_version_needs_force_and_is_loud(
    server: tuple[Path, httpx.Client, Any], data: dict[str, Any]
) -> None:
    root, c, srv = server
    validation = root / "cancer" / "1" / "validation.json"
    passed = validation.read_text()
    # The typo: a file without labels is unusable input (exit 2), nothing written.
    out = _validate(root, 1, data["nolabels"])
    assert out.returncode == 2 and "has no labels" in out.stderr
    assert validation.read_text() == passed
    # A failing result for the version that serves: not written without --force.
    out = _validate(root, 1, data["flipped"])
    assert out.returncode == 1 and "FAIL" in out.stdout
    assert "serves unpinned traffic as the stable version" in out.stderr
    assert "--force" in out.stderr and validation.read_text() == passed
    assert _served(c, data, range(10)) == {"1": 10}
    # With --force it is written: the model loses its only servable version, and says so.
    out = _validate(root, 1, data["flipped"], "--force")
    assert out.returncode == 1 and "wrote" in out.stdout
    wait_for(lambda: c.post("/v2/models/cancer/infer", json=_rows(data)).status_code == 409)
    refused = 0
    for _ in range(5):
        r = c.post("/v2/models/cancer/infer", json=_rows(data))
        assert r.status_code == 409 and r.json()["code"] == "gate_not_passed"
        refused += 1
    assert c.get("/v2/models/cancer/ready").status_code == 503
    metrics = parse(c.get("/metrics").text)

    counted = metrics.value(
        "mlserve_requests_total", model="cancer", version="1", role="stable", outcome="refused"
    )
    assert counted >= refused + 1  # the wait_for's 409 and these five
    assert metrics.value("mlserve_model_servable", model="cancer", version="1") == 0
    assert metrics.value("mlserve_model_gate_passed", model="cancer", version="1") == 0
    assert metrics.value("mlserve_model_ready", model="cancer", version="1") == 1  # loaded, refused
    wait_for(lambda: "no version may take unpinned traffic" in srv.log())
    warning = next(line for line in srv.log().splitlines() if "no version may take" in line)
    assert "WARNING" in warning and "min_accuracy" in warning
    moved = [r for r in _audit(root) if r["action"] == "serving"]
    assert moved[-1]["before"]["serving"]["stable"] == 1 and moved[-1]["after"]["serving"] is None
    assert "cancer v1: validation read" in moved[-1]["cause"]  # judged again, not reloaded
    # Validating again with good data brings it back.
    assert _validate(root, 1, data["good"]).returncode == 0
    wait_for(lambda: c.post("/v2/models/cancer/infer", json=_rows(data)).status_code == 200)
    metrics = parse(c.get("/metrics").text)
    assert metrics.value("mlserve_model_servable", model="cancer", version="1") == 1


def test_auto_promote_latest_passing_is_the_opt_in(tmp_path: Path, data: dict[str, Any]) -> None:
    root = _registry(tmp_path, data, '[routing]\nauto_promote = "latest-passing"\n')
    with (
        running_server(root, "--poll-seconds", "0.1") as srv,
        httpx.Client(base_url=srv.url) as c,
    ):
        assert _served(c, data, range(5)) == {"1": 5}
        publish(root, "cancer", reference=data["frame"], estimator=data["estimators"][1])
        wait_for(lambda: _served(c, data, range(1)) == {"2": 1})
    # The pin follows what auto-promotion serves: switching it off later moves nothing.
    assert json.loads((root / "cancer" / "routing.json").read_text())["pinned_stable"] == 2
    moved = [r for r in _audit(root) if r["action"] == "serving"]
    assert [(r["before"]["serving"]["stable"], r["after"]["serving"]["stable"]) for r in moved] == [
        (1, 2)
    ]
    assert "cancer v2: loaded" in moved[0]["cause"]


def test_state_dir_keeps_routing_and_audit_out_of_a_read_only_registry(
    tmp_path: Path, data: dict[str, Any]
) -> None:
    root = _registry(tmp_path, data, "")
    publish(root, "cancer", reference=data["frame"], estimator=data["estimators"][1])
    state = tmp_path / "state"
    root.chmod(0o555)  # as mounted read-only (root ignores modes: the files tell)
    env = {"MLSERVE_ADMIN_TOKEN": TOKEN}
    try:
        with (
            running_server(root, "--state-dir", str(state), env=env) as srv,
            httpx.Client(base_url=srv.url) as c,
        ):
            r = c.put(
                "/v2/admin/models/cancer/routing",
                headers=AUTH,
                json={"stable": 1, "canary": 2, "canary_weight": 50},
            )
            assert r.status_code == 200, r.text
        with running_server(root, "--state-dir", str(state), env=env) as srv:
            r = httpx.get(srv.url + "/v2/admin/models/cancer/routing", headers=AUTH)
            assert r.json()["serving"]["canary"] == 2  # a restart loses nothing
    finally:
        root.chmod(0o755)
    assert not (root / "cancer" / "routing.json").exists() and not (root / "audit.jsonl").exists()
    saved = json.loads((state / "cancer" / "routing.json").read_text())
    # pinned first to v2 (the highest at the first start), then to v1, the stable named
    assert saved["override"]["canary"] == 2 and saved["pinned_stable"] == 1
    assert [r["action"] for r in _audit(state)] == ["pin", "set_routing"]
    assert [r["after"]["pinned_stable"] for r in _audit(state)] == [2, 1]
