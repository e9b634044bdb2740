"""A real Prometheus scraping a real mlserve (two workers) with the rules and the dashboard.

One module-scoped stack: ``mlserve serve --workers 2`` over a registry whose ``credit`` model
has a stable version 1 and a canary version 2 (both with reference profiles, both batched), a
shadow version 3 and a corrupt version 4; and Debian's ``prometheus`` configured from
``deploy/prometheus/prometheus.yml``, its Kubernetes discovery swapped for file discovery that
carries the pod's annotations (Debian builds Prometheus without Kubernetes discovery) so the
example's relabelling finds the server's port and path, with ``deploy/prometheus/rules.yml``
loaded and every ``for:`` cut to 0s so alerts fire at once.

Traffic is known row by row (routing keys make the canary split deterministic): in-distribution
rows, then rows whose feature ``f2`` is shifted by 2σ. mlserve's window (60 buckets of 5 s)
holds all of it while the test runs.

The drift rules redo mlserve's rule on the window gauges, so with one server the recordings
are mlserve's own statistics: PSI, its threshold, AUC, z and the alert of every feature of
both versions equal ``GET /v2/models/{m}/monitor``'s to 1e-9 (float rounding only: the same
counts, summed in another order), and the recordings are ``drift.psi``, ``rank_z`` and
``rank_auc`` of the window and reference recordings of the same evaluation.

Scrapes every 2 s, not 1 s: each worker publishes its counters to the other once a second, and
a scrape answered by the other worker within that second can see them older than the previous
scrape did, which Prometheus takes for a counter reset (``resets()`` is checked).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from mlserve.monitoring import build_profile, save_profile
from mlserve.monitoring import drift as mlserve_drift
from mlserve.routing.policy import bucket

from .conftest import Prometheus, ServerProcess, linear_model, prometheus, write_version
from .support.waiting import NOT_YET, wait_for

# Slow (a real Prometheus scraping a real server): deselected by -m "not slow".
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PROM = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "mlserve.json"
N_FEATURES = 6
NAMES = [f"f{i}" for i in range(N_FEATURES)]
SHIFTED = "f2"
N_REF = 5000
ROWS = 20  # per request
REQUESTS = 40  # per phase: in-distribution, then shifted
SCRAPE_S = 2
CANARY_WEIGHT = 50
PSI = "model_version_feature:mlserve_feature_psi:window"
# recording → the statistic of GET /monitor it redoes
RECORDED = {
    PSI: "psi",
    "model_version_feature:mlserve_feature_psi_threshold:window": "psi_threshold",
    "model_version_feature:mlserve_feature_auc:window": "auc",
    "model_version_feature:mlserve_feature_rank_z:window": "rank_z",
    "model_version_feature:mlserve_feature_drift_alert:window": "alert",
}


@dataclass
class Stack:
    server: ServerProcess
    prom: Prometheus
    rows: dict[str, int] = field(default_factory=dict)  # version → rows sent
    monitor: dict[str, Any] = field(default_factory=dict)
    scrape: str = ""  # mlserve's /metrics once everything had settled
    timings: dict[str, float] = field(default_factory=dict)
    evaluated_at: float = 0.0  # a time at which the rules had evaluated the settled counts


@pytest.fixture(scope="module")
def credit_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prom-live") / "registry"
    x_ref = np.random.default_rng(21).standard_normal((N_REF, N_FEATURES)).astype(np.float32)
    for version in (1, 2):
        vdir = write_version(root, "credit", version, linear_model(N_FEATURES, seed=version))
        sess = ort.InferenceSession(str(vdir / "model.onnx"), providers=["CPUExecutionProvider"])
        scores, label = sess.run(None, {"X": x_ref})
        profile = build_profile(x_ref, NAMES, outputs={"scores": scores, "label": label})
        save_profile(profile, vdir / "reference.json")
    write_version(root, "credit", 3, linear_model(N_FEATURES, seed=3))  # a shadow
    (root / "credit" / "4").mkdir()
    (root / "credit" / "4" / "model.onnx").write_bytes(b"\x08\x07not a protobuf")  # fails
    (root / "credit" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n'
        f"[routing]\nstable = 1\ncanary = 2\ncanary_weight = {CANARY_WEIGHT}\nshadows = [3]\n"
        "[batching]\nmax_batch_size = 8\nmax_delay_us = 200\n"
        "[monitoring]\nbucket_seconds = 5\nwindow_buckets = 60\nmin_window = 200\n"
    )
    return root


def _body(x: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }


@pytest.fixture(scope="module")
def stack(credit_registry: Path) -> Iterator[Stack]:
    started = time.monotonic()
    server = ServerProcess(credit_registry, "--workers", "2")
    try:
        with prometheus(credit_registry.parent, server.port) as prom:
            st = Stack(server, prom)
            server.wait_ready()
            wait_for(
                lambda: bool(prom.query('mlserve_feature_window_bin{feature="f0"}')),
                30,
                what="Prometheus to scrape the empty windows",
                detail=prom.log,
                interval=0.25,
                ignore=NOT_YET,
            )
            st.timings["start"] = time.monotonic() - started
            rng = np.random.default_rng(22)
            # One request to each version first, and Prometheus holding every role's series
            # before the rest: a counter whose series is born with its final value between
            # two scrapes (the shadow's copies, mirrored after the answers, can all land so)
            # has no increase to rate, and the rules would never see that role's traffic.
            warm = {}
            for i in range(1000):
                key = f"warm-{i}"
                warm.setdefault("2" if bucket(key) < CANARY_WEIGHT * 100 else "1", key)
                if len(warm) == 2:
                    break
            for v, key in sorted(warm.items()):
                x = rng.standard_normal((ROWS, N_FEATURES)).astype(np.float32)
                st.rows[v] = st.rows.get(v, 0) + ROWS
                r = httpx.post(
                    server.url + "/v2/models/credit/infer",
                    json=_body(x),
                    headers={"mlserve-routing-key": key},
                    timeout=10,
                )
                assert r.status_code == 200 and r.headers["mlserve-model-version"] == v, r.text
            wait_for(
                lambda: (
                    {("stable",), ("canary",), ("shadow",)}
                    <= set(
                        prom.values(
                            'sum by (role) (mlserve_requests_total{model="credit"})', "role"
                        )
                    )
                ),
                30,
                what="Prometheus to scrape every role's first request",
                detail=prom.log,
                interval=0.25,
                ignore=NOT_YET,
            )
            for phase in ("steady", "shifted"):
                for i in range(REQUESTS):
                    x = rng.standard_normal((ROWS, N_FEATURES)).astype(np.float32)
                    if phase == "shifted":
                        x[:, NAMES.index(SHIFTED)] += 2.0
                    key = f"{phase}-{i}"
                    v = "2" if bucket(key) < CANARY_WEIGHT * 100 else "1"
                    st.rows[v] = st.rows.get(v, 0) + ROWS
                    # A new connection each: the kernel spreads them over both workers.
                    r = httpx.post(
                        server.url + "/v2/models/credit/infer",
                        json=_body(x),
                        headers={"mlserve-routing-key": key},
                        timeout=10,
                    )
                    assert r.status_code == 200, r.text
                    assert r.headers["mlserve-model-version"] == v
            for i in range(4):  # a few invalid requests, for the data-quality panels
                bad = httpx.post(
                    server.url + "/v2/models/credit/infer",
                    json=_body(np.zeros((1, N_FEATURES - 1), np.float32)),
                    headers={"mlserve-routing-key": f"bad-{i}"},
                )
                assert bad.status_code == 400
            assert min(st.rows.values()) >= 500  # enough rows in each version to alert
            st.timings["traffic"] = time.monotonic() - started

            def settled() -> bool:
                mon = httpx.get(server.url + "/v2/models/credit/monitor", timeout=10).json()
                counts = {
                    v: mon["versions"][v]["drift"]["sections"]["inputs"]["features"][0][
                        "window_count"
                    ]
                    for v in ("1", "2")
                }
                if counts != st.rows:
                    return False
                scraped = prom.values(
                    'sum by (version) (mlserve_feature_window_bin{feature="f0"})', "version"
                )
                if scraped != {(v,): float(n) for v, n in st.rows.items()}:
                    return False
                st.monitor = mon
                return True

            wait_for(
                settled,
                30,
                what="the counts to reach mlserve and Prometheus",
                detail=prom.log,
                interval=0.25,
                ignore=NOT_YET,
            )
            settled_at = time.time()

            def evaluated() -> bool:
                # The rules evaluate every second, but a busy machine delays evaluations:
                # wait for one that has every recording and sees every role's traffic,
                # then one more second so that queries 2 s back land on a whole evaluation.
                at = time.time() - 2
                # An evaluation over scrapes taken after the settled one: workers publish to
                # each other once a second, so the scrape that settled may hold one worker's
                # last requests (the invalid ones) a second late.
                if at < settled_at + 2:
                    return False
                if len(prom.values(PSI, "version", "feature", at=at)) != 2 * (N_FEATURES + 4):
                    return False
                rates = prom.values("model_role:mlserve_requests:rate5m", "role", at=at)
                return all(rates.get((r,), 0) > 0 for r in ("stable", "canary", "shadow"))

            wait_for(
                evaluated,
                30,
                what="the rules to evaluate the settled counts",
                detail=prom.log,
                interval=0.25,
                ignore=NOT_YET,
            )
            st.evaluated_at = time.time() - 2
            st.timings["settled"] = time.monotonic() - started
            st.scrape = httpx.get(server.url + "/metrics", timeout=10).text
            yield st
    finally:
        server.stop()


def _monitor(st: Stack) -> dict[str, dict[tuple[str, str], float]]:
    """GET /monitor's statistics by recording: (version, feature) → value (None left out)."""
    out: dict[str, dict[tuple[str, str], float]] = {name: {} for name in RECORDED}
    for v, item in st.monitor["versions"].items():
        if item["drift"] is None:  # the shadow has no reference profile
            continue
        for section in item["drift"]["sections"].values():
            for feat in section["features"]:
                for name, stat in RECORDED.items():
                    value = feat[stat]
                    if value is not None:
                        out[name][(v, feat["name"])] = float(value)
    return out


