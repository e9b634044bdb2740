"""Shadow versions: mirrored after the answer, compared exactly, dropped when saturated."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from .conftest import linear_model, running_server, slow_batch_model, wait_for, write_version
from .support.metrics import scrape, wait_metric

# Slow: every test here starts real servers and waits on them (-m "not slow" skips them).
pytestmark = pytest.mark.slow


def test_shadow_disagreement_matches_an_independent_count(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    write_version(root, "m", 1, linear_model(seed=1))
    write_version(root, "m", 2, linear_model(seed=2))
    (root / "m" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n[routing]\nstable = 1\nshadows = [2]\n'
    )
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((200, 20)).astype(np.float32)
    with running_server(root) as srv, httpx.Client(base_url=srv.url) as c:
        for x in xs:
            r = c.post(
                "/v2/models/m/infer",
                json={
                    "inputs": [
                        {"name": "X", "datatype": "FP32", "shape": [1, 20], "data": x.tolist()}
                    ]
                },
            )
            assert r.status_code == 200 and r.headers["mlserve-model-version"] == "1"
        r = c.post(
            "/v2/models/m/versions/1/infer",
            json={
                "inputs": [  # pinned: not mirrored
                    {"name": "X", "datatype": "FP32", "shape": [1, 20], "data": xs[0].tolist()}
                ]
            },
        )
        metrics = wait_metric(srv.url, "mlserve_shadow_requests_total", 200, model="m", version="2")
        monitor = c.get("/v2/models/m/versions/2/monitor").json()["versions"]["2"]["shadow"]
    labels = [
        ort.InferenceSession(
            str(root / "m" / str(v) / "model.onnx"), providers=["CPUExecutionProvider"]
        ).run(["label"], {"X": xs})[0]
        for v in (1, 2)
    ]
    expected = int((labels[0] != labels[1]).sum())
    assert 0 < expected < 200  # the two versions really differ, on some rows
    disagreed = metrics.value(
        "mlserve_shadow_disagreement_total", model="m", version="2", output="label"
    )
    assert disagreed == expected
    assert metrics.value("mlserve_shadow_requests_total", model="m", version="2") == 200
    assert (
        metrics.value("mlserve_shadow_rows_total", model="m", version="2", output="scores") == 200
    )
    assert (
        metrics.value("mlserve_shadow_abs_diff_count", model="m", version="2", output="scores")
        == 600
    )
    assert metrics.value("mlserve_shadow_errors_total", model="m", version="2") == 0
    assert (
        metrics.value(
            "mlserve_requests_total", model="m", version="2", role="shadow", outcome="success"
        )
        == 200
    )
    assert monitor["disagree"] == {"label": expected} and monitor["requests"] == 200


def test_a_slow_shadow_never_slows_the_caller_and_drops_when_full(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    write_version(root, "m", 1, slow_batch_model(50))  # fast primary
    write_version(root, "m", 2, slow_batch_model(1500))  # tens of ms per call
    (root / "m" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n[routing]\nstable = 1\nshadows = [2]\nshadow_queue = 2\n'
    )
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    with running_server(root) as srv, httpx.Client(base_url=srv.url) as c:
        shadow_call = c.get("/v2/models/m/versions/2").json()["parameters"]["warmup"]["median_us"]
        start = time.perf_counter()
        for _ in range(40):
            r = c.post("/v2/models/m/infer", json=body)
            assert r.status_code == 200 and r.headers["mlserve-model-version"] == "1"
        elapsed = time.perf_counter() - start

        def both() -> tuple[float, float]:
            m = scrape(srv.url)
            return (
                m.value("mlserve_shadow_requests_total", 0.0, model="m", version="2"),
                m.value("mlserve_shadow_dropped_total", 0.0, model="m", version="2"),
            )

        ran, dropped = wait_for(lambda: sum(both()) == 40 and both(), 20, what="40 shadow calls")
    assert ran + dropped == 40 and dropped > 0, (ran, dropped)
    # Forty answers took less time than the shadow would have needed for a third of them.
    assert elapsed < 40 * shadow_call / 1e6 / 3, (elapsed, shadow_call)
