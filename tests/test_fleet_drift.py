"""The fleet's drift rules against mlserve's own, live: two replicas, haproxy, Prometheus.

Two ``mlserve serve`` replicas (one shared ``--state-dir``) behind Debian's haproxy, scraped
by Debian's Prometheus with ``deploy/prometheus/rules.yml`` (``for:`` cut to 0s). The models
are a scikit-learn pipeline (StandardScaler, LogisticRegression) on the breast-cancer data,
published with ``mlserve publish`` as ``cancer`` (tested rows capped at 800) and ``solo`` (no
cap), with a 12 × 10 s drift window that holds all of the test's traffic.

- ``cancer``, common traffic through haproxy: undrifted rows (reference rows drawn with
  replacement), then the same with ``mean radius`` shifted by one standard deviation. After
  each phase the fleet's recordings (PSI, its threshold, AUC, z, alert) equal, to 1e-6,
  ``mlserve.monitoring.drift`` on the sum of the two replicas' ``mlserve_feature_window_bin``
  read from their ``/metrics`` (the second phase's 1,200 fleet rows are capped to 800, each
  replica's 600 are not); the same recording expressions evaluated on each replica's own
  window (a copy of the shipped group that Prometheus loads beside it, the fleet's window
  replaced by the replica's) equal that replica's exported statistics; the undrifted phase
  alerts nowhere, the drifted one on ``mean radius`` for the fleet and for each replica alike.
- ``solo``: undrifted rows to both, then 100 drifted rows sent to one replica directly (its
  port, not haproxy) while the other takes 2,700 more undrifted rows:
  ``MlserveReplicaFeatureDrift`` fires for that replica's instance only; the fleet's sum
  dilutes the drift below the fleet's rule.

The measured differences (max |Prometheus - Python| per statistic, fleet and per replica) are
printed.
"""

from __future__ import annotations

import functools
import json
import re
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlserve.governance.publish import publish

from .conftest import PROM, Prometheus, free_port, prometheus
from .fleet_support import Fleet, haproxy
from .support.drift_statistics import Window, statistics
from .support.metrics import scrape as scrape_metrics
from .support.waiting import NOT_YET, wait_for

# Slow (replicas behind haproxy, and a real Prometheus): deselected by -m "not slow".
pytestmark = pytest.mark.slow

COMMON, SOLO = "cancer", "solo"
SHIFTED = "mean radius"
CAP = 800
ROWS = 50  # per request through haproxy
STATS = ("psi", "psi_threshold", "auc", "rank_z", "alert")
# recording of the fleet's statistic → mlserve_feature_drift's statistic label
RECORDINGS = {
    "model_version_feature:mlserve_feature_psi:window": "psi",
    "model_version_feature:mlserve_feature_psi_threshold:window": "psi_threshold",
    "model_version_feature:mlserve_feature_auc:window": "auc",
    "model_version_feature:mlserve_feature_rank_z:window": "rank_z",
    "model_version_feature:mlserve_feature_drift_alert:window": "alert",
}
FLEET_WINDOW = "model_version_feature_bin:mlserve_feature_window_bin:sum"
PHASES = [f"{COMMON} undrifted", f"{COMMON} drifted", f"{SOLO} one replica drifted"]
NAME = re.compile(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b")


# ------------------------------------------------------------------ the rules by instance
def _drift_group() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROM / "rules.yml").read_text())["groups"]
    rules: list[dict[str, Any]] = next(g for g in groups if g["name"] == "mlserve-drift")["rules"]
    return rules


RECORDS = {r["record"]: r["expr"] for r in _drift_group() if "record" in r}


@functools.cache
def _on_window(name: str) -> bool:
    return name == FLEET_WINDOW or any(_on_window(u) for u in NAME.findall(RECORDS[name]))


def per_instance(name: str) -> str:
    """A recording's name in the per-replica copy of the rules."""
    return f"instance_{name}" if _on_window(name) else name


