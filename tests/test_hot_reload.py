"""Hot reload under load: publish, reconfigure, remove and break versions while serving."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from .conftest import linear_model, running_server, wait_for, write_version
from .support.metrics import parse

X = {"name": "X", "datatype": "FP32", "shape": [1, 20], "data": [0.25] * 20}


def publish(root: Path, model: str, version: int, seed: int) -> None:
    """What a publisher does: write a hidden directory, then rename it into place."""
    tmp = write_version(root, model, 0, linear_model(seed=seed))  # <model>/0/ as scratch
    hidden = root / model / f".tmp-{version}"
    os.rename(tmp, hidden)
    os.rename(hidden, root / model / str(version))


@pytest.mark.slow
def test_publish_reconfigure_and_remove_under_load(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    write_version(root, "live", 1, linear_model(seed=1))
    write_version(root, "other", 1, linear_model(seed=9))
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    stop = threading.Event()

    def load(url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as c:
            while not stop.is_set():
                r = c.post("/v2/models/live/infer", json={"inputs": [X]})
                statuses[r.status_code] += 1
                versions[r.headers.get("mlserve-model-version", "none")] += 1

    with running_server(root, "--poll-seconds", "0.1") as srv, httpx.Client(base_url=srv.url) as c:
        worker = threading.Thread(target=load, args=(srv.url,))
        worker.start()
        try:
            time.sleep(0.5)
            publish(root, "live", 2, seed=2)  # loads beside v1, which stays stable (pinned)
            wait_for(lambda: c.get("/v2/models/live").json()["versions"] == ["1", "2"])
            time.sleep(0.3)
            assert c.get("/v2/models/live").json()["parameters"]["routing"]["stable"] == "1"
            # Someone moves traffic: model.toml names v2; latest(1) then leaves v1 out.
            (root / "live" / "model.toml").write_text("[routing]\nstable = 2\n")
            wait_for(lambda: c.get("/v2/models/live").json()["versions"] == ["2"])
            (root / "live" / "model.toml").write_text(
                '[versions]\npolicy = "all"\n[routing]\nstable = 2\n'
            )
            wait_for(lambda: c.get("/v2/models/live").json()["versions"] == ["1", "2"])
            shutil.rmtree(root / "live" / "2")  # removed: retired, v1 serves again
            wait_for(lambda: c.get("/v2/models/live").json()["versions"] == ["1"])
            time.sleep(0.3)
        finally:
            stop.set()
            worker.join()
        assert c.get("/v2/models/live/versions/2").status_code == 404
        shutil.rmtree(root / "other")
        wait_for(lambda: c.get("/v2/models/other").status_code == 404)
        assert c.post("/v2/models/live/infer", json={"inputs": [X]}).status_code == 200
    assert set(statuses) == {200}, statuses  # zero failed requests
    records = [json.loads(x) for x in (root / "audit.jsonl").read_text().splitlines()]
    audited = [r["after"] for r in records]
    assert "live v2: loaded" in audited and "live v2: retired" in audited
    # Every change of who serves, with its cause: v1 → v2 (model.toml), v2 → v1 (removed).
    moves = [
        (r["before"]["serving"]["stable"], r["after"]["serving"]["stable"], r["cause"])
        for r in records
        if r["action"] == "serving" and r["model"] == "live"
    ]
    assert [m[:2] for m in moves] == [(1, 2), (2, 1)], moves
    assert "model.toml changed" in moves[0][2] and "live v2: retired" in moves[1][2]
    assert sum(statuses.values()) > 100
    assert set(versions) == {"1", "2"} and versions["none"] == 0


@pytest.mark.slow
def test_broken_or_invalid_changes_never_disturb_what_serves(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    write_version(root, "m", 1, linear_model(seed=1))
    (root / "m" / "model.toml").write_text('[versions]\npolicy = "all"\n')
    with running_server(root, "--poll-seconds", "0.1") as srv, httpx.Client(base_url=srv.url) as c:
        before = c.post("/v2/models/m/infer", json={"inputs": [X]}).json()
        # A truncated model dropped in as version 2: recorded as failed, v1 keeps serving.
        data = (root / "m" / "1" / "model.onnx").read_bytes()
        (root / "m" / "2").mkdir()
        (root / "m" / "2" / "model.onnx").write_bytes(data[: len(data) // 2])
        wait_for(lambda: "2" in c.get("/v2/models/m").json()["parameters"]["versions"])
        meta = c.get("/v2/models/m").json()
        assert meta["versions"] == ["1"]
        assert meta["parameters"]["versions"]["2"]["state"] == "failed"
        # Version 1's file is overwritten with garbage: the reload fails, the loaded session
        # keeps serving and says so.
        (root / "m" / "1" / "model.onnx").write_bytes(b"garbage")
        wait_for(lambda: "reload failed" in str(c.get("/v2/models/m").json()))
        r = c.post("/v2/models/m/versions/1/infer", json={"inputs": [X]})
        assert r.status_code == 200 and r.json()["outputs"] == before["outputs"]
        # An invalid model.toml: the previous configuration stays in force.
        (root / "m" / "model.toml").write_text("[versions]\npolicy = 'sometimes'\n")
        wait_for(lambda: "config_error" in c.get("/v2/models/m").json()["parameters"])
        assert c.post("/v2/models/m/infer", json={"inputs": [X]}).status_code == 200
        # The file is fixed: version 1 reloads from it.
        (root / "m" / "1" / "model.onnx").write_bytes(data)
        (root / "m" / "model.toml").write_text('[versions]\npolicy = "all"\n')
        wait_for(lambda: "config_error" not in c.get("/v2/models/m").json()["parameters"])
        wait_for(
            lambda: "reason" not in c.get("/v2/models/m").json()["parameters"]["versions"]["1"]
        )
        scores = c.post("/v2/models/m/versions/1/infer", json={"inputs": [X]}).json()["outputs"]
        np.testing.assert_array_equal(scores[0]["data"], before["outputs"][0]["data"])


@pytest.mark.slow
def test_counters_survive_a_reload(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    write_version(root, "m", 1, linear_model(seed=1))

    def scores(c: httpx.Client) -> list[float]:
        r = c.post("/v2/models/m/infer", json={"inputs": [X]})
        assert r.status_code == 200
        return list(r.json()["outputs"][0]["data"])

    with running_server(root, "--poll-seconds", "0.1") as srv, httpx.Client(base_url=srv.url) as c:
        before = scores(c)
        for _ in range(4):
            assert scores(c) == before
        write_version(root, "m", 1, linear_model(seed=3))  # same version, new files
        served = 5

        def reloaded() -> bool:
            nonlocal served
            served += 1
            return scores(c) != before  # the reloaded session answers

        wait_for(reloaded, 15, what="version 1 to be reloaded", interval=0)
        text = c.get("/metrics").text
    counted = parse(text).value(
        "mlserve_requests_total", model="m", version="1", role="stable", outcome="success"
    )
    assert counted == served


@pytest.mark.slow
def test_a_broken_new_latest_version_never_retires_the_serving_one(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    write_version(root, "m", 1, linear_model(seed=1))  # policy latest(1), the default
    with running_server(root, "--poll-seconds", "0.1") as srv, httpx.Client(base_url=srv.url) as c:
        (root / "m" / "2").mkdir()
        (root / "m" / "2" / "model.onnx").write_bytes(b"not a model")
        wait_for(lambda: "2" in c.get("/v2/models/m").json()["parameters"]["versions"])
        time.sleep(0.5)  # several more scans
        meta = c.get("/v2/models/m").json()
        assert meta["versions"] == ["1"]
        assert meta["parameters"]["versions"]["2"]["state"] == "failed"
        r = c.post("/v2/models/m/infer", json={"inputs": [X]})
        assert r.status_code == 200 and r.headers["mlserve-model-version"] == "1"
        publish(root, "m", 3, seed=3)  # a good newer version: failed v2 retires, v1 stays
        wait_for(lambda: c.get("/v2/models/m").json()["versions"] == ["1", "3"])
        assert set(c.get("/v2/models/m").json()["parameters"]["versions"]) == {"1", "3"}
        r = c.post("/v2/models/m/infer", json={"inputs": [X]})
        assert r.headers["mlserve-model-version"] == "1"  # pinned: v3 waits to be promoted


@pytest.mark.slow
def test_routing_override_survives_a_model_leaving_and_coming_back(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    for v in (1, 2):
        write_version(root, "m", v, linear_model(seed=v))
    (root / "m" / "model.toml").write_text('[versions]\npolicy = "all"\n')
    (root / "m" / "routing.json").write_text(
        json.dumps({"stable": 1, "canary": 2, "canary_weight": 40.0})
    )
    with running_server(root, "--poll-seconds", "0.1") as srv, httpx.Client(base_url=srv.url) as c:

        def weight() -> Any:
            r = c.get("/v2/models/m")
            return (
                r.json()["parameters"].get("routing", {}).get("canary_weight")
                if (r.status_code == 200)
                else None
            )

        assert weight() == 40.0
        os.rename(root / "m", tmp_path / "m-away")
        wait_for(lambda: c.get("/v2/models/m").status_code == 404)
        os.rename(tmp_path / "m-away", root / "m")
        wait_for(lambda: weight() == 40.0)


@pytest.mark.slow
def test_a_model_toml_edit_reloads_versions_only_when_it_changes_how_they_are_built(
    tmp_path: Path,
) -> None:
    """A new-user finding: any model.toml edit (a guardrail, a gate threshold) reloaded every
    version, cold sessions and emptied drift windows included. Routing, guardrails, the
    version policy and the gate reach loaded versions as they are; execution, inputs,
    batching, monitoring and payloads rebuild them."""
    root = tmp_path / "registry"
    write_version(root, "m", 1, linear_model(seed=1))
    audit = root / "audit.jsonl"

    def synced() -> list[str]:
        if not audit.exists():
            return []
        lines = [json.loads(line) for line in audit.read_text().splitlines()]
        return [str(e.get("after")) for e in lines if e.get("action") == "sync"]

    with running_server(root, "--poll-seconds", "0.1") as srv, httpx.Client(base_url=srv.url) as c:
        assert c.post("/v2/models/m/infer", json={"inputs": [X]}).status_code == 200
        edits = (
            "[guardrails]\nenabled = true\nmin_requests = 50\n",
            "[gate]\nmin_accuracy = 0.9\n",
            '[versions]\npolicy = "all"\n',
        )
        for n, text in enumerate(edits, start=1):
            (root / "m" / "model.toml").write_text(text)
            wait_for(
                lambda n=n: sum("m: model.toml changed" in s for s in synced()) == n,
                15,
                what=f"edit {n} read",
            )
            assert c.post("/v2/models/m/infer", json={"inputs": [X]}).status_code == 200
        assert not [s for s in synced() if "reloaded" in s], synced()
        # Each edit's record says what it changed (the third undoes the first two).
        said = [s for s in synced() if "model.toml changed" in s]
        assert said[0] == (
            "m: model.toml changed ([guardrails] enabled False -> True; "
            "[guardrails] min_requests 200 -> 50)"
        ), said
        assert said[1] == (
            "m: model.toml changed ([guardrails] enabled True -> False; [guardrails] "
            "min_requests 50 -> 200; [gate] min_accuracy None -> 0.9)"
        ), said
        assert "[versions] policy" in said[2] and "[gate] min_accuracy 0.9 -> None" in said[2]
        (root / "m" / "model.toml").write_text('[execution]\nmode = "thread"\n')
        wait_for(lambda: "m v1: reloaded" in synced(), 15, what="the execution change")
        assert c.post("/v2/models/m/infer", json={"inputs": [X]}).status_code == 200
