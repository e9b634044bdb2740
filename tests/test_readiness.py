"""``GET /v2/models/{m}[/versions/{v}]/ready``: 200 when ready; when not, the status code it
always had (503 not ready, 404 unknown) with ``"ready": false``, the reason and the error
body (message and code) an inference request to the same target is told, Retry-After only
where waiting helps. Against a real server."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from .conftest import linear_model, running_server, write_version

X = {"name": "X", "datatype": "FP32", "shape": [1, 20], "data": [0.0] * 20}


def infer_error(client: httpx.Client, target: str) -> tuple[int, str]:
    r = client.post(f"/v2/models/{target}/infer", json={"inputs": [X]})
    return r.status_code, r.json()["error"]


def test_ready_answers_as_before(client: httpx.Client) -> None:
    r = client.get("/v2/models/linear/ready")
    assert (r.status_code, r.json()) == (200, {"name": "linear", "ready": True})
    r = client.get("/v2/models/linear/versions/2/ready")
    assert (r.status_code, r.json()) == (200, {"name": "linear", "ready": True, "version": "2"})


def test_a_failed_version_says_why(client: httpx.Client) -> None:
    r = client.get("/v2/models/mixed/versions/2/ready")
    failure = client.get("/v2/models/mixed").json()["parameters"]["versions"]["2"]["reason"]
    assert r.status_code == 503
    reason = f"model 'mixed' version 2 failed to load: {failure}"
    assert r.json() == {
        "name": "mixed",
        "version": "2",
        "ready": False,
        "reason": reason,
        "error": reason,
        "code": "model_not_ready",
    }
    assert infer_error(client, "mixed/versions/2") == (503, reason)
    # A failed load stays failed until its files change: no Retry-After to retry on.
    infer = client.post("/v2/models/mixed/versions/2/infer", json={"inputs": [X]})
    assert "retry-after" not in r.headers and "retry-after" not in infer.headers


@pytest.mark.parametrize(
    ("target", "code"), [("nope", "model_not_found"), ("mixed/versions/9", "version_not_found")]
)
def test_unknown_stays_404_with_the_reason(client: httpx.Client, target: str, code: str) -> None:
    r = client.get(f"/v2/models/{target}/ready")
    status, error = infer_error(client, target)
    assert (r.status_code, status) == (404, 404)
    body = r.json()
    assert (body["ready"], body["reason"], body["error"], body["code"]) == (
        False,
        error,
        error,
        code,
    )
    assert body["name"] == target.split("/")[0]


def test_a_model_whose_config_is_broken_says_why(client: httpx.Client) -> None:
    r = client.get("/v2/models/badconfig/ready")
    status, error = infer_error(client, "badconfig")
    assert (r.status_code, status) == (503, 503)
    assert "model.toml" in error
    body = r.json()
    assert (body["name"], body["ready"], body["reason"]) == ("badconfig", False, error)


def test_a_gate_refusal_says_why(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    write_version(root, "gated", 1, linear_model(seed=4))
    (root / "gated" / "model.toml").write_text("[gate]\nrequire_gate = true\n")
    with running_server(root) as server, httpx.Client(base_url=server.url) as client:
        r = client.get("/v2/models/gated/ready")
        status, error = infer_error(client, "gated")
        assert (r.status_code, status) == (503, 409)
        assert "validation gate" in error
        assert r.json() == {
            "name": "gated",
            "ready": False,
            "reason": error,
            "error": error,
            "code": "gate_not_passed",  # the 409 an unpinned request gets
        }
        # The version is loaded, but a pinned request is refused by the gate too (409): not
        # ready, and why, in the words the pinned request gets.
        pinned_status, pinned_error = infer_error(client, "gated/versions/1")
        assert pinned_status == 409 and "only as a shadow" in pinned_error
        assert "no validation.json: run `mlserve validate`" in pinned_error
        r = client.get("/v2/models/gated/versions/1/ready")
        assert r.status_code == 503
        assert r.json() == {
            "name": "gated",
            "ready": False,
            "version": "1",
            "reason": pinned_error,
            "error": pinned_error,
            "code": "gate_not_passed",  # what the pinned request is answered
        }
