"""Stable/canary routing: sticky keys, weights, pinning, over real HTTP and as a pure policy."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import httpx
import pytest

from mlserve.routing.policy import Split, bucket

from .conftest import linear_model, running_server, write_version

X = {"name": "X", "datatype": "FP32", "shape": [1, 20], "data": [0.25] * 20}


def within_binomial(hits: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(hits - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("weight", [0.0, 5.0, 20.0, 50.0, 100.0])
def test_keys_split_by_weight_and_stick(weight: float) -> None:
    split = Split("v1", "v2", weight)
    keys = [f"user-{i}" for i in range(20_000)]
    picks = [split.pick(k)[1] for k in keys]
    hits = picks.count("canary")
    assert within_binomial(hits, len(keys), weight / 100)
    assert picks == [split.pick(k)[1] for k in keys]  # the same key, the same side
    assert all(
        (bucket(k) < weight * 100) == (p == "canary") for k, p in zip(keys, picks, strict=True)
    )


def test_keyless_requests_split_at_random() -> None:
    split = Split("v1", "v2", 20.0)
    hits = Counter(split.pick(None)[1] for _ in range(20_000))
    assert within_binomial(hits["canary"], 20_000, 0.2)


def test_without_a_canary_everything_is_stable() -> None:
    assert Split("v1").pick("k") == ("v1", "stable")
    assert Split("v1", None, 50.0).pick(None) == ("v1", "stable")


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("routed")
    for v in (1, 2, 3):
        write_version(root, "m", v, linear_model(seed=v))
    (root / "m" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n[routing]\nstable = 1\ncanary = 2\ncanary_weight = 20\n'
    )
    write_version(root, "ghost", 1, linear_model(seed=5))  # canary 7 does not exist
    (root / "ghost" / "model.toml").write_text("[routing]\ncanary = 7\ncanary_weight = 50\n")
    return root


@pytest.mark.slow
def test_canary_share_stickiness_and_pinning_over_http(routed: Path) -> None:
    with running_server(routed) as srv, httpx.Client(base_url=srv.url) as c:
        meta = c.get("/v2/models/m").json()["parameters"]["routing"]
        assert meta == {"stable": "1", "canary": "2", "canary_weight": 20.0}
        seen: Counter[tuple[str, str]] = Counter()
        for _ in range(2000):
            r = c.post("/v2/models/m/infer", json={"inputs": [X]})
            assert r.status_code == 200
            seen[(r.headers["mlserve-model-version"], r.headers["mlserve-route"])] += 1
        assert set(seen) == {("1", "stable"), ("2", "canary")}
        assert within_binomial(seen[("2", "canary")], 2000, 0.2)
        for key in ("alice", "bob", "carol", "dave"):
            expected = "2" if bucket(key) < 2000 else "1"
            for _ in range(5):
                r = c.post(
                    "/v2/models/m/infer", json={"inputs": [X]}, headers={"mlserve-routing-key": key}
                )
                assert r.headers["mlserve-model-version"] == expected
            r = c.post(
                "/v2/models/m/infer", json={"inputs": [X], "parameters": {"routing_key": key}}
            )
            assert r.headers["mlserve-model-version"] == expected
        for _ in range(20):  # pinned URLs bypass the split, version 3 included
            r = c.post(
                "/v2/models/m/versions/3/infer",
                json={"inputs": [X]},
                headers={"mlserve-routing-key": "alice"},
            )
            assert (r.headers["mlserve-model-version"], r.headers["mlserve-route"]) == (
                "3",
                "pinned",
            )
        ghost = c.get("/v2/models/ghost").json()["parameters"]["routing"]
        assert ghost == {"stable": "1", "canary": None, "canary_weight": 0.0}
        text = c.get("/metrics").text
    assert 'mlserve_requests_total{model="m",version="2",role="canary",outcome="success"}' in text
    assert 'mlserve_requests_total{model="m",version="3",role="pinned",outcome="success"}' in text


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"canary_weight": 101}, "canary_weight must be in 0..100"),
        ({"canary_weight": -1}, "canary_weight must be in 0..100"),
        ({"stable": 2, "canary": 2}, "canary must differ from stable"),
        ({"canary": -1}, "stable and canary are versions"),
        ({"weight": 5}, "unknown key 'weight' in \\[routing\\]"),
    ],
)
def test_routing_config_is_validated(table: dict, message: str) -> None:
    from mlserve.config import parse_model_config
    from mlserve.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse_model_config({"routing": table})