def instance_group() -> dict[str, Any]:
    """The shipped drift recordings once more, per replica: every recording that reads the
    fleet's window renamed (instance_ prefix), the fleet's window replaced by each replica's
    own. The expressions are the shipped ones unchanged: they aggregate without (bin) and join
    on model, version, feature, so a replica's labels pass through."""
    rules = []
    for name, expr in RECORDS.items():
        if not _on_window(name):
            continue
        if name == FLEET_WINDOW:
            expr = "mlserve_feature_window_bin"
        rules.append(
            {"record": per_instance(name), "expr": NAME.sub(lambda m: per_instance(m[0]), expr)}
        )
    return {"name": "mlserve-drift-by-instance", "rules": rules}


def test_the_fleet_window_is_the_sum_of_the_replicas_windows() -> None:
    expr = RECORDS[FLEET_WINDOW]
    assert expr.strip() == "sum by (model, version, feature, bin) (mlserve_feature_window_bin)"
    assert "increase(" not in yaml.safe_dump(RECORDS)  # gauges: no extrapolation anywhere
    assert all(_on_window(name) for name in RECORDINGS)
    group = instance_group()
    assert group["rules"][0] == {"record": per_instance(FLEET_WINDOW),
                                 "expr": "mlserve_feature_window_bin"}  # fmt: skip
    for rule in group["rules"][1:]:  # the shipped expression, names aside
        shipped = RECORDS[rule["record"].removeprefix("instance_")]
        assert rule["expr"].replace("instance_", "") == shipped


# ------------------------------------------------------------------ data and traffic
@functools.cache
def _data() -> tuple[Any, Any]:
    bunch = load_breast_cancer(as_frame=True)
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    return bunch.data, est.fit(bunch.data, bunch.target)


def _rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    frame, _ = _data()
    x = frame.to_numpy(np.float64)[rng.integers(0, len(frame), n)].astype(np.float32)
    j = list(frame.columns).index(SHIFTED)
    x[:, j] += np.float32(shift * frame[SHIFTED].std())
    return x


def _infer(url: str, model: str, x: np.ndarray) -> httpx.Response:
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": list(x.shape),
                        "data": x.ravel().tolist()}]}  # fmt: skip
    r = httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=10)
    assert r.status_code == 200, r.text
    return r


# ------------------------------------------------------------------ what each side says
Bins = dict[str, dict[str, float]]  # feature → bin → value


@dataclass
class Scrape:
    """One replica's drift families for one model (version 1), from its /metrics."""

    window: Bins = field(default_factory=lambda: defaultdict(dict))
    reference: Bins = field(default_factory=lambda: defaultdict(dict))
    midrank: Bins = field(default_factory=lambda: defaultdict(dict))
    drift: Bins = field(default_factory=lambda: defaultdict(dict))  # feature → statistic
    rule: dict[str, float] = field(default_factory=dict)


def scrape(url: str, model: str) -> Scrape:
    out = Scrape()
    tables = {
        "mlserve_feature_window_bin": (out.window, "bin"),
        "mlserve_feature_reference_bin": (out.reference, "bin"),
        "mlserve_feature_reference_midrank": (out.midrank, "bin"),
        "mlserve_feature_drift": (out.drift, "statistic"),
    }
    for s in scrape_metrics(url):
        if s.labels.get("model") != model or s.labels.get("version") != "1":
            continue
        if s.name in tables:
            table, label = tables[s.name]
            table[s.labels["feature"]][s.labels[label]] = s.value
        elif s.name == "mlserve_drift_rule":
            out.rule[s.labels["parameter"]] = s.value
    return out


def _order(bins: dict[str, float]) -> list[str]:
    return sorted(bins, key=lambda b: 1 << 30 if b == "missing" else int(b))