def test_recorded_drift_is_the_monitor_endpoints(stack: Stack) -> None:
    mine = _monitor(stack)
    assert len(mine[PSI]) == 2 * (N_FEATURES + 3 + 1)
    for name, expected in mine.items():
        prom = stack.prom.values(name, "version", "feature")
        assert set(prom) == set(expected), name
        worst = max(abs(prom[k] - v) for k, v in expected.items())
        print(f"{name}: {len(expected)} features, max |prometheus - mlserve| {worst:.2e}")
        for k, v in expected.items():
            assert prom[k] == pytest.approx(v, rel=1e-9, abs=1e-9), (name, k, prom[k], v)
    print(f"timings {stack.timings}")
    for v in ("1", "2"):
        assert mine[PSI][(v, SHIFTED)] > 0.25
        for name in NAMES:
            if name != SHIFTED:
                assert mine[PSI][(v, name)] < 0.05


def test_recordings_are_mlserves_functions_of_the_recorded_bins(stack: Stack) -> None:
    """The recordings are ``drift.psi``, ``rank_auc`` and ``rank_z`` of the window and
    reference recordings of one evaluation (bins in order, the missing bin last)."""
    at = stack.evaluated_at  # one evaluation, long finished
    window = stack.prom.values(
        "model_version_feature_bin:mlserve_feature_window_bin:sum",
        "version", "feature", "bin", at=at,
    )  # fmt: skip
    reference = stack.prom.values(
        "model_version_feature_bin:mlserve_feature_reference_bin:max",
        "version", "feature", "bin", at=at,
    )  # fmt: skip
    recorded = {
        name: stack.prom.values(name, "version", "feature", at=at)
        for name in (PSI, "model_version_feature:mlserve_feature_auc:window",
                     "model_version_feature:mlserve_feature_rank_z:window")
    }  # fmt: skip
    assert set(window) == set(reference)
    assert len(recorded[PSI]) == 2 * (N_FEATURES + 3 + 1)
    for key, value in recorded[PSI].items():
        bins = sorted(
            (b for b in window if b[:2] == key),
            key=lambda b: 1 << 30 if b[2] == "missing" else int(b[2]),
        )
        c = np.array([window[b] for b in bins])
        r = np.array([reference[b] for b in bins])
        assert value == pytest.approx(float(mlserve_drift.psi(r, c)), rel=1e-9, abs=1e-12), key
        auc = recorded["model_version_feature:mlserve_feature_auc:window"].get(key)
        z = recorded["model_version_feature:mlserve_feature_rank_z:window"].get(key)
        if key[1] in NAMES:  # numeric
            assert auc == pytest.approx(float(mlserve_drift.rank_auc(r, c)), rel=1e-9), key
            assert z == pytest.approx(float(mlserve_drift.rank_z(r, c)), rel=1e-9, abs=1e-9), key
        elif key[1].startswith("label"):  # categorical: PSI only
            assert auc is None and z is None, key


