"""The Grafana dashboard's model (``deploy/grafana/mlserve.json``), read without Grafana.

Its queries run against a real Prometheus in ``tests/test_prometheus_live.py``; here: the
model is what Grafana imports (a prometheus ``${datasource}`` variable everywhere, model and
version variables that every query honours, unique ids, panels inside the 24-column grid that
do not overlap), every metric it reads is in mlserve's metric catalogue or recorded by the
rules, and the topics the dashboard promises each have a panel.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlserve.monitoring.catalogue import CATALOGUE

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "mlserve.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in doc["panels"] if p["type"] != "row"]


def exprs(doc: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(doc) for t in p["targets"]]


def test_model_header(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] == 39
    assert dashboard["uid"] == "mlserve" and dashboard["id"] is None
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "model", "version"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("model", "version"):
        var = variables[name]
        assert var["type"] == "query" and var["datasource"] == DATASOURCE
        assert var["includeAll"] and var["multi"] and var["allValue"] == ".*"
        assert var["definition"] == var["query"]["query"]
        assert var["definition"].startswith("label_values(mlserve_model_ready")
    assert '{model=~"$model"}' in variables["version"]["definition"]


def test_panels_use_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels(dashboard):
        assert p["datasource"] == DATASOURCE, p["title"]
        assert p["targets"] and p["title"] and p["description"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DATASOURCE and t["expr"].strip(), p["title"]


def test_panels_fit_the_grid_without_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_every_query_honours_the_variables(dashboard: dict[str, Any]) -> None:
    """Every series of a model is selected by the model variable; only server-wide metrics
    (documented without labels) are read whole."""
    server_wide = _documented_metrics(labelled=False)
    assert "mlserve_event_loop_delay_seconds" in server_wide
    for expr in exprs(dashboard):
        for name, selector in re.findall(r"\b(mlserve_\w+|\w+:\w+:\w+)(\{[^}]*\})?", expr):
            if name in server_wide:
                continue
            assert 'model=~"$model"' in selector, (name, expr)
        if "[" in expr:
            assert "[$__rate_interval]" in expr or "_rate5m" in expr


def _documented_metrics(labelled: bool | None = None) -> set[str]:
    """Series names of the metric catalogue (``mlserve.monitoring.catalogue``, the table of
    ``docs/metrics.md``): only those with labels, or only those without, when ``labelled``
    says."""
    return {
        series
        for metric in CATALOGUE
        if labelled is None or labelled == bool(metric.labels)
        for series in metric.series
    }


def test_queries_read_documented_metrics_and_recorded_rules(dashboard: dict[str, Any]) -> None:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    known = _documented_metrics() | recorded
    assert "mlserve_request_duration_seconds_bucket" in known
    used = {n for e in exprs(dashboard) for n in re.findall(r"\b(?:mlserve_\w+|\w+:\w+:\w+)", e)}
    assert used <= known, used - known
    assert "model_version_feature:mlserve_feature_psi:window" in used


def test_the_promised_topics_have_panels(dashboard: dict[str, Any]) -> None:
    by_title = {p["title"]: p for p in panels(dashboard)}
    text = {t: " ".join(x["expr"] for x in p["targets"]) for t, p in by_title.items()}

    def panel(pattern: str, metric: str, kind: str = "timeseries") -> None:
        hits = [t for t in by_title if re.search(pattern, t, re.I) and metric in text[t]]
        assert hits, f"no panel for {pattern} reading {metric}"
        assert any(by_title[t]["type"] == kind for t in hits), f"{pattern}: not a {kind}"

    panel(r"requests per second by version and role", "mlserve_requests_total")
    panel(r"latency", "mlserve_request_duration_seconds_bucket")
    panel(r"batch size", "mlserve_batch_size_bucket", "heatmap")
    panel(r"PSI by feature", "mlserve_feature_psi:window", "heatmap")
    panel(r"PSI over its threshold", "mlserve_feature_psi_threshold:window")
    panel(r"features alerting", "mlserve_feature_drift_alert:window")
    panel(r"features alerting", "mlserve_feature_drift{")  # each replica's own alert
    panel(r"missing", "mlserve_feature_missing_total")
    panel(r"out-of-range", "mlserve_feature_out_of_range_total")
    panel(r"rejected", "mlserve_input_rejected_total")
    panel(r"failure ratio by role", "model_role:mlserve_request_failures:ratio_rate5m")
    panel(r"p99 latency by role", "model_role:mlserve_request_duration_seconds:p99_rate5m")
    panel(r"shadow agreement", "mlserve_shadow_disagreement:ratio_rate5m")
    panel(r"server errors \(5xx\)", 'outcome="error"')
    panel(r"predicted classes", "mlserve_prediction_class_total")
    panel(r"overload", "mlserve_overload_rejections_total")
    panel(r"event-loop delay", "mlserve_event_loop_delay_seconds")
    panel(r"gate", "mlserve_model_gate_passed", "stat")
    panel(r"servability", "mlserve_model_servable", "stat")
    panel(r"CPU", "process_cpu_seconds_total")
    panel(r"memory", "process_resident_memory_bytes")
    heatmap = by_title["PSI by feature (fleet, drift window)"]
    assert heatmap["options"]["calculate"] is False  # each feature is a row, not a histogram
    batch = next(p for p in panels(dashboard) if p["title"] == "Batch size")
    assert batch["targets"][0]["format"] == "heatmap"
