"""Prometheus exposition of a merged ``WorkerSnapshot``: families, text, prometheus_client.

``collect_families`` turns a snapshot (``snapshot.py``) and the drift reports computed from
it into metric families (plain tuples, cheap to build); ``render_text`` writes them in the
text format or OpenMetrics directly, ``to_metrics`` hands them to a ``CollectorRegistry``.
Families (all ``mlserve_``-prefixed, base units, histograms never summaries) are defined in
``catalogue.py`` (docs/metrics.md's table is generated from it); labels are ``model``,
``version`` and, for traffic, ``role``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import Metric

from .catalogue import METRICS
from .request_stats import BATCH_BUCKETS, LATENCY_BUCKETS, OUTCOMES, SHADOW_DIFF_BUCKETS
from .snapshot import (
    EndpointState,
    HistogramState,
    PayloadState,
    ShadowState,
    WorkerSnapshot,
)


@dataclass
class Family:
    """One metric family as plain data: cheap to build, cheap to render."""

    name: str  # counters without the _total suffix, as OpenMetrics names them
    kind: str  # "counter" | "gauge" | "histogram"
    help: str
    labels: tuple[str, ...]
    # (name suffix, label values (plus "le" for buckets), value)
    samples: list[tuple[str, tuple[str, ...], float]] = field(default_factory=list)


def family(name: str) -> Family:
    """An empty family as the catalogue lists it: a name it does not list cannot be exposed
    (``KeyError``)."""
    spec = METRICS[name]
    return Family(spec.name, spec.kind, spec.help, spec.labels)


def collect_families(snapshot: WorkerSnapshot, reports: Mapping[str, Any]) -> list[Family]:
    """Families for a merged snapshot and the drift reports computed from it
    (``reports``: ``"model/version"`` → ``ModelMonitor.report``)."""
    workers = family("mlserve_workers")
    workers.samples.append(("", (), snapshot.workers or 1))
    requests = family("mlserve_requests")
    rows = family("mlserve_inference_rows")
    hist = {
        "duration": family("mlserve_request_duration_seconds"),
        "queue": family("mlserve_queue_duration_seconds"),
        "inference": family("mlserve_inference_duration_seconds"),
    }
    batch = family("mlserve_batch_size")
    pending = family("mlserve_pending_requests")
    endpoints = snapshot.endpoints
    for key in sorted(endpoints):
        model, version = key.split("/", 1)
        entry = endpoints[key]
        roles = entry.roles
        for role in sorted({*roles, *_ZERO_ROLES}):
            labels = (model, version, role)
            state = roles.get(role)
            if state is None:  # counters exist from load, so rate() sees the first requests
                for outcome in OUTCOMES:
                    requests.samples.append(("_total", (*labels, outcome), 0))
                rows.samples.append(("_total", labels, 0))
                continue
            for outcome, count in zip(OUTCOMES, state.outcomes, strict=True):
                requests.samples.append(("_total", (*labels, outcome), count))
            rows.samples.append(("_total", labels, state.rows))
            _histogram(hist["duration"], labels, LATENCY_BUCKETS, state.duration)
            _histogram(hist["queue"], labels, LATENCY_BUCKETS, state.queue)
            _histogram(hist["inference"], labels, LATENCY_BUCKETS, state.inference)
        if entry.batch is not None:
            _histogram(batch, (model, version), BATCH_BUCKETS, entry.batch)
        pending.samples.append(("", (model, version), entry.pending))
    return [workers, requests, rows, *hist.values(), batch, pending,
            *_model_families(snapshot), *_monitor_families(endpoints, reports),
            *_shadow_families(snapshot.shadows),
            *_routing_families(snapshot), _explain_family(snapshot),
            *_overload_families(snapshot),
            *_payload_families(snapshot.payloads)]  # fmt: skip


# Roles whose request counters are exported (at zero) from the moment a version loads.
_ZERO_ROLES = ("stable", "canary", "pinned")


def _histogram(
    family: Family, labels: tuple[str, ...], bounds: tuple[float, ...], state: HistogramState
) -> None:
    total = 0
    for bound, count in zip((*bounds, math.inf), state.counts, strict=True):
        total += count
        le = "+Inf" if bound == math.inf else repr(float(bound))
        family.samples.append(("_bucket", (*labels, le), total))
    family.samples.append(("_count", labels, total))
    family.samples.append(("_sum", labels, state.sum))


def _model_families(snapshot: WorkerSnapshot) -> list[Family]:
    ready = family("mlserve_model_ready")
    load = family("mlserve_model_load_seconds")
    gate = family("mlserve_model_gate_passed")
    servable = family("mlserve_model_servable")
    for key, gauge in sorted(snapshot.gauges.items()):
        labels = tuple(key.split("/", 1))
        ready.samples.append(("", labels, gauge.ready))
        servable.samples.append(("", labels, gauge.servable))
        if gauge.gate_passed is not None:
            gate.samples.append(("", labels, gauge.gate_passed))
        if gauge.load_seconds is not None:
            load.samples.append(("", labels, gauge.load_seconds))
    failures = family("mlserve_model_load_failures")
    for model, count in sorted(snapshot.load_failures.items()):
        failures.samples.append(("_total", (model,), count))
    failed = family("mlserve_model_versions_failed")
    for model, count in sorted(snapshot.failed_versions.items()):
        failed.samples.append(("", (model,), count))
    rejected = family("mlserve_input_rejected")
    for key, count in sorted(snapshot.rejected.items()):
        rejected.samples.append(("_total", tuple(key.split("/", 2)), count))
    return [ready, servable, gate, load, failures, failed, rejected]


def _monitor_families(
    endpoints: Mapping[str, EndpointState], reports: Mapping[str, Any]
) -> list[Family]:
    drift = family("mlserve_feature_drift")
    bins = family("mlserve_feature_bin")
    ratio = family("mlserve_feature_reference_ratio")
    window_bins = family("mlserve_feature_window_bin")
    reference_bins = family("mlserve_feature_reference_bin")
    midrank = family("mlserve_feature_reference_midrank")
    rule = family("mlserve_drift_rule")
    missing = family("mlserve_feature_missing")
    out_of_range = family("mlserve_feature_out_of_range")
    classes = family("mlserve_prediction_class")
    alert = family("mlserve_drift_alert")
    segment_alert = family("mlserve_segment_drift_alert")
    segment_drift = family("mlserve_segment_feature_drift")
    for key in sorted(endpoints):
        mon = endpoints[key].monitor
        if not mon:
            continue
        model, version = key.split("/", 1)
        for state in mon["sections"].values():
            for i, name in enumerate(state["names"]):
                labels = (model, version, name)
                counts = state["total"][i]
                refs = state["reference_ratio"][i]
                last = len(counts) - 1
                for b, value in enumerate(counts):
                    label = "missing" if b == last else str(b)
                    bins.samples.append(("_total", (*labels, label), value))
                    ratio.samples.append(("", (*labels, label), refs[b]))
                missing.samples.append(("_total", labels, counts[-1]))
                out_of_range.samples.append(("_total", labels, state["out_of_range"][i]))
                padded = state["window"]["counts"][i] if "window" in state else [0]
                window_row = [*padded[:last], padded[-1]] if "window" in state else []
                for b, value in enumerate(window_row):
                    label = "missing" if b == last else str(b)
                    window_bins.samples.append(("", (*labels, label), value))
                if "reference" in state:  # snapshots of older workers lack it
                    for b, value in enumerate(state["reference"][i]):
                        label = "missing" if b == last else str(b)
                        reference_bins.samples.append(("", (*labels, label), value))
                    for b, value in enumerate(state["reference_midrank"][i]):
                        midrank.samples.append(("", (*labels, str(b)), value))
            for name, cls in state.get("classes", {}).items():
                for level, count in zip([*cls["levels"], "other"], cls["counts"], strict=True):
                    classes.samples.append(("_total", (model, version, name, str(level)), count))
        report = reports.get(key)
        if not report:
            continue
        for section, rep in report["sections"].items():
            alert.samples.append(("", (model, version, section), 1 if rep["alert"] else 0))
            for feat in rep["features"]:
                labels = (model, version, feat["name"])
                for stat in _DRIFT_STATISTICS:
                    value = feat.get(stat)
                    if value is not None:
                        drift.samples.append(("", (*labels, stat), value))
                drift.samples.append(("", (*labels, "window_rows"), feat["window_count"]))
                drift.samples.append(("", (*labels, "alert"), 1 if feat["alert"] else 0))
        segments = report.get("segments")
        for segment, rep in sorted((segments or {}).get("segments", {}).items()):
            segment_alert.samples.append(("", (model, version, segment), int(rep["alert"])))
            for feat in rep["features"]:
                seg_labels = (model, version, segment, feat["name"])
                for stat in ("psi", "psi_threshold", "auc"):
                    value = feat.get(stat)
                    if value is not None:
                        segment_drift.samples.append(("", (*seg_labels, stat), value))
                segment_drift.samples.append(
                    ("", (*seg_labels, "window_rows"), feat["window_count"])
                )
                segment_drift.samples.append(("", (*seg_labels, "alert"), int(feat["alert"])))
        first = next(iter(report["sections"].values()), None)
        if first is not None:
            for parameter, key in _RULE_PARAMETERS:
                value = first.get(key)
                if value is not None:
                    rule.samples.append(("", (model, version, parameter), value))
    return [
        drift, bins, ratio, window_bins, reference_bins, midrank, rule, missing, out_of_range,
        classes, alert, segment_alert, segment_drift,
    ]  # fmt: skip


_DRIFT_STATISTICS = (
    "psi", "js", "ks", "chi2", "psi_threshold", "psi_critical", "rank_z", "auc",
)  # fmt: skip
_RULE_PARAMETERS = (
    ("alpha_per_test", "alpha_per_test"),
    ("z_critical", "z_critical"),
    ("psi_floor", "psi_floor"),
    ("auc_floor", "auc_floor"),
    ("min_window", "m_min"),
    ("max_window_rows", "max_rows"),
)


def _routing_families(snapshot: WorkerSnapshot) -> list[Family]:
    weight = family("mlserve_canary_weight")
    for model, w in sorted(snapshot.guardrails.canary_weight.items()):
        weight.samples.append(("", (model,), w))
    actions = family("mlserve_guardrail_actions")
    for key, count in sorted(snapshot.guardrails.actions.items()):
        actions.samples.append(("_total", tuple(key.split("/", 1)), count))
    return [weight, actions]


def _overload_families(snapshot: WorkerSnapshot) -> list[Family]:
    """Load shedding: requests refused while the event loop ran late, and how late it runs
    (the most of any worker)."""
    shed = family("mlserve_overload_rejections")
    shed.samples.append(("_total", (), snapshot.serving.overload_rejections))
    delay = family("mlserve_event_loop_delay_seconds")
    delay.samples.append(("", (), snapshot.serving.loop_delay_seconds))
    scans = family("mlserve_registry_scan_failures")
    scans.samples.append(("_total", (), snapshot.serving.registry_scan_failures))
    return [shed, delay, scans]


def _explain_family(snapshot: WorkerSnapshot) -> Family:
    explain = family("mlserve_explain_requests")
    for key, count in sorted(snapshot.explain.requests.items()):
        explain.samples.append(("_total", tuple(key.split("/", 2)), count))
    return explain


def _payload_families(payloads: Mapping[str, PayloadState]) -> list[Family]:
    logged = family("mlserve_payloads_logged")
    dropped = family("mlserve_payloads_dropped")
    written = family("mlserve_payloads_bytes")
    for model in sorted(payloads):
        state = payloads[model]
        logged.samples.append(("_total", (model,), state.logged))
        dropped.samples.append(("_total", (model, "queue"), state.dropped))
        dropped.samples.append(("_total", (model, "error"), state.errors))
        written.samples.append(("_total", (model,), state.bytes))
    return [logged, dropped, written]


def _shadow_families(shadows: Mapping[str, ShadowState]) -> list[Family]:
    requests = family("mlserve_shadow_requests")
    errors = family("mlserve_shadow_errors")
    dropped = family("mlserve_shadow_dropped")
    rows = family("mlserve_shadow_rows")
    disagree = family("mlserve_shadow_disagreement")
    diff = family("mlserve_shadow_abs_diff")
    infer = family("mlserve_shadow_inference_duration_seconds")
    for key in sorted(shadows):
        state = shadows[key]
        labels = tuple(key.split("/", 1))
        requests.samples.append(("_total", labels, state.requests))
        errors.samples.append(("_total", labels, state.errors))
        dropped.samples.append(("_total", labels, state.dropped))
        for output, count in sorted(state.rows.items()):
            rows.samples.append(("_total", (*labels, output), count))
        for output, count in sorted(state.disagree.items()):
            disagree.samples.append(("_total", (*labels, output), count))
        for output, hist in sorted(state.diff.items()):
            _histogram(diff, (*labels, output), SHADOW_DIFF_BUCKETS, hist)
        _histogram(infer, labels, LATENCY_BUCKETS, state.infer)
    return [requests, errors, dropped, rows, disagree, diff, infer]


def render_text(families: Iterable[Family], openmetrics: bool = False) -> bytes:
    """The Prometheus text format 0.0.4, or OpenMetrics 1.0 (``# EOF``-terminated).

    Written directly from the families: a scrape of thousands of samples costs a few
    milliseconds rather than the tens prometheus_client's generic encoder spends.
    """
    out: list[str] = []
    append = out.append
    for f in families:
        if not f.samples:  # nothing to say (no batcher, no shadow, no profile…)
            continue
        name = f.name + ("_total" if f.kind == "counter" and not openmetrics else "")
        append(f"# HELP {name} {_escape_help(f.help)}\n# TYPE {name} {f.kind}\n")
        keys = f.labels
        if not keys:
            for suffix, _, value in f.samples:
                append(f"{f.name}{suffix} {_number(value)}\n")
            continue
        # Samples share their leading labels (model, version, feature): render those once.
        heads: dict[tuple[bool, tuple[str, ...]], str] = {}
        for suffix, values, value in f.samples:
            bucket = suffix == "_bucket"
            names = (*keys, "le") if bucket else keys
            head_key = (bucket, values[:-1])
            head = heads.get(head_key)
            if head is None:
                head = "".join(
                    f'{k}="{_escape(v)}",' for k, v in zip(names[:-1], values[:-1], strict=True)
                )
                heads[head_key] = head
            append(
                f'{f.name}{suffix}{{{head}{names[-1]}="{_escape(values[-1])}"}} {_number(value)}\n'
            )
    if openmetrics:
        append("# EOF\n")
    return "".join(out).encode()


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if type(value) is int:
        return str(value)
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def to_metrics(families: Iterable[Family]) -> Iterator[Metric]:
    """The same families as prometheus_client metrics, for a ``CollectorRegistry``."""
    for f in families:
        if not f.samples:
            continue
        metric = Metric(f.name, f.help, f.kind)
        for suffix, values, value in f.samples:
            names = (*f.labels, "le") if suffix == "_bucket" else f.labels
            metric.add_sample(f.name + suffix, dict(zip(names, values, strict=True)), value)
        yield metric