def test_counters_never_went_backwards(stack: Stack) -> None:
    resets = stack.prom.query("sum(resets(mlserve_feature_bin_total[10m]))")
    assert resets and float(resets[0]["value"][1]) == 0


def test_drift_alert_fires_for_the_shifted_feature_only(stack: Stack) -> None:
    def firing(alertname: str) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {"1": set(), "2": set()}
        for a in stack.prom.alerts():
            labels = a["labels"]
            if labels["alertname"] == alertname and a["state"] == "firing":
                out[labels["version"]].add(labels["feature"])
        return out

    wait_for(
        lambda: all(SHIFTED in f for f in firing("MlserveFeatureDrift").values()),
        15,
        what="the drift alert",
        detail=stack.prom.log,
        interval=0.25,
        ignore=NOT_YET,
    )
    fleet = firing("MlserveFeatureDrift")
    for v, features in fleet.items():
        inputs = features & set(NAMES)
        assert inputs == {SHIFTED}, v
        # Output features may drift with it (the scores depend on f2); nothing else does.
        assert all(f in NAMES or f.startswith(("scores", "label")) for f in features)
        report = stack.monitor["versions"][v]["drift"]["sections"]
        alerting = {f["name"] for s in report.values() for f in s["features"] if f["alert"]}
        assert features == alerting, v  # one server: the fleet's verdict is its own
    # One replica: its own alert names the same features.
    assert firing("MlserveReplicaFeatureDrift") == fleet
    others = {
        (a["labels"]["alertname"], a["labels"]["model"], a["state"])
        for a in stack.prom.alerts()
        if a["labels"]["alertname"] not in ("MlserveFeatureDrift", "MlserveReplicaFeatureDrift")
    }
    # Version 4 failed to load; no canary or overload alert on this healthy traffic.
    assert others == {("MlserveModelLoadFailed", "credit", "firing")}


