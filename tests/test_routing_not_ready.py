"""A routing change that names a version in the registry but not ready (its file cannot be
loaded) is a conflict with the version's state, 409 ``version_not_ready`` naming where to see
why, not a malformed request; one that names no such version stays 400; nothing moves."""

from __future__ import annotations

from pathlib import Path

import httpx

from .conftest import linear_model, running_server, wait_for, write_version

TOKEN = "s3cret-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def test_a_version_that_failed_to_load_is_a_409_and_nothing_moves(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    for version in (1, 2):
        write_version(root, "m", version, linear_model(seed=version))
    (root / "m" / "2" / "model.onnx").write_bytes(b"not an onnx file")  # fails to load
    (root / "m" / "model.toml").write_text('[versions]\npolicy = "all"\n[routing]\nstable = 1\n')
    env = {"MLSERVE_ADMIN_TOKEN": TOKEN}
    with running_server(root, env=env) as srv, httpx.Client(base_url=srv.url) as c:
        wait_for(lambda: c.get("/v2/models/m/versions/2/ready").status_code in (200, 503))
        url = "/v2/admin/models/m/routing"
        for body in ({"canary": 2}, {"shadows": [2]}, {"stable": 2}):
            r = c.put(url, headers=AUTH, json=body)
            assert r.status_code == 409, (body, r.text)
            answer = r.json()
            assert answer["code"] == "version_not_ready", answer
            assert "version" in answer["error"] and "not ready" in answer["error"], answer
        r = c.put(url, headers=AUTH, json={"canary": 9})  # no such version: the request's fault
        assert r.status_code == 400 and r.json()["code"] == "invalid_input"
        served = c.post(
            "/v2/models/m/infer",
            json={
                "inputs": [{"name": "X", "shape": [1, 20], "datatype": "FP32", "data": [0] * 20}]
            },
        )
        assert served.headers["mlserve-model-version"] == "1"
        assert c.get(url, headers=AUTH).json()["override"] is None
