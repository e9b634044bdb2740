"""The stable pin under the version policy, restarts, failed loads, removals and a broken
``routing.json``: traffic moves only on an explicit action, or, when the version serving
cannot, to a documented fallback that is warned about and audited with its cause."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import linear_model, running_server, wait_for, write_version

TOKEN = "edges-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV = {"MLSERVE_ADMIN_TOKEN": TOKEN}
X = {"name": "X", "datatype": "FP32", "shape": [1, 20], "data": [0.25] * 20}


def add(root: Path, version: int) -> None:
    """What a publisher does: write a hidden directory, then rename it into place."""
    tmp = write_version(root, "r", 0, linear_model(seed=version))
    hidden = root / "r" / f".tmp-{version}"
    os.rename(tmp, hidden)
    os.rename(hidden, root / "r" / str(version))


def who(c: httpx.Client) -> str:
    r = c.post("/v2/models/r/infer", json={"inputs": [X]})
    assert r.status_code == 200, r.text
    return str(r.headers["mlserve-model-version"])


def state(root: Path) -> dict[str, Any]:
    return dict(json.loads((root / "r" / "routing.json").read_text()))


def audit(root: Path, action: str) -> list[dict[str, Any]]:
    lines = (root / "audit.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["action"] == action]


@pytest.mark.slow
def test_rollback_after_promote_under_the_default_version_policy(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    add(root, 1)  # policy latest(1), the default
    with (
        running_server(root, "--poll-seconds", "0.1", env=ENV) as srv,
        httpx.Client(base_url=srv.url) as c,
    ):
        add(root, 2)
        wait_for(lambda: c.get("/v2/models/r").json()["versions"] == ["1", "2"])
        assert who(c) == "1"
        routing = "/v2/admin/models/r/routing"
        assert c.put(routing, headers=AUTH, json={"canary": 2, "canary_weight": 10}).is_success
        r = c.post("/v2/admin/models/r/promote", headers=AUTH)
        assert r.json()["serving"]["stable"] == 2 and r.json()["pinned_stable"] == 2
        time.sleep(0.6)  # an absence to show: six scans go by, v1 (the previous) stays
        assert c.get("/v2/models/r").json()["versions"] == ["1", "2"]
        r = c.post("/v2/admin/models/r/rollback", headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["serving"]["stable"] == 1 and who(c) == "1"
        # Dropping the override now keeps what serves (the pin followed the rollback).
        r = c.delete(routing, headers=AUTH)
        assert r.json()["override"] is None and r.json()["serving"]["stable"] == 1
        time.sleep(0.3)  # latest(1) keeps v2 loaded beside the pinned v1; v1 serves
        assert c.get("/v2/models/r").json()["versions"] == ["1", "2"] and who(c) == "1"


@pytest.mark.slow
def test_reset_after_promote_keeps_the_promoted_version(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    add(root, 1)
    with (
        running_server(root, "--poll-seconds", "0.1", env=ENV) as srv,
        httpx.Client(base_url=srv.url) as c,
    ):
        add(root, 2)
        wait_for(lambda: c.get("/v2/models/r").json()["versions"] == ["1", "2"])
        c.put("/v2/admin/models/r/routing", headers=AUTH, json={"canary": 2, "canary_weight": 5})
        c.post("/v2/admin/models/r/promote", headers=AUTH)
        r = c.delete("/v2/admin/models/r/routing", headers=AUTH)
        assert r.json()["serving"]["stable"] == 2
        time.sleep(0.5)  # an absence to show: five scans go by, nothing moves
        assert who(c) == "2"
    assert not audit(root, "serving")  # nothing moved by itself


@pytest.mark.slow
def test_a_pinned_version_failing_at_start_keeps_its_pin_and_comes_back(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    add(root, 1)
    (root / "r" / "model.toml").write_text('[versions]\npolicy = "all"\n')
    with running_server(root, "--poll-seconds", "0.1") as srv, httpx.Client(base_url=srv.url) as c:
        add(root, 2)
        wait_for(lambda: c.get("/v2/models/r").json()["versions"] == ["1", "2"])
        assert who(c) == "1"
    assert state(root)["pinned_stable"] == 1
    model = (root / "r" / "1" / "model.onnx").read_bytes()
    (root / "r" / "1" / "model.onnx").write_bytes(b"broken")  # v1 fails to load at start
    (root / "r" / "1" / "lineage.json").unlink()
    with running_server(root, "--poll-seconds", "0.1") as srv, httpx.Client(base_url=srv.url) as c:
        assert who(c) == "2"  # something must serve: the highest version that can
        assert state(root)["pinned_stable"] == 1  # the pin is kept: v1 is still there
        wait_for(lambda: "the stable version cannot serve" in srv.log())
        wait_for(lambda: bool([e for e in audit(root, "serving") if "at start" in e["cause"]]))
        moved = [e for e in audit(root, "serving") if "at start" in e["cause"]]
        assert moved[-1]["before"]["serving"]["stable"] == 1
        assert moved[-1]["after"]["serving"]["stable"] == 2
        assert "v1 is failed" in moved[-1]["cause"]
        (root / "r" / "1" / "model.onnx").write_bytes(model)  # repaired: v1 serves again
        wait_for(lambda: who(c) == "1")

        def moved_back() -> list[dict[str, Any]]:  # audited just after the swap is in force
            return [
                e
                for e in audit(root, "serving")
                if (e["before"]["serving"]["stable"], e["after"]["serving"]["stable"]) == (2, 1)
            ]

        wait_for(lambda: bool(moved_back()), what="the move back to v1 audited")
        back = moved_back()[-1]
        assert "r v1: reloaded" in back["cause"]


@pytest.mark.slow
def test_a_removed_stable_falls_back_to_the_canary_not_to_the_newest(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    add(root, 1)
    (root / "r" / "model.toml").write_text('[versions]\npolicy = "all"\n')
    with (
        running_server(root, "--poll-seconds", "0.1", env=ENV) as srv,
        httpx.Client(base_url=srv.url) as c,
    ):
        add(root, 2)
        add(root, 3)
        wait_for(lambda: c.get("/v2/models/r").json()["versions"] == ["1", "2", "3"])
        r = c.put(
            "/v2/admin/models/r/routing", headers=AUTH, json={"canary": 2, "canary_weight": 10}
        )
        assert r.json()["serving"] == {
            "stable": 1,
            "canary": 2,
            "canary_weight": 10.0,
            "shadows": [],
        }
        shutil.rmtree(root / "r" / "1")
        wait_for(lambda: c.get("/v2/models/r").json()["versions"] == ["2", "3"])
        wait_for(lambda: who(c) == "2")
        meta = c.get("/v2/models/r").json()["parameters"]["routing"]
        assert meta == {"stable": "2", "canary": None, "canary_weight": 0.0}
        wait_for(lambda: state(root)["pinned_stable"] == 2)
    moved = audit(root, "serving")[-1]
    assert moved["before"]["serving"]["stable"] == 1 and moved["after"]["serving"]["stable"] == 2
    assert "r v1: retired" in moved["cause"]


@pytest.mark.slow
def test_a_broken_routing_json_at_start_moves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    add(root, 1)
    (root / "r" / "model.toml").write_text('[versions]\npolicy = "all"\n')
    add(root, 2)
    broken = '{"schema": 2, "override": null, "pinned_stable": 1, "previous_stable": 0,}'
    (root / "r" / "routing.json").write_text(broken)
    with (
        running_server(root, "--poll-seconds", "0.1", env=ENV) as srv,
        httpx.Client(base_url=srv.url) as c,
    ):
        r = c.post("/v2/models/r/infer", json={"inputs": [X]})
        assert r.status_code == 503, r.text
        assert "routing state can be read" in r.json()["error"]
        assert "fix or remove routing.json" in r.json()["error"]
        pinned = c.post("/v2/models/r/versions/2/infer", json={"inputs": [X]})
        assert pinned.status_code == 200  # a URL that names a version still serves
        r = c.put("/v2/admin/models/r/routing", headers=AUTH, json={"canary": 2})
        assert r.status_code == 503 and "fix or remove routing.json" in r.json()["error"]
        assert (root / "r" / "routing.json").read_text() == broken  # nothing wrote over it
        (root / "r" / "routing.json").write_text(broken.replace(",}", "}"))
        wait_for(lambda: c.post("/v2/models/r/infer", json={"inputs": [X]}).status_code == 200)
        assert who(c) == "1"
    assert not audit(root, "pin")


@pytest.mark.slow
def test_switching_auto_promote_off_keeps_what_serves(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    add(root, 1)
    toml = root / "r" / "model.toml"
    toml.write_text('[routing]\nauto_promote = "latest-passing"\n')
    with running_server(root, "--poll-seconds", "0.1") as srv, httpx.Client(base_url=srv.url) as c:
        add(root, 2)
        wait_for(lambda: who(c) == "2")
        wait_for(lambda: c.get("/v2/models/r").json()["versions"] == ["2"])
        toml.write_text('[routing]\nauto_promote = "off"\n')
        wait_for(lambda: "r: model.toml changed" in (root / "audit.jsonl").read_text())
        time.sleep(0.5)  # an absence to show: five scans go by, nothing moves
        assert who(c) == "2" and c.get("/v2/models/r").json()["versions"] == ["2"]
    assert state(root)["pinned_stable"] == 2


def test_the_state_dir_must_be_writable(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = tmp_path / "registry"
    add(root, 1)
    afile = tmp_path / "afile"
    afile.write_text("")
    out = subprocess.run(
        [sys.executable, "-m", "mlserve", "serve", "--registry", str(root),
         "--state-dir", str(afile / "state")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "is not a writable directory" in out.stderr and "audit log" in out.stderr
