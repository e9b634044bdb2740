"""The Prometheus rules in ``deploy/prometheus``, held to promtool and to independent maths.

``promtool check rules`` lints them; ``promtool test rules`` runs the unit-test fixtures in
``deploy/prometheus/tests`` (two replicas' drift windows, canary and stable traffic, load
failures, overload). The numbers those fixtures expect are not trusted as written: this module
expands each fixture's input series and recomputes every expected sample and every expected
alert (labels and annotations) in Python, from the definitions. The drift rules are held to
mlserve's own functions (``drift.psi``, ``rank_z``, ``rank_auc``, ``midranks``,
``z_critical``, ``psi_threshold``) applied to the fleet's summed window, with the replica's
alert rule of ``drift_report``; the replicas' exported statistics in the fixture are checked
to be what that rule gives on each replica's own window. A nudged expectation must make
promtool fail, so the check is live. The tools come from Debian's ``prometheus`` package
(``scripts/test`` installs it); without them these tests fail rather than skip.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from .support.drift_statistics import Window, statistics

ROOT = Path(__file__).resolve().parents[1]
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "rules.yml"
FIXTURES = sorted((PROM / "tests").glob("*.yml"))

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs, __name__ excluded


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} not found: install Debian's 'prometheus' package"
    return path


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


# ------------------------------------------------------------------ fixtures as data
def expand(values: str) -> list[float]:
    """promtool's series notation: ``a``, ``a+bxn`` and ``a-bxn`` (n + 1 values)."""
    out: list[float] = []
    for token in values.split():
        m = re.fullmatch(r"(-?[\d.]+(?:e-?\d+)?)(?:([+-])([\d.]+)x(\d+))?", token)
        assert m, f"unsupported series token {token!r}"
        start = float(m[1])
        if m[2] is None:
            out.append(start)
            continue
        step = float(m[3]) * (1 if m[2] == "+" else -1)
        out.extend(start + step * i for i in range(int(m[4]) + 1))
    return out


@dataclass
class Series:
    name: str
    labels: dict[str, str]
    values: list[float]

    def at(self, t: int) -> float | None:
        """The sample at step ``t`` (None past the end: the series has ended)."""
        return self.values[t] if t < len(self.values) else None


def load_series(test: dict[str, Any]) -> list[Series]:
    assert test["interval"] == "1m"
    out = []
    for item in test["input_series"]:
        m = re.fullmatch(r"(\w+)\{(.*)\}", item["series"])
        assert m, item["series"]
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m[2]))
        out.append(Series(m[1], labels, expand(item["values"])))
    return out


def minutes(duration: str) -> int:
    m = re.fullmatch(r"(\d+)m", duration)
    assert m, f"fixtures use whole minutes, got {duration!r}"
    return int(m[1])


# ------------------------------------------------------------------ the rules, in Python
def key(labels: dict[str, str], by: tuple[str, ...]) -> Labels:
    return tuple(sorted((k, labels[k]) for k in by))


def increase(s: Series, t: int, steps: int) -> float | None:
    """``increase(x[steps m])`` at step ``t`` on whole-minute samples of a counter from 0.

    With samples exactly on the range's edges Prometheus extrapolates nothing; a counter that
    starts at 0 is not extrapolated before its first sample either."""
    if t < 1 or s.at(t) is None:
        return None
    assert s.values[0] == 0, "counters in the fixtures start at 0"
    return float(s.values[t] - s.values[max(t - steps, 0)])


def sum_increase(
    series: list[Series],
    name: str,
    t: int,
    steps: int,
    by: tuple[str, ...],
    where: Callable[[dict[str, str]], bool] = lambda _: True,
) -> dict[Labels, float]:
    out: dict[Labels, float] = defaultdict(float)
    for s in series:
        if s.name == name and where(s.labels):
            inc = increase(s, t, steps)
            if inc is not None:
                out[key(s.labels, by)] += inc
    return dict(out)


MVF = ("model", "version", "feature")


