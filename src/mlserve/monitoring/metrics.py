"""Request metrics kept cheaply on the request path, and their Prometheus exposition.

The request path only increments plain Python counters and fixed-bucket histograms
(``RequestStats``: a few list updates and a ``bisect`` per request, no locks: each
worker's event loop is the only writer). A scrape turns a *snapshot* of that state into
Prometheus families. Snapshots are plain data that merge by addition, so with several
worker processes each worker publishes its snapshot to a shared directory and whichever
worker answers ``/metrics`` sums them all (``merge_snapshots``).

Families (all ``mlserve_``-prefixed, base units, histograms never summaries) are listed in
docs/metrics.md; labels are ``model``, ``version`` and, for traffic, ``role``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from os import getpid
from time import time
from typing import Any

import numpy as np
from prometheus_client.core import Metric

OUTCOMES = ("success", "invalid", "rejected", "error", "refused")
# refused: the version may not serve (its validation gate, require_gate = true).
SUCCESS, INVALID, REJECTED, ERROR, REFUSED = range(5)

# Seconds: from tens of microseconds (an inline model) to seconds (a slow model or a queue).
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)


class Histogram:
    """Cumulative-on-export histogram: per-bucket counts (last: +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # Prometheus buckets are "≤ le": the first bound ≥ value.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def observe_many(self, values: Any) -> None:
        """Observe every value of a 1-D numpy array at once."""
        if len(values):
            idx = np.searchsorted(self.bounds, values, side="left")
            for i, n in enumerate(np.bincount(idx, minlength=len(self.counts)).tolist()):
                self.counts[i] += n
            self.sum += float(values.sum())

    def state(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": self.sum}


class RequestStats:
    """One loaded version in one traffic role: outcomes, latencies, rows."""

    __slots__ = ("duration", "inference", "last", "outcomes", "queue", "rows")

    def __init__(self) -> None:
        self.outcomes = [0] * len(OUTCOMES)
        self.duration = Histogram(LATENCY_BUCKETS)
        self.queue = Histogram(LATENCY_BUCKETS)
        self.inference = Histogram(LATENCY_BUCKETS)
        self.rows = 0
        self.last = 0.0  # wall-clock time of the last success (Triton's last_inference)

    def success(self, total_s: float, queue_s: float, infer_s: float, rows: int) -> None:
        # Histogram.observe three times, written out: one call a request instead of four.
        self.outcomes[0] += 1
        h = self.duration
        h.counts[bisect_left(h.bounds, total_s)] += 1
        h.sum += total_s
        h = self.queue
        h.counts[bisect_left(h.bounds, queue_s)] += 1
        h.sum += queue_s
        h = self.inference
        h.counts[bisect_left(h.bounds, infer_s)] += 1
        h.sum += infer_s
        self.rows += rows
        self.last = time()

    def failure(self, outcome: int) -> None:
        self.outcomes[outcome] += 1

    def state(self) -> dict[str, Any]:
        return {
            "outcomes": list(self.outcomes),
            "duration": self.duration.state(),
            "queue": self.queue.state(),
            "inference": self.inference.state(),
            "rows": self.rows,
            # Keyed by worker: a merge keeps each worker's own, never a sum of times.
            "last": {str(getpid()): self.last},
        }


# ---------------------------------------------------------------------------------------------
# snapshots: plain, JSON-ready data that merges by addition


def merge_snapshots(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum snapshots element-wise: numbers add, lists add position by position, dicts by key.

    Gauges that must not add (a version's readiness, its load time) are kept under
    ``"gauges"`` and merged by maximum.
    """
    merged: dict[str, Any] = {}
    for snap in snapshots:
        _add_into(merged, snap)
    return merged


# Every worker loads the same registry: these are merged by maximum, not added.
_MAX_KEYS = frozenset(
    {"gauges", "load_failures", "failed_versions", "loop", "registry", "process_max"}
)
# Per-worker copies of the same facts (labels, the reference profile): never added.
_CONSTANT_KEYS = frozenset(
    {"names", "levels", "reference_ratio", "reference", "reference_midrank", "canary_weight"}
)


def _add_into(target: dict[str, Any], source: Mapping[str, Any], gauge: bool = False) -> None:
    for key, value in source.items():
        if key not in target or key in _CONSTANT_KEYS:
            target[key] = _copy(value)
        elif isinstance(value, Mapping):
            _add_into(target[key], value, gauge or key in _MAX_KEYS)
        elif isinstance(value, list):
            target[key] = _add_lists(target[key], value, gauge)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            target[key] = max(target[key], value) if gauge else target[key] + value
        else:
            target[key] = value


def _add_lists(current: list[Any], value: list[Any], gauge: bool) -> list[Any]:
    if len(current) != len(value):  # a shape changed between workers: keep the newer
        return list(value)
    out: list[Any] = []
    a: Any
    b: Any
    for a, b in zip(current, value, strict=True):
        if isinstance(b, list) and isinstance(a, list):
            out.append(_add_lists(a, b, gauge))
        elif isinstance(b, (int, float)) and not isinstance(b, bool):
            out.append(max(a, b) if gauge else a + b)
        else:  # labels (feature names, class levels): equal across workers
            out.append(b)
    return out


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return list(value)
    return value


# ---------------------------------------------------------------------------------------------
# exposition: snapshot → families (plain tuples) → text, or → prometheus_client metrics


@dataclass
class Family:
    """One metric family as plain data: cheap to build, cheap to render."""

    name: str  # counters without the _total suffix, as OpenMetrics names them
    kind: str  # "counter" | "gauge" | "histogram"
    help: str
    labels: tuple[str, ...]
    # (name suffix, label values (plus "le" for buckets), value)
    samples: list[tuple[str, tuple[str, ...], float]] = field(default_factory=list)


def collect_families(snapshot: Mapping[str, Any], reports: Mapping[str, Any]) -> list[Family]:
    """Families for a merged snapshot and the drift reports computed from it.

    ``snapshot["endpoints"]``: ``"model/version"`` → ``{"roles": {role: RequestStats.state()},
    "batch": histogram state, "pending": int, "monitor": monitor state}``;
    ``snapshot["gauges"]``: ``"model/version"`` → ``{"ready": 0|1, "load_seconds": s}``;
    ``snapshot["load_failures"]``: model → count; ``snapshot["rejected"]``:
    ``"model/version/reason"`` → count. ``reports``: ``"model/version"`` → monitor report.
    """
    mv = ("model", "version")
    mvr = ("model", "version", "role")
    workers = Family(
        "mlserve_workers", "gauge", "Live worker processes whose state this scrape summed.", ()
    )
    workers.samples.append(("", (), snapshot.get("workers", 1)))
    requests = Family(
        "mlserve_requests",
        "counter",
        "Inference requests by outcome (success, invalid, rejected, error).",
        (*mvr, "outcome"),
    )
    rows = Family(
        "mlserve_inference_rows",
        "counter",
        "Rows inferred (batch dimension) in successful requests.",
        mvr,
    )
    hist = {
        "duration": Family(
            "mlserve_request_duration_seconds",
            "histogram",
            "Time from receiving the request to the answer, successful requests.",
            mvr,
        ),
        "queue": Family(
            "mlserve_queue_duration_seconds",
            "histogram",
            "Time waiting for a batch or an inference thread.",
            mvr,
        ),
        "inference": Family(
            "mlserve_inference_duration_seconds",
            "histogram",
            "Time in the onnxruntime session run (the whole batch when batched).",
            mvr,
        ),
    }
    batch = Family("mlserve_batch_size", "histogram", "Rows per dynamic batch run.", mv)
    pending = Family(
        "mlserve_pending_requests",
        "gauge",
        "Requests queued or running on threads for this version.",
        mv,
    )
    endpoints: Mapping[str, Any] = snapshot.get("endpoints", {})
    for key in sorted(endpoints):
        model, version = key.split("/", 1)
        entry = endpoints[key]
        roles = entry.get("roles", {})
        for role in sorted({*roles, *_ZERO_ROLES}):
            labels = (model, version, role)
            state = roles.get(role)
            if state is None:  # counters exist from load, so rate() sees the first requests
                for outcome in OUTCOMES:
                    requests.samples.append(("_total", (*labels, outcome), 0))
                rows.samples.append(("_total", labels, 0))
                continue
            for outcome, count in zip(OUTCOMES, state["outcomes"], strict=True):
                requests.samples.append(("_total", (*labels, outcome), count))
            rows.samples.append(("_total", labels, state["rows"]))
            for name, family in hist.items():
                _histogram(family, labels, LATENCY_BUCKETS, state[name])
        if "batch" in entry:
            _histogram(batch, (model, version), BATCH_BUCKETS, entry["batch"])
        pending.samples.append(("", (model, version), entry.get("pending", 0)))
    return [workers, requests, rows, *hist.values(), batch, pending,
            *_model_families(snapshot), *_monitor_families(endpoints, reports),
            *_shadow_families(snapshot.get("shadows", {})),
            *_routing_families(snapshot), _explain_family(snapshot),
            *_overload_families(snapshot),
            *_payload_families(snapshot.get("payloads", {}))]  # fmt: skip


# Roles whose request counters are exported (at zero) from the moment a version loads.
_ZERO_ROLES = ("stable", "canary", "pinned")


def _histogram(
    family: Family, labels: tuple[str, ...], bounds: tuple[float, ...], state: Mapping[str, Any]
) -> None:
    total = 0
    for bound, count in zip((*bounds, math.inf), state["counts"], strict=True):
        total += count
        le = "+Inf" if bound == math.inf else repr(float(bound))
        family.samples.append(("_bucket", (*labels, le), total))
    family.samples.append(("_count", labels, total))
    family.samples.append(("_sum", labels, state["sum"]))


def _model_families(snapshot: Mapping[str, Any]) -> list[Family]:
    mv = ("model", "version")
    ready = Family("mlserve_model_ready", "gauge", "1 when the version is loaded and serving.", mv)
    load = Family(
        "mlserve_model_load_seconds", "gauge", "How long the version took to load and warm up.", mv
    )
    gate = Family(
        "mlserve_model_gate_passed",
        "gauge",
        "1 when the version's validation.json passes its [gate], 0 when it fails or is stale "
        "(absent: never validated).",
        mv,
    )
    servable = Family(
        "mlserve_model_servable",
        "gauge",
        "1 when the version may take unpinned traffic (ready, and passing its gate where "
        "require_gate is set).",
        mv,
    )
    for key, gauge in sorted(snapshot.get("gauges", {}).items()):
        labels = tuple(key.split("/", 1))
        ready.samples.append(("", labels, gauge.get("ready", 0)))
        servable.samples.append(("", labels, gauge.get("servable", 0)))
        if gauge.get("gate_passed") is not None:
            gate.samples.append(("", labels, gauge["gate_passed"]))
        if gauge.get("load_seconds") is not None:
            load.samples.append(("", labels, gauge["load_seconds"]))
    failures = Family(
        "mlserve_model_load_failures",
        "counter",
        "Failed attempts to load a version (each new or changed version directory counts once).",
        ("model",),
    )
    for model, count in sorted(snapshot.get("load_failures", {}).items()):
        failures.samples.append(("_total", (model,), count))
    failed = Family(
        "mlserve_model_versions_failed",
        "gauge",
        "Versions of the model that failed to load and serve nothing now.",
        ("model",),
    )
    for model, count in sorted(snapshot.get("failed_versions", {}).items()):
        failed.samples.append(("", (model,), count))
    rejected = Family(
        "mlserve_input_rejected",
        "counter",
        "Requests refused as invalid, by reason.",
        (*mv, "reason"),
    )
    for key, count in sorted(snapshot.get("rejected", {}).items()):
        rejected.samples.append(("_total", tuple(key.split("/", 2)), count))
    return [ready, servable, gate, load, failures, failed, rejected]


def _monitor_families(endpoints: Mapping[str, Any], reports: Mapping[str, Any]) -> list[Family]:
    fl = ("model", "version", "feature")
    drift = Family(
        "mlserve_feature_drift",
        "gauge",
        "Drift of a feature (or model output) over the current window, by statistic: "
        "psi, js, ks, chi2, psi_threshold, psi_critical, rank_z, auc, window_rows, alert (1 "
        "when the rule fires: significant and large).",
        (*fl, "statistic"),
    )
    bins = Family(
        "mlserve_feature_bin",
        "counter",
        "Values counted into each reference bin since start (bin: index, or "
        "'missing'); sum by across replicas for fleet-wide drift.",
        (*fl, "bin"),
    )
    ratio = Family(
        "mlserve_feature_reference_ratio",
        "gauge",
        "The reference profile's proportion in each bin.",
        (*fl, "bin"),
    )
    window_bins = Family(
        "mlserve_feature_window_bin",
        "gauge",
        "Values in each reference bin over the current drift window (bin: index, or "
        "'missing'): sum by across replicas for the fleet's window, exactly.",
        (*fl, "bin"),
    )
    reference_bins = Family(
        "mlserve_feature_reference_bin",
        "gauge",
        "The reference profile's count in each bin.",
        (*fl, "bin"),
    )
    midrank = Family(
        "mlserve_feature_reference_midrank",
        "gauge",
        "Numeric features: reference values below the bin plus half of the bin's (the rank "
        "test's U is the sum of window counts times these).",
        (*fl, "bin"),
    )
    rule = Family(
        "mlserve_drift_rule",
        "gauge",
        "The version's drift alert rule: alpha_per_test, z_critical, psi_floor, auc_floor, "
        "min_window, max_window_rows (0: no cap).",
        ("model", "version", "parameter"),
    )
    missing = Family("mlserve_feature_missing", "counter", "Missing (NaN) values seen.", fl)
    out_of_range = Family(
        "mlserve_feature_out_of_range",
        "counter",
        "Values outside the reference [min, max] seen.",
        fl,
    )
    classes = Family(
        "mlserve_prediction_class",
        "counter",
        "Predicted classes of categorical outputs.",
        ("model", "version", "output", "class"),
    )
    alert = Family("mlserve_drift_alert", "gauge",
                   "1 when any feature of the section alerts (section: inputs or an output "
                   "name).", ("model", "version", "section"))  # fmt: skip
    segment_alert = Family(
        "mlserve_segment_drift_alert",
        "gauge",
        "1 when any input feature of the segment alerts ([monitoring] segment_by).",
        ("model", "version", "segment"),
    )
    segment_drift = Family(
        "mlserve_segment_feature_drift",
        "gauge",
        "Drift of an input feature within one segment over the current window, by statistic: "
        "psi, psi_threshold, auc, window_rows, alert.",
        ("model", "version", "segment", "feature", "statistic"),
    )
    for key in sorted(endpoints):
        mon = endpoints[key].get("monitor")
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


def _routing_families(snapshot: Mapping[str, Any]) -> list[Family]:
    weight = Family(
        "mlserve_canary_weight",
        "gauge",
        "Percent of unpinned traffic the model's canary takes.",
        ("model",),
    )
    for model, w in sorted(snapshot.get("canary_weight", {}).items()):
        weight.samples.append(("", (model,), w))
    actions = Family(
        "mlserve_guardrail_actions",
        "counter",
        "Guardrail decisions carried out (rollback, step, promote).",
        ("model", "action"),
    )
    for key, count in sorted(snapshot.get("guardrail_actions", {}).items()):
        actions.samples.append(("_total", tuple(key.split("/", 1)), count))
    return [weight, actions]


def _overload_families(snapshot: Mapping[str, Any]) -> list[Family]:
    """Load shedding: requests refused while the event loop ran late, and how late it runs
    (the most of any worker)."""
    shed = Family(
        "mlserve_overload_rejections",
        "counter",
        "Requests refused with 503 overloaded because the event loop ran late.",
        (),
    )
    shed.samples.append(("_total", (), snapshot.get("overload_rejections", 0)))
    delay = Family(
        "mlserve_event_loop_delay_seconds",
        "gauge",
        "How late the event loop ran at its last check (the most of any worker).",
        (),
    )
    delay.samples.append(("", (), snapshot.get("loop", {}).get("delay_seconds", 0.0)))
    scans = Family(
        "mlserve_registry_scan_failures",
        "counter",
        "Registry scans that could not read the registry directory (what loaded keeps serving).",
        (),
    )
    scans.samples.append(("_total", (), snapshot.get("registry", {}).get("scan_failures", 0)))
    return [shed, delay, scans]


def _explain_family(snapshot: Mapping[str, Any]) -> Family:
    explain = Family(
        "mlserve_explain_requests",
        "counter",
        "Explain requests by outcome (not counted as inference requests).",
        ("model", "version", "outcome"),
    )
    for key, count in sorted(snapshot.get("explain_requests", {}).items()):
        explain.samples.append(("_total", tuple(key.split("/", 2)), count))
    return explain


def _payload_families(payloads: Mapping[str, Any]) -> list[Family]:
    """``payloads``: model → ``{"logged", "dropped", "errors", "bytes"}`` (PayloadCounts)."""
    logged = Family(
        "mlserve_payloads_logged",
        "counter",
        "Request records written to the payload log.",
        ("model",),
    )
    dropped = Family(
        "mlserve_payloads_dropped",
        "counter",
        "Sampled request records not written: queue (the queue was full), error (could not "
        "be serialised or written).",
        ("model", "reason"),
    )
    written = Family(
        "mlserve_payloads_bytes", "counter", "Bytes written to the payload log.", ("model",)
    )
    for model in sorted(payloads):
        state = payloads[model]
        logged.samples.append(("_total", (model,), state["logged"]))
        dropped.samples.append(("_total", (model, "queue"), state["dropped"]))
        dropped.samples.append(("_total", (model, "error"), state["errors"]))
        written.samples.append(("_total", (model,), state["bytes"]))
    return [logged, dropped, written]


# Absolute differences of shadow scores: from float rounding to wholly different.
SHADOW_DIFF_BUCKETS = (1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)


def _shadow_families(shadows: Mapping[str, Any]) -> list[Family]:
    mv = ("model", "version")
    requests = Family(
        "mlserve_shadow_requests", "counter", "Mirrored requests run on a shadow version.", mv
    )
    errors = Family(
        "mlserve_shadow_errors",
        "counter",
        "Mirrored requests the shadow failed (never surfaced).",
        mv,
    )
    dropped = Family(
        "mlserve_shadow_dropped",
        "counter",
        "Mirrored requests dropped because the shadow queue was full.",
        mv,
    )
    rows = Family(
        "mlserve_shadow_rows",
        "counter",
        "Rows compared between the shadow and the primary, by output.",
        (*mv, "output"),
    )
    disagree = Family(
        "mlserve_shadow_disagreement",
        "counter",
        "Rows whose predicted class differs from the primary's.",
        (*mv, "output"),
    )
    diff = Family(
        "mlserve_shadow_abs_diff",
        "histogram",
        "Absolute difference of each score from the primary's.",
        (*mv, "output"),
    )
    infer = Family(
        "mlserve_shadow_inference_duration_seconds",
        "histogram",
        "The shadow's session run time, beside the primary's.",
        mv,
    )
    for key in sorted(shadows):
        state = shadows[key]
        labels = tuple(key.split("/", 1))
        requests.samples.append(("_total", labels, state["requests"]))
        errors.samples.append(("_total", labels, state["errors"]))
        dropped.samples.append(("_total", labels, state["dropped"]))
        for output, count in sorted(state["rows"].items()):
            rows.samples.append(("_total", (*labels, output), count))
        for output, count in sorted(state["disagree"].items()):
            disagree.samples.append(("_total", (*labels, output), count))
        for output, hist in sorted(state["diff"].items()):
            _histogram(diff, (*labels, output), SHADOW_DIFF_BUCKETS, hist)
        _histogram(infer, labels, LATENCY_BUCKETS, state["infer"])
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


def quantile(counts: list[int], q: float) -> float | None:
    """The q-quantile of a latency histogram, interpolated linearly within its bucket."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for bound, count in zip((*LATENCY_BUCKETS, math.inf), counts, strict=True):
        if count and seen + count >= rank:
            if bound == math.inf:
                return lower
            return lower + (bound - lower) * (rank - seen) / count
        seen += count
        lower = bound
    return lower