def window_of(counts: dict[str, float], ref: Scrape, feature: str) -> Window:
    bins = _order(ref.reference[feature])
    assert _order(counts) == bins
    ranks = ref.midrank.get(feature)
    return Window(
        window=np.array([counts[b] for b in bins]),
        reference=np.array([ref.reference[feature][b] for b in bins]),
        midranks=np.array([ranks[b] for b in _order(ranks)]) if ranks else None,
        psi_critical=ref.drift[feature]["psi_critical"],
        rule=ref.rule,
    )


def load_instance_rules(prom: Prometheus, workdir: Path) -> None:
    """Add the per-replica group to the rules file the running Prometheus reads, and reload
    it (SIGHUP)."""
    path = workdir / "rules.yml"
    doc = yaml.safe_load(path.read_text())
    doc["groups"].append(instance_group())
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    prom.proc.send_signal(signal.SIGHUP)

    def loaded() -> bool:
        groups = httpx.get(prom.url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
        return "mlserve-drift-by-instance" in {g["name"] for g in groups}

    wait_for(
        loaded,
        15,
        what="Prometheus to load the per-replica rules",
        detail=prom.log,
        interval=0.25,
        ignore=NOT_YET,
    )


@dataclass
class Snapshot:
    """Both sides after one phase of traffic had settled."""

    scrapes: list[Scrape]
    fleet: dict[str, dict[str, float]]  # statistic → feature → Prometheus's recording
    replicas: dict[str, dict[tuple[str, str], float]]  # statistic → (instance, feature) → value
    alerts: dict[str, set[tuple[str, str]]]  # alertname → (instance or "", feature)
    descriptions: dict[tuple[str, str, str], str]  # (alertname, instance, feature) → text


@dataclass
class Stack:
    fleet: Fleet
    prom: Prometheus
    instances: list[str]
    reference: dict[str, Any]  # the published profile of version 1
    sent: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def through_lb(self, model: str, x: np.ndarray) -> None:
        r = _infer(self.fleet.lb, model, x)
        self.sent[(model, int(r.headers["x-replica"][1:]))] += len(x)

    def direct(self, i: int, model: str, x: np.ndarray) -> None:
        _infer(self.fleet.replicas[i].url, model, x)
        self.sent[(model, i)] += len(x)

    def settle(self, model: str, phase: str) -> None:
        """Wait until each replica's /metrics and Prometheus's recordings hold every row sent,
        then take both sides' figures."""
        f0 = f'feature="{SHIFTED}",model="{model}"'

        def settled() -> bool:
            scrapes = [scrape(r.url, model) for r in self.fleet.replicas]
            rows = [sum(s.window[SHIFTED].values()) for s in scrapes]
            if rows != [self.sent[(model, i)] for i in range(len(rows))]:
                return False
            seen = self.prom.values(
                f"sum by (instance) (mlserve_feature_window_bin{{{f0}}})", "instance"
            )
            if seen != {(inst,): float(n) for inst, n in zip(self.instances, rows, strict=True)}:
                return False
            fleet = self.prom.values(
                f"model_version_feature:mlserve_feature_window_rows:sum{{{f0}}}"
            )
            own = self.prom.values(
                f"{per_instance('model_version_feature:mlserve_feature_window_rows:sum')}{{{f0}}}",
                "instance",
            )
            return fleet == {(): float(sum(rows))} and own == seen

        wait_for(
            settled,
            30,
            what=f"{model} {phase}: the rows in /metrics and Prometheus",
            detail=lambda: self.prom.log() + self.fleet.logs(),
            interval=0.25,
            ignore=NOT_YET,
        )
        # The alerts read the recordings: wait for every rule group to evaluate once more
        # after the recordings had settled.
        settled_at = time.time()
        wait_for(
            lambda: all(at > settled_at for at in self.prom.evaluations().values()),
            30,
            what=f"{model} {phase}: an evaluation of every rule group after the recordings",
            detail=self.prom.log,
            interval=0.25,
            ignore=NOT_YET,
        )
        scrapes = [scrape(r.url, model) for r in self.fleet.replicas]
        fleet = {
            stat: {k[0]: v for k, v in
                   self.prom.values(f'{name}{{model="{model}",version="1"}}', "feature").items()}
            for name, stat in RECORDINGS.items()
        }  # fmt: skip
        replicas = {
            stat: self.prom.values(
                f'{per_instance(name)}{{model="{model}",version="1"}}', "instance", "feature"
            )
            for name, stat in RECORDINGS.items()
        }
        alerts: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for s in self.prom.query(f'ALERTS{{model="{model}",alertstate="firing"}}'):
            labels = s["metric"]
            alerts[labels["alertname"]].add((labels.get("instance", ""), labels["feature"]))
        descriptions = {
            (a["labels"]["alertname"], a["labels"].get("instance", ""), a["labels"]["feature"]): a[
                "annotations"
            ]["description"]
            for a in self.prom.alerts()
            if a["labels"].get("model") == model and "feature" in a["labels"]
        }
        self.snapshots[f"{model} {phase}"] = Snapshot(
            scrapes, fleet, replicas, dict(alerts), descriptions
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = time.monotonic()
    work = tmp_path_factory.mktemp("fleet-drift")
    registry = work / "registry"
    frame, est = _data()
    for model, cap in ((COMMON, CAP), (SOLO, 0)):
        done = publish(registry, model, reference=frame, estimator=est)
        assert done.version == 1
        (registry / model / "model.toml").write_text(
            "[monitoring]\nbucket_seconds = 10\nwindow_buckets = 12\nmin_window = 100\n"
            f"max_window_rows = {cap}\n"
            "sample_rows = 0\n"  # 300-row requests count every row, as the test's sums do
        )
    profile = json.loads((registry / COMMON / "1" / "reference.json").read_text())
    fl = Fleet(registry, work / "state", [free_port(), free_port()])
    try:
        for i in range(len(fl.ports)):
            fl.start(i, wait=False)
        for r in fl.replicas:
            r.wait_ready()
        with haproxy(work, fl.ports) as lb, prometheus(work, *fl.ports, scrape_s=1) as prom:
            fl.lb = lb
            st = Stack(fl, prom, [f"127.0.0.1:{p}" for p in fl.ports], profile)
            load_instance_rules(prom, work)
            wait_for(
                lambda: (
                    len(prom.query(f'mlserve_feature_window_bin{{feature="{SHIFTED}",bin="0"}}'))
                    == 4
                ),  # two models on two replicas
                30,
                what="Prometheus to scrape both replicas' windows",
                detail=prom.log,
                interval=0.25,
                ignore=NOT_YET,
            )
            st.timings["start"] = time.monotonic() - started
            rng = np.random.default_rng(7)
            for _ in range(12):  # 600 undrifted rows, half on each replica
                st.through_lb(COMMON, _rows(rng, ROWS))
            st.settle(COMMON, "undrifted")
            for _ in range(12):  # 600 rows with mean radius one sd higher
                st.through_lb(COMMON, _rows(rng, ROWS, shift=1.0))
            st.settle(COMMON, "drifted")
            st.timings["common"] = time.monotonic() - started
            for _ in range(4):  # undrifted on both, then many more on replica 1 ...
                st.through_lb(SOLO, _rows(rng, ROWS))
            for _ in range(9):
                st.direct(1, SOLO, _rows(rng, 300))
            st.direct(0, SOLO, _rows(rng, 100, shift=1.5))  # ... and a drift on replica 0 only
            st.settle(SOLO, "one replica drifted")
            st.timings["solo"] = time.monotonic() - started
            yield st
    finally:
        fl.stop()


# ------------------------------------------------------------------ the checks
def _fleet_python(snap: Snapshot) -> dict[str, dict[str, float]]:
    """mlserve's rule on the sum of the replicas' window counts, per feature."""
    out: dict[str, dict[str, float]] = {}
    first = snap.scrapes[0]
    for feature in first.window:
        total: dict[str, float] = defaultdict(float)
        for s in snap.scrapes:
            assert s.reference[feature] == first.reference[feature]  # one profile
            assert s.rule == first.rule
            for b, v in s.window[feature].items():
                total[b] += v
        out[feature] = statistics(window_of(total, first, feature))
    return out


def _worst(diffs: dict[str, list[float]]) -> str:
    return ", ".join(f"{k} {max(v):.1e}" for k, v in diffs.items() if v)


@pytest.mark.parametrize("phase", PHASES)
def test_fleet_recordings_are_mlserves_rule_on_the_summed_windows(stack: Stack, phase: str) -> None:
    snap = stack.snapshots[phase]
    mine = _fleet_python(snap)
    assert len(mine) == 30 + 3  # every input, label, probabilities[0] and [1]
    diffs: dict[str, list[float]] = {stat: [] for stat in STATS}
    for feature, stats in mine.items():
        for stat in STATS:
            got = snap.fleet[stat].get(feature)
            if stat not in stats:  # categorical: no rank test
                assert got is None and feature == "label", (feature, stat)
                continue
            assert got is not None, (feature, stat)
            diffs[stat].append(abs(got - stats[stat]))
            assert got == pytest.approx(stats[stat], abs=1e-6), (phase, feature, stat)
    rows = [sum(s.window[SHIFTED].values()) for s in snap.scrapes]
    print(f"\n{phase}: replicas' rows {rows}; fleet vs Python, max |diff|: {_worst(diffs)}")


@pytest.mark.parametrize("phase", PHASES)
def test_the_same_rules_per_replica_are_the_replicas_own_statistics(
    stack: Stack, phase: str
) -> None:
    snap = stack.snapshots[phase]
    diffs: dict[str, list[float]] = {stat: [] for stat in STATS}
    for instance, s in zip(stack.instances, snap.scrapes, strict=True):
        for feature, exported in s.drift.items():
            for stat in STATS:
                got = snap.replicas[stat].get((instance, feature))
                if stat not in exported:
                    assert got is None, (instance, feature, stat)
                    continue
                assert got is not None, (instance, feature, stat)
                diffs[stat].append(abs(got - exported[stat]))
                assert got == pytest.approx(exported[stat], abs=1e-6), (instance, feature, stat)
            # and the replica's own export is mlserve's rule on its window
            own = statistics(window_of(s.window[feature], s, feature))
            assert own["alert"] == exported["alert"] and own["psi"] == pytest.approx(
                exported["psi"], abs=1e-12
            )
    print(f"\n{phase}: per replica, rules vs the replica's export, max |diff|: {_worst(diffs)}")


def test_the_reference_exported_is_the_published_profile(stack: Stack) -> None:
    snap = stack.snapshots[f"{COMMON} undrifted"]
    entries = [*stack.reference["features"]]
    for section in stack.reference["outputs"].values():
        entries += section
    assert {e["name"] for e in entries} == set(snap.scrapes[0].reference)
    for e in entries:
        ref = snap.scrapes[0].reference[e["name"]]
        assert [ref[b] for b in _order(ref)] == [*e["counts"], e["missing"]], e["name"]


def test_undrifted_traffic_alerts_nowhere(stack: Stack) -> None:
    snap = stack.snapshots[f"{COMMON} undrifted"]
    assert not any(snap.fleet["alert"].values())
    assert not any(snap.replicas["alert"].values())
    assert snap.alerts == {}


def test_common_drift_alerts_the_fleet_and_every_replica_alike(stack: Stack) -> None:
    snap = stack.snapshots[f"{COMMON} drifted"]
    frame, _ = _data()
    inputs = set(frame.columns)
    fleet = {f for f, v in snap.fleet["alert"].items() if v == 1}
    assert fleet & inputs == {SHIFTED}
    assert {f for _, f in snap.alerts["MlserveFeatureDrift"]} == fleet
    replica_alerts = snap.alerts["MlserveReplicaFeatureDrift"]
    for instance in stack.instances:
        mine = {f for (i, f), v in snap.replicas["alert"].items() if i == instance and v == 1}
        assert mine & inputs == {SHIFTED}, instance
        assert {f for i, f in replica_alerts if i == instance} == mine
    # The annotations' queries ran: the fleet's figures, and each replica's own.
    text = snap.descriptions[("MlserveFeatureDrift", "", SHIFTED)]
    psi, thr = snap.fleet["psi"][SHIFTED], snap.fleet["psi_threshold"][SHIFTED]
    effect = abs(snap.fleet["auc"][SHIFTED] - 0.5)
    assert f"PSI {psi:.3f} (threshold {thr:.3f}), |AUC - 0.5| {effect:.3f}, over 1200 rows" in text
    for instance, s in zip(stack.instances, snap.scrapes, strict=True):
        text = snap.descriptions[("MlserveReplicaFeatureDrift", instance, SHIFTED)]
        own = s.drift[SHIFTED]
        assert (
            f"PSI {own['psi']:.3f}, |AUC - 0.5| {abs(own['auc'] - 0.5):.3f}, over 600 rows" in text
        ), text
    every = {f for (_, f), v in snap.replicas["alert"].items() if v == 1}
    print(
        f"\ncommon drift: fleet alerts {sorted(fleet)}; replicas "
        + "; ".join(
            f"{i}: {sorted(f for (j, f), v in snap.replicas['alert'].items() if j == i and v)}"
            for i in stack.instances
        )
        + f"; fleet PSI of {SHIFTED} {snap.fleet['psi'][SHIFTED]:.3f} (capped at {CAP} rows), "
        f"replicas' {[round(snap.replicas['psi'][(i, SHIFTED)], 3) for i in stack.instances]}"
    )
    print(f"features alerting on some replica but not the fleet: {sorted(every - fleet)}")
    gaps = {
        stat: max(abs(snap.fleet[stat][f] - v) for (_, f), v in snap.replicas[stat].items())
        for stat in STATS
    }
    print(
        "max |fleet - replica| over features: " + ", ".join(f"{k} {v:.3f}" for k, v in gaps.items())
    )


def test_a_drift_on_one_replica_alerts_for_that_replica(stack: Stack) -> None:
    snap = stack.snapshots[f"{SOLO} one replica drifted"]
    drifted, other = stack.instances
    assert (drifted, SHIFTED) in snap.alerts["MlserveReplicaFeatureDrift"]
    assert not any(i == other for i, _ in snap.alerts["MlserveReplicaFeatureDrift"])
    assert snap.replicas["alert"][(drifted, SHIFTED)] == 1
    assert snap.replicas["alert"][(other, SHIFTED)] == 0
    # The fleet's sum dilutes it under the rule: only the replica's alert sees it.
    assert snap.fleet["alert"][SHIFTED] == 0
    assert ("", SHIFTED) not in snap.alerts.get("MlserveFeatureDrift", set())
    auc = {i: snap.replicas["auc"][(i, SHIFTED)] for i in stack.instances}
    print(
        f"\none replica drifted: {drifted} PSI {snap.replicas['psi'][(drifted, SHIFTED)]:.3f} "
        f"|AUC - 0.5| {abs(auc[drifted] - 0.5):.3f} alerts; {other} PSI "
        f"{snap.replicas['psi'][(other, SHIFTED)]:.4f}; fleet PSI {snap.fleet['psi'][SHIFTED]:.4f} "
        f"(threshold {snap.fleet['psi_threshold'][SHIFTED]:.4f}), |AUC - 0.5| "
        f"{abs(snap.fleet['auc'][SHIFTED] - 0.5):.3f}: no fleet alert; timings {stack.timings}"
    )