def _bin_order(b: str) -> int:
    return 1 << 30 if b == "missing" else int(b)


def windows(series: list[Series], t: int, by: tuple[str, ...] = MVF) -> dict[Labels, Window]:
    """Per ``by`` (the fleet's model, version, feature; add ``pod`` for one replica's): the
    window summed over everything else, and the replicas' (identical) reference and rule."""
    win: dict[Labels, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    ref: dict[Labels, dict[str, float]] = defaultdict(dict)
    ranks: dict[Labels, dict[str, float]] = defaultdict(dict)
    crit: dict[Labels, float] = {}
    rule: dict[Labels, dict[str, float]] = defaultdict(dict)
    for s in series:
        value = s.at(t)
        if value is None:
            continue
        labels = s.labels
        if s.name == "mlserve_feature_window_bin":
            win[key(labels, by)][labels["bin"]] += value
        elif s.name in ("mlserve_feature_reference_bin", "mlserve_feature_reference_midrank"):
            table = ref if s.name.endswith("_bin") else ranks
            k = key(labels, MVF)
            table[k][labels["bin"]] = max(table[k].get(labels["bin"], -math.inf), value)
        elif s.name == "mlserve_feature_drift" and labels["statistic"] == "psi_critical":
            k = key(labels, MVF)
            crit[k] = max(crit.get(k, -math.inf), value)
        elif s.name == "mlserve_drift_rule":
            k = key(labels, ("model", "version"))
            rule[k][labels["parameter"]] = max(rule[k].get(labels["parameter"], -math.inf), value)
    out = {}
    for k, counts in win.items():
        f = key(dict(k), MVF)
        bins = sorted(counts, key=_bin_order)
        assert bins == sorted(ref[f], key=_bin_order), (k, bins)
        value_bins = [b for b in bins if b != "missing"]
        numeric = bool(ranks.get(f))
        if numeric:
            assert sorted(ranks[f], key=_bin_order) == value_bins, f
        out[k] = Window(
            window=np.array([counts[b] for b in bins]),
            reference=np.array([ref[f][b] for b in bins]),
            midranks=np.array([ranks[f][b] for b in value_bins]) if numeric else None,
            psi_critical=crit[f],
            rule=rule[key(dict(k), ("model", "version"))],
        )
    return out


DRIFT_RECORDINGS = {
    "model_version_feature:mlserve_feature_window_rows:sum": "window_rows",
    "model_version_feature:mlserve_feature_window_rows:capped": "window_rows_capped",
    "model_version_feature:mlserve_feature_psi:window": "psi",
    "model_version_feature:mlserve_feature_psi_threshold:window": "psi_threshold",
    "model_version_feature:mlserve_feature_auc:window": "auc",
    "model_version_feature:mlserve_feature_rank_z:window": "rank_z",
    "model_version_feature:mlserve_feature_drift_alert:window": "alert",
}


def drift(series: list[Series], t: int) -> dict[str, dict[Labels, float]]:
    stats = {k: statistics(w) for k, w in windows(series, t).items()}
    out: dict[str, dict[Labels, float]] = {name: {} for name in DRIFT_RECORDINGS}
    for k, values in stats.items():
        for name, stat in DRIFT_RECORDINGS.items():
            if stat in values:
                out[name][k] = values[stat]
    out["model_version_feature:mlserve_feature_auc_effect:window"] = {
        k: abs(v - 0.5) for k, v in out["model_version_feature:mlserve_feature_auc:window"].items()
    }
    return out


def replicas(series: list[Series], t: int) -> dict[Labels, dict[str, float]]:
    """Each replica's exported drift statistics, by (model, version, feature, instance, pod),
    checked against the replica's rule on its own window."""
    exported: dict[Labels, dict[str, float]] = defaultdict(dict)
    for s in series:
        value = s.at(t)
        if s.name == "mlserve_feature_drift" and value is not None:
            exported[key(s.labels, (*MVF, "instance", "pod"))][s.labels["statistic"]] = value
    own = {k: statistics(w) for k, w in windows(series, t, (*MVF, "instance", "pod")).items()}
    for k, stats in exported.items():
        mine = own[k]
        for stat, value in stats.items():
            if stat != "psi_critical":
                assert value == pytest.approx(mine[stat], rel=1e-6, abs=1e-9), (k, stat)
    return dict(exported)


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """PromQL's estimate: linear within the bucket that holds rank q·total (lower bound 0)."""
    bounds = sorted(buckets)
    total = buckets[math.inf]
    rank = q * total
    below, lower = 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == math.inf:
                return lower
            return lower + (bound - lower) * (rank - below) / (buckets[bound] - below)
        below, lower = buckets[bound], bound
    raise AssertionError("no +Inf bucket")


def traffic(series: list[Series], t: int) -> dict[str, dict[Labels, float]]:
    mr = ("model", "role")
    total = sum_increase(series, "mlserve_requests_total", t, 5, mr)
    failed = sum_increase(
        series, "mlserve_requests_total", t, 5, mr, lambda s: s["outcome"] != "success"
    )
    ratio = {k: failed[k] / v for k, v in total.items() if v > 0}
    les = sum_increase(series, "mlserve_request_duration_seconds_bucket", t, 5, (*mr, "le"))
    hist: dict[Labels, dict[float, float]] = defaultdict(dict)
    for k, v in les.items():
        labels = dict(k)
        hist[key(labels, mr)][float(labels["le"])] = v
    p99 = {k: histogram_quantile(0.99, b) for k, b in hist.items() if b[math.inf] > 0}

    def canary_over_stable(values: dict[Labels, float]) -> dict[Labels, float]:
        out = {}
        for k, v in values.items():
            labels = dict(k)
            stable = values.get(key({**labels, "role": "stable"}, mr))
            if labels["role"] == "canary" and stable:
                out[(("model", labels["model"]),)] = v / stable
        return out

    by_model = sum_increase(series, "mlserve_requests_total", t, 5, ("model",))
    rejected = sum_increase(
        series, "mlserve_requests_total", t, 5, ("model",), lambda s: s["outcome"] == "rejected"
    )
    mvo = ("model", "version", "output")
    rows = sum_increase(series, "mlserve_shadow_rows_total", t, 5, mvo)
    disagree = sum_increase(series, "mlserve_shadow_disagreement_total", t, 5, mvo)
    return {
        "model_role:mlserve_requests:rate5m": {k: v / 300 for k, v in total.items()},
        "model_role:mlserve_request_failures:ratio_rate5m": ratio,
        "model_role:mlserve_request_duration_seconds:p99_rate5m": p99,
        "model:mlserve_canary_failure_ratio_over_stable:rate5m": canary_over_stable(ratio),
        "model:mlserve_canary_p99_over_stable:rate5m": canary_over_stable(p99),
        "model:mlserve_requests_rejected:ratio_rate5m": {
            k: rejected.get(k, 0.0) / v for k, v in by_model.items() if v > 0
        },
        "model_version_output:mlserve_shadow_disagreement:ratio_rate5m": {
            k: disagree[k] / v for k, v in rows.items() if v > 0
        },
    }


def recorded(series: list[Series], t: int) -> dict[str, dict[Labels, float]]:
    return {**drift(series, t), **traffic(series, t)}


def alert_conditions(series: list[Series], t: int) -> dict[str, dict[Labels, float]]:
    """Each alert's expression at step ``t``: the label sets where it holds, with $value."""
    r = recorded(series, t)
    fleet_psi = r["model_version_feature:mlserve_feature_psi:window"]
    ratio = r["model_role:mlserve_request_failures:ratio_rate5m"]
    rate = r["model_role:mlserve_requests:rate5m"]

    def canary(model: Labels, table: dict[Labels, float]) -> float:
        return table.get((*model, ("role", "canary")), math.nan)

    # max by (model) (versions failed now) > 0, or else max of the 15-minute increases > 0
    failures: dict[Labels, float] = {}
    for name in ("mlserve_model_versions_failed", "mlserve_model_load_failures_total"):
        side: dict[Labels, float] = {}
        for s in series:
            if s.name != name:
                continue
            value = s.at(t) if name.endswith("failed") else increase(s, t, 15)
            if value is not None:
                k = key(s.labels, ("model",))
                side[k] = max(side.get(k, -math.inf), value)
        for k, v in side.items():
            if v > 0:
                failures.setdefault(k, v)
    # max by (model) (mlserve_model_servable) == 0
    servable: dict[Labels, float] = {}
    for s in series:
        value = s.at(t) if s.name == "mlserve_model_servable" else None
        if value is not None:
            k = key(s.labels, ("model",))
            servable[k] = max(servable.get(k, -math.inf), value)
    return {
        "MlserveNoServableVersion": {k: v for k, v in servable.items() if v == 0},
        # the fleet's PSI where the replica's rule alerts on the summed window
        "MlserveFeatureDrift": {
            k: fleet_psi[k]
            for k, v in r["model_version_feature:mlserve_feature_drift_alert:window"].items()
            if v == 1
        },
        # a replica's own PSI where its own alert is 1
        "MlserveReplicaFeatureDrift": {
            k: stats["psi"] for k, stats in replicas(series, t).items() if stats.get("alert") == 1
        },
        # a replica's segment alert, as it exports it
        "MlserveSegmentDrift": {
            key(s.labels, tuple(s.labels)): 1.0
            for s in series
            if s.name == "mlserve_segment_drift_alert" and s.at(t) == 1
        },
        "MlserveCanaryFailureRatio": {
            k: v
            for k, v in r["model:mlserve_canary_failure_ratio_over_stable:rate5m"].items()
            if v > 2 and canary(k, ratio) > 0.01 and canary(k, rate) * 300 >= 200
        },
        "MlserveCanaryLatency": {
            k: v
            for k, v in r["model:mlserve_canary_p99_over_stable:rate5m"].items()
            if v > 1.5 and canary(k, rate) * 300 >= 200
        },
        "MlserveModelLoadFailed": {k: v for k, v in failures.items() if v > 0},
        "MlserveOverloaded": {
            k: v
            for k, v in r["model:mlserve_requests_rejected:ratio_rate5m"].items()
            if v > 0.01 and sum(x for key_, x in rate.items() if key_[0] == k[0]) * 300 >= 200
        },
    }


def firing(series: list[Series], alert: str, t: int) -> dict[Labels, float]:
    """Alerts firing at step ``t``: the condition held at every evaluation of the ``for``."""
    hold = minutes(next(r for r in rules() if r.get("alert") == alert).get("for", "0m"))
    now = alert_conditions(series, t)[alert]
    for earlier in range(t - hold, t):
        if earlier < 0:
            return {}
        now = {k: v for k, v in now.items() if k in alert_conditions(series, earlier)[alert]}
    return now


def query(series: list[Series], t: int) -> Callable[[str], list[float]]:
    """The queries the annotations run: a selector of a recording or of an input series,
    optionally as ``abs(<selector> - 0.5)``."""
    r = recorded(series, t)

    def run(expr: str) -> list[float]:
        m = re.fullmatch(r"abs\((.*) - 0\.5\)", expr)
        if m:
            return [abs(v - 0.5) for v in run(m[1])]
        m = re.fullmatch(r"([\w:]+)\{(.*)\}", expr)
        assert m, f"query form not modelled: {expr}"
        want = dict(re.findall(r"(\w+)='([^']*)'", m[2]))
        if m[1] in r:
            found = [v for k, v in r[m[1]].items() if want.items() <= dict(k).items()]
        else:
            found = [
                v
                for s in series
                if s.name == m[1]
                and (v := s.at(t)) is not None
                and want.items() <= s.labels.items()
            ]
        assert len(found) <= 1, expr
        return found

    return run


def render(
    template: str,
    labels: dict[str, str],
    value: float,
    run: Callable[[str], list[float]] | None = None,
) -> str:
    """The few Go-template forms the rules' annotations use: labels, $value, a variable set
    from labels by printf, and a query of it printed or else a fallback text."""
    variables: dict[str, str] = {}

    def assign(m: re.Match[str]) -> str:
        args = [labels[a[len("$labels.") :]] for a in m[3].split()]
        variables[m[1]] = m[2] % tuple(args)
        return ""

    template = re.sub(
        r'\{\{ \$(\w+) := printf "([^"]*)"((?: \$labels\.\w+)+) -\}\}\s*', assign, template
    )

    def with_query(m: re.Match[str]) -> str:
        assert run is not None
        found = run(m[1] % variables[m[2]])
        return f"{found[0]:.{m[3]}f}" if found else (m[4] or "")

    template = re.sub(
        r'\{\{ with query \(printf "([^"]*)" \$(\w+)\) \}\}'
        r'\{\{ \. \| first \| value \| printf "%\.(\d)f" \}\}'
        r"(?:\{\{ else \}\}(.*?))?\{\{ end \}\}",
        with_query,
        template,
    )

    def one(m: re.Match[str]) -> str:
        expr = m[1].strip()
        if expr.startswith("$labels."):
            return labels[expr[len("$labels.") :]]
        fmt = re.fullmatch(r'\$value \| printf "%\.(\d)f"', expr)
        if fmt:
            return f"{value:.{fmt[1]}f}"
        if expr == "$value | humanizePercentage":
            return f"{value * 100:.4g}%"
        raise AssertionError(f"template form not modelled: {expr}")

    return re.sub(r"\{\{(.*?)\}\}", one, template)


def rounded(value: float) -> float:
    """PromQL's ``round(v, 1e-06)``, refusing values too close to a rounding boundary."""
    scaled = value * 1e6
    assert abs(scaled - math.floor(scaled) - 0.5) > 1e-6, f"{value} is on a rounding boundary"
    return math.floor(scaled + 0.5) / 1e6


def by_labels(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(alerts, key=lambda alert: sorted(alert["exp_labels"].items()))


def fixture_tests() -> list[tuple[str, int, dict[str, Any]]]:
    out = []
    for path in FIXTURES:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["../rules.yml"] and doc["evaluation_interval"] == "1m"
        out += [(path.name, i, test) for i, test in enumerate(doc["tests"])]
    return out


# ------------------------------------------------------------------ tests
EXPECTED_RULES = {
    "model_version_feature_bin:mlserve_feature_window_bin:sum",
    "model_version_feature_bin:mlserve_feature_reference_bin:max",
    "model_version_feature_bin:mlserve_feature_reference_midrank:max",
    "model_version_parameter:mlserve_drift_rule:max",
    "model_version_feature:mlserve_feature_psi_critical:max",
    "model_version_feature:mlserve_feature_reference_rows:sum",
    "model_version_feature:mlserve_feature_reference_values:sum",
    "model_version_feature:mlserve_feature_window_rows:sum",
    "model_version_feature:mlserve_feature_window_rows:capped",
    "model_version_feature_bin:mlserve_feature_window_bin:capped",
    "model_version_feature:mlserve_feature_psi_bins:count",
    "model_version_feature:mlserve_feature_window_rows:smoothed",
    "model_version_feature:mlserve_feature_reference_rows:smoothed",
    "model_version_feature_bin:mlserve_feature_window_share:smoothed",
    "model_version_feature_bin:mlserve_feature_reference_share:smoothed",
    "model_version_feature:mlserve_feature_psi:window",
    "model_version_feature:mlserve_feature_psi_threshold:window",
    "model_version_feature:mlserve_feature_window_values:sum",
    "model_version_feature:mlserve_feature_ranked_values:sum",
    "model_version_feature:mlserve_feature_rank_u:sum",
    "model_version_feature:mlserve_feature_auc:window",
    "model_version_feature:mlserve_feature_auc_effect:window",
    "model_version_feature:mlserve_feature_rank_ties:sum",
    "model_version_feature:mlserve_feature_rank_z:window",
    "model_version_feature:mlserve_feature_drift_alert:window",
    "MlserveFeatureDrift",
    "MlserveReplicaFeatureDrift",
    "MlserveSegmentDrift",
    "model_version_role:mlserve_requests:rate5m",
    "model_role:mlserve_requests:rate5m",
    "model_version_role:mlserve_request_failures:rate5m",
    "model_version_role:mlserve_request_duration_seconds:p99_rate5m",
    "model_role:mlserve_request_failures:ratio_rate5m",
    "model_role:mlserve_request_duration_seconds:p99_rate5m",
    "model:mlserve_canary_failure_ratio_over_stable:rate5m",
    "model:mlserve_canary_p99_over_stable:rate5m",
    "model:mlserve_requests_rejected:ratio_rate5m",
    "model_version_output:mlserve_shadow_disagreement:ratio_rate5m",
    "MlserveCanaryFailureRatio",
    "MlserveCanaryLatency",
    "MlserveModelLoadFailed",
    "MlserveNoServableVersion",
    "MlserveOverloaded",
}


def test_promtool_check_rules() -> None:
    out = subprocess.run(
        [tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(EXPECTED_RULES)} rules found" in out.stdout
    assert {r.get("record") or r.get("alert") for r in rules()} == EXPECTED_RULES


def test_rules_read_only_earlier_recordings_of_their_group() -> None:
    """Groups run independently, rules within a group in order: a rule that read a later or
    another group's recording would see it one evaluation late (or not at all)."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    recordings = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    for group in groups:
        seen: set[str] = set()
        for rule in group["rules"]:
            used = set(re.findall(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["expr"]))
            assert used <= seen, f"{rule.get('record') or rule['alert']} reads {used - seen}"
            assert used <= recordings
            if "record" in rule:
                seen.add(rule["record"])


def test_fixtures_cover_the_rules() -> None:
    """Every alert has a fixture where it fires; the required cases are all there."""
    tested = {t["alertname"] for _, _, test in fixture_tests() for t in test["alert_rule_test"]}
    fired = {
        t["alertname"]
        for _, _, test in fixture_tests()
        for t in test["alert_rule_test"]
        if t.get("exp_alerts")
    }
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert tested == fired == alerts
    exprs = " ".join(
        t["expr"] for _, _, test in fixture_tests() for t in test.get("promql_expr_test", [])
    )
    for name in (
        *DRIFT_RECORDINGS,
        "model_role:mlserve_request_failures:ratio_rate5m",
        "model:mlserve_canary_failure_ratio_over_stable:rate5m",
        "model:mlserve_canary_p99_over_stable:rate5m",
    ):
        assert name in exprs
    pods = {s.labels.get("pod") for _, _, test in fixture_tests() for s in load_series(test)}
    assert {"a", "b"} <= pods  # two replicas summed


@pytest.mark.parametrize(
    "case", fixture_tests(), ids=lambda c: f"{c[0]}#{c[1]}" if isinstance(c, tuple) else ""
)
def test_fixture_expectations_are_the_definitions(case: tuple[str, int, dict[str, Any]]) -> None:
    """Each expected sample and alert of the fixture, recomputed from its input series."""
    _, _, test = case
    series = load_series(test)
    for check in test.get("promql_expr_test", []):
        m = re.fullmatch(r"round\(([\w:]+), 1e-06\)", check["expr"])
        assert m, f"fixture expressions are round(<recorded series>, 1e-06): {check['expr']}"
        expected = recorded(series, minutes(check["eval_time"]))[m[1]]
        got = {}
        for sample in check["exp_samples"]:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', sample["labels"]))
            got[key(labels, tuple(labels))] = float(sample["value"])
        want = {k: rounded(v) for k, v in expected.items()}
        assert got == want, f"{check['expr']} at {check['eval_time']}: use {want}"
    for check in test.get("alert_rule_test", []):
        name = check["alertname"]
        rule = next(r for r in rules() if r.get("alert") == name)
        run = query(series, minutes(check["eval_time"]))
        want = []
        for k, value in firing(series, name, minutes(check["eval_time"])).items():
            labels = dict(k)
            want.append(
                {
                    "exp_labels": {**labels, **rule["labels"]},
                    "exp_annotations": {
                        a: render(text, labels, value, run)
                        for a, text in rule["annotations"].items()
                    },
                }
            )
        got = check.get("exp_alerts", [])
        assert by_labels(got) == by_labels(want), f"{name} at {check['eval_time']}: use {want}"


def test_promtool_test_rules_passes() -> None:
    out = subprocess.run(
        [tool("promtool"), "test", "rules", *map(str, FIXTURES)],
        capture_output=True,
        text=True,
        cwd=PROM / "tests",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(FIXTURES)


def _run_mutated(tmp_path: Path, mutate: Callable[[dict[str, Any]], None]) -> str:
    doc = yaml.safe_load((PROM / "tests" / "drift.yml").read_text())
    doc["rule_files"] = [str(RULES)]
    mutate(doc)
    path = tmp_path / "mutated.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = subprocess.run(
        [tool("promtool"), "test", "rules", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 1, out.stdout + out.stderr
    return out.stdout + out.stderr


def test_a_wrong_psi_fails_promtool(tmp_path: Path) -> None:
    def nudge(doc: dict[str, Any]) -> None:
        check = next(c for c in doc["tests"][0]["promql_expr_test"] if "feature_psi:" in c["expr"])
        check["exp_samples"][0]["value"] += 1e-6

    report = _run_mutated(tmp_path, nudge)
    assert "mlserve_feature_psi:window" in report and "FAILED" in report


def test_a_missing_alert_fails_promtool(tmp_path: Path) -> None:
    def drop(doc: dict[str, Any]) -> None:
        check = next(c for c in doc["tests"][0]["alert_rule_test"] if c.get("exp_alerts"))
        check["exp_alerts"] = []

    assert "MlserveFeatureDrift" in _run_mutated(tmp_path, drop)


# ------------------------------------------------------------------ the scrape configuration
def test_example_config_passes_promtool(tmp_path: Path) -> None:
    """``prometheus.yml`` with its Kubernetes discovery swapped for file discovery (Debian's
    Prometheus is built without Kubernetes discovery); everything else as written."""
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    job = config["scrape_configs"][0]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    del job["kubernetes_sd_configs"]
    job["file_sd_configs"] = [{"files": [str(tmp_path / "targets.json")]}]
    (tmp_path / "targets.json").write_text("[]")
    config["rule_files"] = [str(PROM / f) for f in config["rule_files"]]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [tool("promtool"), "check", "config", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(EXPECTED_RULES)} rules found" in out.stdout


def test_example_config_reads_the_deployment_annotations() -> None:
    manifest = next(
        d
        for d in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "mlserve.yaml").read_text())
        if d and d["kind"] == "Deployment"
    )
    annotations = manifest["spec"]["template"]["metadata"]["annotations"]
    pod_labels = manifest["spec"]["template"]["metadata"]["labels"]
    job = yaml.safe_load((PROM / "prometheus.yml").read_text())["scrape_configs"][0]
    sources = {s for r in job["relabel_configs"] for s in r.get("source_labels", [])}
    for name in annotations:
        meta = "__meta_kubernetes_pod_annotation_" + re.sub(r"[^a-zA-Z0-9_]", "_", name)
        assert meta in sources, f"annotation {name} is not read"
    keep = {r["source_labels"][0]: r["regex"] for r in job["relabel_configs"] if r.get("action")
            == "keep"}  # fmt: skip
    assert keep["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] == "true"
    assert annotations["prometheus.io/scrape"] == "true"
    label = "__meta_kubernetes_pod_label_app_kubernetes_io_name"
    assert re.fullmatch(keep[label], pod_labels["app.kubernetes.io/name"])
