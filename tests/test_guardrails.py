"""Guardrails: a failing canary is rolled back, a healthy one stepped up and promoted."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlserve.config import GuardrailConfig, RoutingConfig
from mlserve.monitoring.request_stats import LATENCY_BUCKETS, quantile
from mlserve.monitoring.snapshot import HistogramState, RoleStats
from mlserve.routing.guardrails import decide

from .conftest import gather_model, running_server, write_version
from .support.metrics import parse
from .support.waiting import wait_for

# Slow: every test here starts real servers and waits on them (-m "not slow" skips them).
pytestmark = pytest.mark.slow

ROUTING = RoutingConfig(stable=1, canary=2, canary_weight=20.0)


def state(success: int, failed: int, latency_bucket: int = 2) -> RoleStats:
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    counts[latency_bucket] = success
    return RoleStats(outcomes=[success, failed, 0, 0], duration=HistogramState(counts))


def verdict(canary: RoleStats, stable: RoleStats, **overrides: float):
    rules = GuardrailConfig(enabled=True, min_requests=100, **overrides)
    return decide("m", ROUTING, 1, canary, stable, False, rules, None, 0.0, quantile)


def test_decisions() -> None:
    assert verdict(state(50, 0), state(500, 0)).action == "wait"  # too few canary requests
    assert verdict(state(200, 0), state(2000, 10)).action == "none"
    assert verdict(state(140, 60), state(2000, 10)).action == "rollback"  # 30 % failures
    slow = verdict(state(200, 0, latency_bucket=9), state(2000, 0, latency_bucket=2))
    assert slow.action == "rollback" and "p99" in slow.reason
    # At the threshold both ways, the smoothed ratio decides once: no flapping from noise.
    assert verdict(state(196, 4), state(980, 20)).action == "none"
    healthy = decide(
        "m",
        ROUTING,
        1,
        state(200, 0),
        state(2000, 0),
        False,
        GuardrailConfig(enabled=True, min_requests=100, promote_after_seconds=10, steps=(50.0,)),
        0.0,
        11.0,
        quantile,
    )
    assert healthy.action == "step"


def post(c: httpx.Client, idx: list[int]) -> httpx.Response:
    return c.post(
        "/v2/models/m/infer",
        json={"inputs": [{"name": "idx", "datatype": "INT64", "shape": [len(idx)], "data": idx}]},
    )


def test_a_failing_canary_is_rolled_back(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    write_version(root, "m", 1, gather_model(10))
    write_version(root, "m", 2, gather_model(7))  # fails on indices 7, 8, 9
    (root / "m" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n'
        "[routing]\nstable = 1\ncanary = 2\ncanary_weight = 50\n"
        "[guardrails]\nenabled = true\ncheck_seconds = 0.2\nmin_requests = 40\n"
    )
    rng = np.random.default_rng(0)
    with running_server(root) as srv, httpx.Client(base_url=srv.url) as c:

        def rolled_back() -> bool:
            post(c, [int(rng.integers(0, 10))])
            return c.get("/v2/models/m").json()["parameters"]["routing"]["canary"] is None

        wait_for(rolled_back, 20, what="the failing canary to be rolled back", interval=0)
        assert all(post(c, [i]).status_code == 200 for i in range(10))  # stable serves all
        metrics = c.get("/metrics").text
    assert (
        parse(metrics).value("mlserve_guardrail_actions_total", model="m", action="rollback") == 1
    )
    assert parse(metrics).value("mlserve_canary_weight", model="m") == 0
    saved = json.loads((root / "m" / "routing.json").read_text())["override"]
    assert saved["canary"] == 0 and saved["canary_weight"] == 0
    entry = json.loads((root / "audit.jsonl").read_text().splitlines()[-1])
    assert entry["actor"] == "guardrails" and entry["action"] == "rollback"
    assert entry["cause"].startswith("guardrails: ") and "failure rate" in entry["cause"]
    assert entry["before"]["serving"]["canary"] == 2 and entry["after"]["serving"]["canary"] is None


def test_a_healthy_canary_is_stepped_up_then_promoted(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    write_version(root, "m", 1, gather_model(10))
    write_version(root, "m", 2, gather_model(10))
    (root / "m" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n'
        "[routing]\nstable = 1\ncanary = 2\ncanary_weight = 10\n"
        "[guardrails]\nenabled = true\ncheck_seconds = 0.2\nmin_requests = 20\n"
        "promote_after_seconds = 0.5\nsteps = [50]\nmax_p99_ratio = 100\n"
    )
    seen = []
    with running_server(root) as srv, httpx.Client(base_url=srv.url) as c:

        def promoted() -> bool:
            assert post(c, [3]).status_code == 200
            routing = c.get("/v2/models/m").json()["parameters"]["routing"]
            if not seen or seen[-1] != routing:
                seen.append(routing)
            return routing["stable"] == "2"

        wait_for(
            promoted,
            30,
            what="the canary to be promoted",
            detail=lambda: f"seen: {seen}",
            interval=0,
        )
    weights = [r["canary_weight"] for r in seen]
    assert weights[0] == 10.0 and 50.0 in weights and seen[-1]["canary"] is None
