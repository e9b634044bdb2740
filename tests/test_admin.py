"""Admin API: authentication, routing changes persisted and audited, audit verification."""

from __future__ import annotations

import gzip
import itertools
import json
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import linear_model, running_server, write_version
from .support.waiting import wait_for

TOKEN = "s3cret-token-for-tests"
X = {"name": "X", "datatype": "FP32", "shape": [1, 20], "data": [0.25] * 20}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def two_version_registry(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    for v in (1, 2):
        write_version(root, "m", v, linear_model(seed=v))
    (root / "m" / "model.toml").write_text('[versions]\npolicy = "all"\n[routing]\nstable = 1\n')
    return root


def test_admin_is_refused_without_a_configured_token(two_version_registry: Path) -> None:
    with running_server(two_version_registry) as srv:
        r = httpx.get(srv.url + "/v2/admin/models/m/routing", headers=AUTH)
        assert r.status_code == 403 and "MLSERVE_ADMIN_TOKEN" in r.json()["error"]


@pytest.mark.slow
def test_admin_bodies_may_be_compressed_within_the_same_limit(
    two_version_registry: Path,
) -> None:
    """Only /infer inflated Content-Encoding: a gzip routing change was 'malformed JSON'."""
    url = "/v2/admin/models/m/routing"
    with (
        running_server(two_version_registry, env={"MLSERVE_ADMIN_TOKEN": TOKEN}) as srv,
        httpx.Client(base_url=srv.url) as c,
    ):
        change = json.dumps({"canary": 2, "canary_weight": 40}).encode()
        for name, packed in (("gzip", gzip.compress(change)), ("deflate", zlib.compress(change))):
            r = c.put(url, headers={**AUTH, "content-encoding": name}, content=packed)
            assert r.status_code == 200 and r.json()["effective"]["canary_weight"] == 40, r.text
        huge = b'{"canary": 2, "pad": "' + b"x" * (2 << 20) + b'"}'  # over the 1 MiB limit
        for method, target in (("PUT", url), ("POST", "/v2/repository/index")):
            headers = {**AUTH, "content-encoding": "gzip"}
            r = c.request(method, target, headers=headers, content=gzip.compress(huge))
            assert r.status_code == 413 and "decompressed (gzip)" in r.json()["error"], r.text
            headers["content-encoding"] = "br"
            r = c.request(method, target, headers=headers, content=b"{}")
            assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
        index = c.post(
            "/v2/repository/index",
            headers={**AUTH, "content-encoding": "gzip"},
            content=gzip.compress(b'{"ready": true}'),
        )
        assert index.status_code == 200 and len(index.json()) == 2


@pytest.mark.slow
def test_routing_changes_are_authenticated_persisted_and_audited(
    two_version_registry: Path,
) -> None:
    env = {"MLSERVE_ADMIN_TOKEN": TOKEN}
    with running_server(two_version_registry, env=env) as srv, httpx.Client(base_url=srv.url) as c:
        url = "/v2/admin/models/m/routing"
        assert c.get(url).status_code == 401
        r = c.get(url, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert c.get(url, headers={"Authorization": TOKEN}).status_code == 401  # no scheme
        state = c.get(url, headers=AUTH).json()
        assert state["effective"]["stable"] == 1 and state["override"] is None
        r = c.put(url, headers=AUTH, json={"canary": 2, "canary_weight": 100})
        assert r.status_code == 200, r.text
        assert r.json()["effective"]["canary"] == 2
        hit = c.post("/v2/models/m/infer", json={"inputs": [X]})
        assert (hit.headers["mlserve-model-version"], hit.headers["mlserve-route"]) == (
            "2",
            "canary",
        )
        bad = c.put(url, headers=AUTH, json={"canary": 7})
        assert bad.status_code == 400, bad.text
        assert "canary version 7 of 'm' does not exist in the registry" in bad.json()["error"]
        bad = c.put(url, headers=AUTH, json={"shadows": [7]})
        assert bad.status_code == 400 and "[7] of 'm' do not exist" in bad.json()["error"]
        # Versions as the protocol writes them (metadata and this GET show "2"): taken.
        same = c.put(url, headers=AUTH, json={"canary": "2", "canary_weight": 100})
        assert same.status_code == 200 and same.json()["effective"]["canary"] == 2, same.text
        for wrong in ("two", "-2", "2.0", " 2", "٢"):  # the last: an Arabic-Indic two
            bad = c.put(url, headers=AUTH, json={"canary": wrong})
            assert bad.status_code == 400 and "must be an integer" in bad.json()["error"], wrong
        bad = c.put(url, headers=AUTH, json={"canary_weight": 250})
        assert bad.status_code == 400 and "canary_weight" in bad.json()["error"]
        assert c.put(url, headers=AUTH, content=b"{").status_code == 400
        huge = b'{"canary": 2, "pad": "' + b"x" * (2 << 20) + b'"}'
        for target in (url, "/v2/repository/index"):
            method = "PUT" if target == url else "POST"
            r = c.request(method, target, headers=AUTH, content=huge)
            assert r.status_code == 413 and r.json()["code"] == "payload_too_large", r.text
    saved = json.loads((two_version_registry / "m" / "routing.json").read_text())["override"]
    assert saved["canary"] == 2 and saved["canary_weight"] == 100.0
    # A restart keeps the change; promote and roll back are audited too.
    with running_server(two_version_registry, env=env) as srv, httpx.Client(base_url=srv.url) as c:
        hit = c.post("/v2/models/m/infer", json={"inputs": [X]})
        assert hit.headers["mlserve-model-version"] == "2"
        r = c.post("/v2/admin/models/m/promote", headers=AUTH)
        assert r.json()["effective"]["stable"] == 2 and r.json()["effective"]["canary"] == 0
        assert r.json()["serving"] == {
            "stable": 2,
            "canary": None,
            "canary_weight": 0.0,
            "shadows": [],
        }
        assert r.json()["previous_stable"] == 1
        assert c.post("/v2/admin/models/m/promote", headers=AUTH).status_code == 400
        r = c.post("/v2/admin/models/m/rollback", headers=AUTH)  # undoes the promote
        assert r.status_code == 200 and r.json()["serving"]["stable"] == 1
        assert (
            c.post("/v2/models/m/infer", json={"inputs": [X]}).headers["mlserve-model-version"]
            == "1"
        )
        r = c.post("/v2/admin/models/m/rollback", headers=AUTH)  # nothing left to undo
        assert r.status_code == 400 and "no promotion to undo" in r.json()["error"]
        r = c.delete("/v2/admin/models/m/routing", headers=AUTH)
        assert r.json()["override"] is None and r.json()["effective"]["stable"] == 1
        assert (
            c.post("/v2/models/m/infer", json={"inputs": [X]}).headers["mlserve-model-version"]
            == "1"
        )
    # What stays is the pin: v1, named by model.toml, recorded when it first served.
    saved = json.loads((two_version_registry / "m" / "routing.json").read_text())
    assert saved["override"] is None and saved["pinned_stable"] == 1
    log = two_version_registry / "audit.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["action"] for e in entries] == [
        "pin",
        "set_routing",
        "promote",
        "rollback",
        "reset_routing",
    ]
    assert entries[0]["actor"] == "registry" and entries[0]["after"]["pinned_stable"] == 1
    entries = entries[1:]
    assert all(TOKEN not in json.dumps(e) and e["actor"].startswith("token:") for e in entries)
    assert entries[0]["before"]["override"] is None
    assert entries[0]["after"]["override"]["canary"] == 2
    assert entries[0]["before"]["serving"]["canary"] is None
    assert entries[0]["after"]["serving"] == {
        "stable": 1,
        "canary": 2,
        "canary_weight": 100.0,
        "shadows": [],
    }
    assert entries[0]["cause"] == "admin: set_routing"
    assert entries[2]["before"]["serving"]["stable"] == 2
    assert entries[2]["after"]["serving"]["stable"] == 1
    ok = subprocess.run(
        [sys.executable, "-m", "mlserve", "audit", "verify", str(log)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "5 entries" in ok.stdout
    lines = log.read_text().splitlines()
    lines[2] = lines[2].replace('"promote"', '"promotE"')
    log.write_text("\n".join(lines) + "\n")
    bad = subprocess.run(
        [sys.executable, "-m", "mlserve", "audit", "verify", str(log)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "line 4" in bad.stderr  # the line after the edited one


@pytest.mark.slow
def test_model_repository_extension(two_version_registry: Path) -> None:
    env = {"MLSERVE_ADMIN_TOKEN": TOKEN}
    with (
        running_server(two_version_registry, "--poll-seconds", "0.1", env=env) as srv,
        httpx.Client(base_url=srv.url) as c,
    ):
        assert "model_repository" in c.get("/v2").json()["extensions"]
        assert c.post("/v2/repository/index").status_code == 401
        index = c.post("/v2/repository/index", headers=AUTH).json()
        assert {(e["name"], e["version"], e["state"]) for e in index} == {
            ("m", "1", "READY"),
            ("m", "2", "READY"),
        }
        r = c.post("/v2/repository/models/m/unload", headers=AUTH)
        assert r.status_code == 200 and r.json()["unloaded"] is True
        assert c.post("/v2/models/m/infer", json={"inputs": [X]}).status_code == 503
        assert c.get("/v2/models/m/ready").status_code == 503
        assert c.post("/v2/repository/index", headers=AUTH, json={"ready": True}).json() == []
        time.sleep(0.3)  # the watcher leaves an unloaded model alone
        assert c.post("/v2/models/m/infer", json={"inputs": [X]}).status_code == 503
        r = c.post("/v2/repository/models/m/load", headers=AUTH)
        assert r.status_code == 200 and r.json()["versions"] == {"1": "ready", "2": "ready"}
        assert c.post("/v2/models/m/infer", json={"inputs": [X]}).status_code == 200
        assert c.post("/v2/repository/models/nope/load", headers=AUTH).status_code == 404
    actions = [
        json.loads(x)["action"]
        for x in (two_version_registry / "audit.jsonl").read_text().splitlines()
    ]
    assert actions == ["pin", "unload", "load"]  # the pin: v1, named by model.toml


def test_audit_chain_holds_under_concurrent_writers(tmp_path: Path) -> None:
    import threading

    from mlserve.governance.audit import AuditLog, verify

    path = tmp_path / "audit.jsonl"
    logs = [AuditLog(path), AuditLog(path)]  # as two workers would have

    def write(log: AuditLog, n: int) -> None:
        for i in range(n):
            log.append("t", "act", "m", None, i)

    threads = [threading.Thread(target=write, args=(log, 60)) for log in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verify(path) == (120, None)


def test_an_admin_change_builds_on_what_another_worker_wrote(two_version_registry: Path) -> None:
    env = {"MLSERVE_ADMIN_TOKEN": TOKEN}
    with running_server(two_version_registry, "--poll-seconds", "60", env=env) as srv:
        # Another worker (or a person) wrote routing.json; this worker has not rescanned yet.
        (two_version_registry / "m" / "routing.json").write_text(
            json.dumps(
                {
                    "stable": 1,
                    "canary": 2,
                    "canary_weight": 30.0,
                    "shadows": [],
                    "shadow_sample": 1.0,
                    "shadow_queue": 256,
                }
            )
        )
        r = httpx.put(
            srv.url + "/v2/admin/models/m/routing", headers=AUTH, json={"shadow_sample": 0.5}
        )
        assert r.status_code == 200, r.text
        effective = r.json()["effective"]
        assert (effective["canary"], effective["canary_weight"], effective["shadow_sample"]) == (
            2,
            30.0,
            0.5,
        )


@pytest.mark.slow
def test_concurrent_changes_on_two_workers_each_build_on_the_last(
    two_version_registry: Path,
) -> None:
    """Two workers, eight clients changing the weight at once: every audit record's
    ``before`` is the previous record's ``after`` (none wrote over another's change), and
    routing.json holds the last record's ``after``."""
    from concurrent.futures import ThreadPoolExecutor

    env = {"MLSERVE_ADMIN_TOKEN": TOKEN}
    with running_server(two_version_registry, "--workers", "2", env=env) as srv:
        url = srv.url + "/v2/admin/models/m/routing"
        assert httpx.put(url, headers=AUTH, json={"canary": 2}).status_code == 200

        def change(i: int) -> int:
            with httpx.Client(timeout=30) as c:
                for j in range(6):
                    weight = float(i * 10 + j + 1)  # never 0, the weight already set: no no-op
                    r = c.put(url, headers=AUTH, json={"canary_weight": weight})
                    assert r.status_code == 200, r.text
            return i

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(change, range(8)))
    records = [
        json.loads(line) for line in (two_version_registry / "audit.jsonl").read_text().splitlines()
    ]
    records = [r for r in records if r["action"] == "set_routing"]
    assert len(records) == 1 + 8 * 6
    for previous, record in itertools.pairwise(records):
        assert record["before"] == previous["after"], (previous, record)
    saved = json.loads((two_version_registry / "m" / "routing.json").read_text())
    assert {**saved, "serving": records[-1]["after"]["serving"]} == records[-1]["after"]


def test_repository_actions_are_not_done_when_their_audit_record_cannot_be_written(
    two_version_registry: Path, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")  # the audit log's parent is a file: every append fails
    env = {"MLSERVE_ADMIN_TOKEN": TOKEN, "MLSERVE_AUDIT_LOG": str(blocked / "audit.jsonl")}
    with running_server(two_version_registry, env=env) as srv, httpx.Client(base_url=srv.url) as c:
        for action in ("unload", "load"):
            r = c.post(f"/v2/repository/models/m/{action}", headers=AUTH)
            assert r.status_code == 503 and r.json()["code"] == "model_not_ready", r.text
            assert "audit record" in r.json()["error"] and str(tmp_path) not in r.text
            assert c.post("/v2/models/m/infer", json={"inputs": [X]}).status_code == 200
        r = c.put("/v2/admin/models/m/routing", headers=AUTH, json={"canary": 2})
        assert r.status_code == 503 and str(tmp_path) not in r.text
        assert c.get("/v2/admin/models/m/routing", headers=AUTH).json()["override"] is None
    # Only the stable pin is there (it records what serves, and moves nothing).
    assert json.loads((two_version_registry / "m" / "routing.json").read_text())["override"] is None


@pytest.mark.parametrize(
    ("sent", "taken"),
    [
        ({"stable": "2"}, {"stable": 2}),
        ({"canary": "02", "canary_weight": 5}, {"canary": 2, "canary_weight": 5}),
        ({"shadows": ["3", 4]}, {"shadows": [3, 4]}),
        ({"canary": 0}, {"canary": 0}),
    ],
)
def test_routing_versions_may_be_decimal_strings(
    sent: dict[str, Any], taken: dict[str, Any]
) -> None:
    from mlserve.routing.controller import check_changes

    assert check_changes(sent) == taken


@pytest.mark.parametrize(
    "sent",
    [
        {"stable": "two"},
        {"canary": "-1"},
        {"shadows": ["3.0"]},
        {"stable": True},
        {"canary": "9" * 19},
    ],
)
def test_routing_versions_that_are_not_numbers_are_refused(sent: dict[str, Any]) -> None:
    from mlserve.errors import InvalidInput
    from mlserve.routing.controller import check_changes

    with pytest.raises(InvalidInput):
        check_changes(sent)


@pytest.mark.slow
def test_an_admin_change_overrides_only_the_keys_it_sets(two_version_registry: Path) -> None:
    """A new user's finding: a PUT of canary and its weight stored every routing key, so a
    later model.toml edit of another key (shadow_sample) silently did nothing until DELETE."""
    url = "/v2/admin/models/m/routing"
    toml = two_version_registry / "m" / "model.toml"
    with (
        running_server(
            two_version_registry, "--poll-seconds", "0.1", env={"MLSERVE_ADMIN_TOKEN": TOKEN}
        ) as srv,
        httpx.Client(base_url=srv.url, headers=AUTH) as c,
    ):
        r = c.put(url, json={"canary": 2, "canary_weight": 20})
        assert r.status_code == 200, r.text
        assert r.json()["override"] == {"canary": 2, "canary_weight": 20.0}
        toml.write_text(toml.read_text() + "shadow_sample = 0.5\n")
        wait_for(
            lambda: c.get(url).json()["effective"]["shadow_sample"] == 0.5,
            15,
            what="model.toml's shadow_sample in force under the override",
        )
        effective = c.get(url).json()["effective"]
        assert (effective["canary"], effective["canary_weight"], effective["stable"]) == (2, 20, 1)
        r = c.post("/v2/admin/models/m/promote")  # takes over stable, canary and the weight
        assert set(r.json()["override"]) == {"stable", "canary", "canary_weight"}, r.json()
        saved = json.loads((two_version_registry / "m" / "routing.json").read_text())
        assert saved["override_keys"] == ["canary", "canary_weight", "stable"]


def test_a_routing_file_from_before_override_keys_overrides_every_key() -> None:
    from mlserve.config import RoutingConfig
    from mlserve.routing.state import RoutingState

    configured = RoutingConfig(stable=1, shadow_sample=0.5)
    old = RoutingState.from_json(
        {"schema": 2, "override": {"stable": 1, "canary": 2, "canary_weight": 20.0}}
    )
    assert old.override_keys is None and old.routing(configured).shadow_sample == 1.0
    new = RoutingState().overriding(
        RoutingConfig(stable=1, canary=2, canary_weight=20.0), ["canary"]
    )
    assert new.routing(configured) == RoutingConfig(stable=1, canary=2, shadow_sample=0.5)
    assert RoutingState.from_json(new.to_json()) == new
    with pytest.raises(ValueError, match="override_keys"):
        RoutingState.from_json({"schema": 2, "override": {}, "override_keys": ["nope"]})
