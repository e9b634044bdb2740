"""A fleet: two mlserve replicas sharing one state directory behind a real haproxy.

The supported way for replicas to share routing state and one audit trail (docs/operations.md:
"Deployment"): every replica runs with the same ``--state-dir`` on a shared writable volume
(``routing.json`` per model and ``audit.jsonl``), changes go through the routing controller's
``flock`` on ``<state>/<model>/.routing.lock`` and the audit log's ``flock``, and each replica
re-reads ``routing.json`` on its registry scan. Here the volume is a local directory and the
load balancer is Debian's haproxy, started on a free loopback port with a config the test
writes (round robin, health checks on ``/v2/health/ready``, the answering replica named in
an ``x-replica`` response header).

- A routing change made through the load balancer reaches every replica within the poll
  interval (the time is measured per change and printed: median and max).
- SIGKILL of a replica while two replicas write routing changes loses nothing: the state file
  parses and equals the last audited state after (or before) the change, the audit chain
  verifies with ``mlserve audit verify``, and the restarted replica serves the same split.
- Fleet-wide guardrails: replica A's canary traffic fails, replica B's is healthy; each
  replica alone stays under ``min_requests``, the fleet's merged counters in a real
  Prometheus (the shipped rules) breach, and the canary is rolled back with the verdict naming
  the Prometheus source. With Prometheus stopped, the same traffic is judged locally (each
  replica: not enough requests), the canary stays, and the verdicts say they fell back.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mlserve.config import parse_model_config
from mlserve.errors import ConfigError
from mlserve.governance.audit import verify
from mlserve.routing.fleet import REQUESTS, WINDOW_SECONDS, FleetUnavailable, PrometheusSource
from mlserve.routing.policy import bucket
from mlserve.routing.state import read_state

from .conftest import free_port, gather_model, prometheus, write_version
from .fleet_support import Fleet, haproxy
from .support.waiting import NOT_YET, wait_for

# Slow (replicas behind haproxy, and a real Prometheus): deselected by -m "not slow".
pytestmark = pytest.mark.slow

TOKEN = "fleet-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLL_S = 1.0
MIN_REQUESTS = 30
PER_REPLICA = 20  # canary requests each replica gets in a guardrail scenario
SPLIT, GUARDED = "split", "guarded"


def _infer(url: str, model: str, idx: int, key: str | None = None) -> httpx.Response:
    headers = {"mlserve-routing-key": key} if key else {}
    body = {"inputs": [{"name": "idx", "datatype": "INT64", "shape": [1], "data": [idx]}]}
    return httpx.post(f"{url}/v2/models/{model}/infer", json=body, headers=headers, timeout=10)


def _keys(weight: float) -> tuple[list[str], list[str]]:
    """Routing keys that land on the canary, and on the stable version, at ``weight`` %."""
    keys = [f"customer-{i}" for i in range(2000)]
    canary = [k for k in keys if bucket(k) < weight * 100]
    stable = [k for k in keys if bucket(k) >= weight * 100]
    return canary, stable


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("fleet")
    registry, state = work / "registry", work / "state"
    prom_port = free_port()  # reserved now: model.toml names it before Prometheus runs
    for model in (SPLIT, GUARDED):
        # v1 answers indexes below 100; v2 only below 10: index 50 fails on the canary.
        write_version(registry, model, 1, gather_model(100))
        write_version(registry, model, 2, gather_model(10))
    (registry / SPLIT / "model.toml").write_text('[versions]\npolicy = "all"\n')
    (registry / GUARDED / "model.toml").write_text(
        '[versions]\npolicy = "all"\n'
        "[guardrails]\nenabled = true\ncheck_seconds = 1\nwindow_seconds = 300\n"
        f"min_requests = {MIN_REQUESTS}\n"
        f'source = "prometheus"\nprometheus_url = "http://127.0.0.1:{prom_port}"\n'
        "prometheus_timeout_seconds = 1\n"
    )
    fl = Fleet(registry, state, [free_port(), free_port()], token=TOKEN, poll_s=POLL_S)
    fl.prom_port = prom_port
    try:
        for i in range(len(fl.ports)):
            fl.start(i)
        with haproxy(work, fl.ports) as lb:
            fl.lb = lb
            yield fl
    finally:
        fl.stop()


def _put(url: str, model: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.put(f"{url}/v2/admin/models/{model}/routing", json=body, headers=AUTH, timeout=10)


def _audit(fl: Fleet) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (fl.state / "audit.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ a change reaches all


def test_a_change_through_one_replica_reaches_every_replica_within_the_poll(fleet: Fleet) -> None:
    reach: list[float] = []
    for i in range(8):
        weight, want = (100, "2") if i % 2 == 0 else (0, "1")
        r = _put(fleet.lb, SPLIT, {"stable": 1, "canary": 2, "canary_weight": weight})
        done = time.monotonic()
        assert r.status_code == 200, r.text
        pending = {rep.url for rep in fleet.replicas}
        while pending:
            assert time.monotonic() - done < 10, f"not everywhere after 10 s:\n{fleet.logs()}"
            for url in list(pending):
                if _infer(url, SPLIT, 1).headers["mlserve-model-version"] == want:
                    pending.discard(url)
        reach.append(time.monotonic() - done)
        # Through the load balancer: both replicas answer, every answer from the new split.
        answers = [_infer(fleet.lb, SPLIT, 1) for _ in range(8)]
        assert {a.headers["mlserve-model-version"] for a in answers} == {want}
        assert {a.headers["x-replica"] for a in answers} == {"r0", "r1"}
    print(
        f"\nrouting change → every replica ({len(reach)} changes, poll {POLL_S} s): "
        f"median {statistics.median(reach):.3f} s, max {max(reach):.3f} s"
    )
    assert max(reach) <= POLL_S + 0.5, reach


# ------------------------------------------------------------------ SIGKILL during changes


def _writer(url: str, stop: threading.Event, done: list[int]) -> None:
    """PUT routing changes to one replica as fast as it answers, until stopped or killed."""
    rng = random.Random(url)
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            body = {"stable": 1, "canary": 2, "canary_weight": rng.randint(1, 99)}
            try:
                r = client.put(f"{url}/v2/admin/models/{SPLIT}/routing", json=body, headers=AUTH)
            except httpx.HTTPError:
                return  # the replica was killed
            assert r.status_code == 200, r.text
            done[0] += 1


def test_sigkill_during_changes_loses_nothing(fleet: Fleet) -> None:
    path = fleet.state / SPLIT / "routing.json"
    for round_ in range(3):
        stop, counts = threading.Event(), [[0], [0]]
        writers = [
            threading.Thread(target=_writer, args=(rep.url, stop, counts[i]))
            for i, rep in enumerate(fleet.replicas)
        ]
        for w in writers:
            w.start()
        wait_for(lambda c=counts: c[0][0] >= 5 and c[1][0] >= 5)  # type: ignore[misc]  # both write
        time.sleep(random.Random(round_).uniform(0.05, 0.3))
        victim = fleet.replicas[0]
        victim.proc.kill()  # SIGKILL, mid-change as likely as not
        victim.proc.wait()
        victim.stop()  # closes its log
        stop.set()
        for w in writers:
            w.join(30)
        state = read_state(path)  # parses
        last = next(
            e for e in reversed(_audit(fleet)) if e["model"] == SPLIT and e["actor"] != "registry"
        )
        audited = [{k: v for k, v in side.items() if k != "serving"} for side in
                   (last["after"], last["before"])]  # fmt: skip
        assert state.to_json() in audited, (state, last)
        rc = subprocess.run(
            [sys.executable, "-m", "mlserve", "audit", "verify", str(fleet.state / "audit.jsonl")],
            capture_output=True,
            text=True,
        )
        assert rc.returncode == 0, rc.stdout + rc.stderr
        print(
            f"\nround {round_}: {counts[0][0]} + {counts[1][0]} changes, SIGKILL; state file = "
            f"audited {'after' if state.to_json() == audited[0] else 'before'}, "
            f"canary_weight {state.override.canary_weight if state.override else None}"
        )
        fleet.start(0)  # a restart loses nothing: both replicas serve the file's split
        for rep in fleet.replicas:
            got = httpx.get(f"{rep.url}/v2/admin/models/{SPLIT}/routing", headers=AUTH)
            assert got.status_code == 200
            assert state.override is not None
            assert got.json()["effective"]["canary_weight"] == state.override.canary_weight
    assert verify(fleet.state / "audit.jsonl")[1] is None


# ------------------------------------------------------------------ fleet-wide guardrails


def _verdict(url: str) -> dict[str, Any] | None:
    doc = httpx.get(f"{url}/v2/models/{GUARDED}/monitor", timeout=10).json()
    verdict: dict[str, Any] | None = doc.get("guardrails")
    return verdict


def _routing(url: str) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(
        f"{url}/v2/admin/models/{GUARDED}/routing", headers=AUTH, timeout=10
    ).json()["effective"]
    return doc


def _send(url: str, idx: int, keys: tuple[list[str], list[str]]) -> list[tuple[float, str, int]]:
    """PER_REPLICA requests with canary keys, as many with stable keys, all with index
    ``idx`` (50 fails on v2, 5 does not); (time, version, status) of the canary-key ones."""
    out = []
    for i in range(PER_REPLICA):
        r = _infer(url, GUARDED, idx, keys[0][i])
        out.append((time.monotonic(), r.headers.get("mlserve-model-version", ""), r.status_code))
        assert _infer(url, GUARDED, idx, keys[1][i]).status_code == 200
    return out


def test_fleet_guardrails_roll_back_a_canary_no_replica_could_judge(fleet: Fleet) -> None:
    keys = _keys(50)
    a, b = fleet.replicas
    assert _put(fleet.lb, GUARDED, {"stable": 1, "canary": 2, "canary_weight": 50}).is_success
    with prometheus(
        fleet.registry.parent, a.port, b.port, scrape_s=1, port=fleet.prom_port
    ) as prom:
        # Each role's counters exist on both replicas before the traffic that matters, so
        # Prometheus sees it as an increase (a series' first sample is its baseline); a few
        # seconds of samples keep rate()'s extrapolation small (about a scrape interval).
        for rep in fleet.replicas:
            assert _infer(rep.url, GUARDED, 5, keys[0][-1]).status_code == 200
            assert _infer(rep.url, GUARDED, 5, keys[1][-1]).status_code == 200

        def scraped() -> bool:
            got = prom.values(f'mlserve_requests_total{{model="{GUARDED}",outcome="error"}}',
                              "pod", "role")  # fmt: skip
            return {(f"mlserve-{i}", r) for i in (0, 1) for r in ("canary", "stable")} <= set(got)

        wait_for(
            scraped,
            30,
            what="both replicas' counters in Prometheus",
            detail=prom.log,
            interval=0.25,
            ignore=NOT_YET,
        )

        def sampled() -> bool:  # five scrapes of every series: rate() extrapolates little
            got = prom.values(
                f'count_over_time(mlserve_requests_total{{model="{GUARDED}",outcome="error"}}[1m])',
                "pod",
                "role",
            )
            return len(got) >= 4 and min(got.values()) >= 5

        wait_for(
            sampled,
            30,
            what="five samples of each series in Prometheus",
            detail=prom.log,
            interval=0.25,
            ignore=NOT_YET,
        )
        # Replica A: its canary share fails. 22 canary requests in the fleet: no verdict yet.
        sent_a = _send(a.url, 50, keys)
        assert all(status == 400 for _, _, status in sent_a), (sent_a, _audit(fleet)[-3:])
        assert all(_routing(r.url)["canary"] == 2 for r in fleet.replicas)
        # Replica B: healthy. The fleet reaches min_requests at B's 8th canary request.
        sent_b = _send(b.url, 5, keys)
        assert all(status == 200 for _, _, status in sent_b)
        crossed = sent_b[MIN_REQUESTS - PER_REPLICA - 2 - 1][0]
        wait_for(
            lambda: all(not _routing(r.url)["canary"] for r in fleet.replicas),
            30,
            what="the fleet's guardrails to roll the canary back",
            detail=lambda: prom.log() + fleet.logs(),
            interval=0.25,
            ignore=NOT_YET,
        )
        everywhere = time.monotonic()
        first_stable = next((t for t, version, _ in sent_b if version == "1"), None)
        fleet_figures = {
            k: round(v * WINDOW_SECONDS, 1)
            for k, v in prom.values(f'{REQUESTS}{{model="{GUARDED}"}}', "version", "role").items()
        }
    record = next(e for e in reversed(_audit(fleet)) if e["actor"] == "guardrails")
    assert record["action"] == "rollback" and record["model"] == GUARDED
    assert "failure rate" in record["cause"]
    assert f"source: prometheus (the fleet's recording rules at {prom.url})" in record["cause"]
    verdicts = [_verdict(r.url) for r in fleet.replicas]
    acted = [v for v in verdicts if v and v["action"] == "rollback"]
    assert acted and all(v["source"] == "prometheus" for v in acted), verdicts
    assert all(v["canary_requests"] >= MIN_REQUESTS for v in acted)
    print(
        f"\nfleet source: before, {PER_REPLICA + 1} canary requests per replica (local: under "
        f"{MIN_REQUESTS}), canary at 50 %; after, rolled back by {record['cause']!r}; "
        f"first stable answer to a canary key on B "
        f"{'-' if first_stable is None else f'{first_stable - crossed:.2f} s'} and the split "
        f"on every replica {everywhere - crossed:.2f} s after the fleet's {MIN_REQUESTS}th "
        f"canary request; verdict figures {acted[0]['canary_requests']} canary / "
        f"{acted[0]['stable_requests']} stable; Prometheus now {fleet_figures}"
    )

    # The same traffic with Prometheus stopped: each replica judges its own share.
    audited = len(_audit(fleet))
    assert _put(fleet.lb, GUARDED, {"stable": 1, "canary": 2, "canary_weight": 50}).is_success

    def fell_back() -> bool:  # a check after the new split: its window's baseline is taken
        return all(
            (v := _verdict(r.url)) is not None and v["source"] == "local" for r in fleet.replicas
        )

    wait_for(fell_back, 30, what="local verdicts", detail=fleet.logs, interval=0.25, ignore=NOT_YET)
    sent_a, sent_b = _send(a.url, 50, keys), _send(b.url, 5, keys)
    assert all(status == 400 for _, _, status in sent_a), (sent_a, _audit(fleet)[-3:])
    assert all(version == "2" and status == 200 for _, version, status in sent_b), sent_b
    checked = time.monotonic()

    def judged() -> bool:  # every replica has judged after the traffic
        verdicts = [_verdict(r.url) for r in fleet.replicas]
        return all(v is not None and v["canary_requests"] == PER_REPLICA for v in verdicts)

    wait_for(
        judged, 30, what="verdicts on the traffic", detail=fleet.logs, interval=0.25, ignore=NOT_YET
    )
    time.sleep(max(0.0, checked + 3 - time.monotonic()))  # three more checks: still waiting
    for rep in fleet.replicas:
        v = _verdict(rep.url)
        assert v is not None and v["source"] == "local" and v["action"] == "wait", v
        assert "unreachable" in v["source_note"] and "this replica's traffic" in v["source_note"]
        assert v["canary_requests"] == PER_REPLICA < MIN_REQUESTS
        assert _routing(rep.url)["canary"] == 2
    assert not any(e["actor"] == "guardrails" for e in _audit(fleet)[audited:])
    print(
        f"local fallback: before and after, canary at 50 % ({PER_REPLICA} canary requests per "
        f"replica, {MIN_REQUESTS} needed; replica A's {PER_REPLICA} all failed); "
        f"note: {v['source_note']!r}"
    )


# ------------------------------------------------------------------ the source's edges


def test_the_fleet_source_says_why_it_cannot_answer(fleet: Fleet) -> None:
    closed = PrometheusSource(f"http://user:secret@127.0.0.1:{free_port()}", 1)
    with pytest.raises(FleetUnavailable, match="unreachable") as refused:
        closed.figures(GUARDED, 2, 1)
    assert "secret" not in str(refused.value) and "user" not in str(refused.value)
    not_prometheus = PrometheusSource(fleet.replicas[0].url, 1)  # mlserve: 404 on /api/v1
    with pytest.raises(FleetUnavailable, match="HTTP 404"):
        not_prometheus.figures(GUARDED, 2, 1)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"source": "fleet"}, "source must be one of local, prometheus"),
        ({"source": "prometheus"}, "needs prometheus_url"),
        ({"source": "prometheus", "prometheus_url": "prometheus:9090"}, "needs prometheus_url"),
        ({"prometheus_timeout_seconds": 0}, "prometheus_timeout_seconds must be > 0"),
    ],
)
def test_guardrail_source_settings_are_checked(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_model_config({"guardrails": table})