def test_traffic_rules_see_every_role(stack: Stack) -> None:
    rates = stack.prom.values("model_role:mlserve_requests:rate5m", "role", at=stack.evaluated_at)
    # pinned: exported at zero from load, so rate() sees its first requests
    assert set(rates) == {("stable",), ("canary",), ("shadow",), ("pinned",)}
    assert rates.pop(("pinned",)) == 0  # no pinned traffic was sent
    assert all(r > 0 for r in rates.values())
    failures = stack.prom.values(
        "model_role:mlserve_request_failures:ratio_rate5m", "role", at=stack.evaluated_at
    )
    assert 0 < failures[("stable",)] + failures[("canary",)] < 0.2  # the invalid requests
    agreement = stack.prom.values(
        "model_version_output:mlserve_shadow_disagreement:ratio_rate5m",
        "version",
        "output",
        at=stack.evaluated_at,
    )
    assert set(agreement) == {("3", "label")}
    p99 = stack.prom.values(
        "model_role:mlserve_request_duration_seconds:p99_rate5m", "role", at=stack.evaluated_at
    )
    assert set(p99) == set(rates)
    assert all(0 < v < 10 and math.isfinite(v) for v in p99.values())


# ------------------------------------------------------------------ the Grafana dashboard
def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, expr) for every query of ``deploy/grafana/mlserve.json``."""
    doc = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]


def substitute(expr: str, model: str = ".*") -> str:
    """Grafana's variables as a test can set them: every version, and 1m for the rate."""
    return expr.replace("$__rate_interval", "1m").replace("$model", model).replace("$version", ".*")


# Panels that must show data after this traffic (no batcher, shadow or guardrail here).
MUST_SHOW = {
    "Requests per second by version and role",
    "Requests per second by outcome",
    "Latency p50 and p99 by version and role",
    "Queue and inference time p99 by version",
    "PSI by feature (fleet, drift window)",
    "PSI over its threshold by feature",
    "Rows in the drift window",
    "Features alerting: fleet and each replica",
    "Missing values per second by feature",
    "Out-of-range values per second by feature",
    "Rejected inputs per second by reason",
    "Failure ratio by role (5 min)",
    "p99 latency by role (5 min)",
    "Replicas serving each version",
    "Server errors (5xx) ratio by version and role",
    "Predicted classes per second by version",
    "Overload refusals per second and event-loop delay",
    "Gate and servability by version",
    "CPU by replica",
    "Memory and open files by replica",
}


def test_every_dashboard_expression_runs(stack: Stack) -> None:
    shown: set[str] = set()
    for title, expr in dashboard_targets():
        for model in (".*", "credit"):
            if stack.prom.query(substitute(expr, model)):  # asserts status success
                shown.add(title)
    titles = {title for title, _ in dashboard_targets()}
    assert titles >= MUST_SHOW
    assert shown >= MUST_SHOW, MUST_SHOW - shown
    print(f"panels without data on this traffic: {sorted(titles - shown)}")


def test_dashboard_variables_resolve(stack: Stack) -> None:
    """The model and version variables' label_values() queries, through the label API."""
    variables = {v["name"]: v for v in json.loads(DASHBOARD.read_text())["templating"]["list"]}

    def label_values(definition: str) -> list[str]:
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", definition)
        assert m, definition
        r = httpx.get(
            f"{stack.prom.url}/api/v1/label/{m[2]}/values",
            params={"match[]": substitute(m[1], "credit")},
        )
        doc = r.json()
        assert doc["status"] == "success"
        values: list[str] = doc["data"]
        return values

    assert label_values(variables["model"]["definition"]) == ["credit"]
    assert label_values(variables["version"]["definition"]) == ["1", "2", "3", "4"]
