"""Request metrics kept cheaply on the request path, and their Prometheus exposition.

The request path only increments plain Python counters and fixed-bucket histograms
(``RequestStats``: a few list updates and a ``bisect`` per request, no locks: each
worker's event loop is the only writer). A scrape turns a *snapshot* of that state into
Prometheus families. Snapshots are plain data that merge by addition, so with several
worker processes each worker publishes its snapshot to a shared directory and whichever
worker answers ``/metrics`` sums them all (``merge_snapshots``).

Families (all ``mlserve_``-prefixed, base units, histograms never summaries) are listed in
the README; labels are ``model``, ``version`` and, for traffic, ``role``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

OUTCOMES = ("success", "invalid", "rejected", "error")
SUCCESS, INVALID, REJECTED, ERROR = range(4)

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

    def state(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": self.sum}


class RequestStats:
    """One loaded version in one traffic role: outcomes, latencies, rows."""

    __slots__ = ("duration", "inference", "outcomes", "queue", "rows")

    def __init__(self) -> None:
        self.outcomes = [0, 0, 0, 0]
        self.duration = Histogram(LATENCY_BUCKETS)
        self.queue = Histogram(LATENCY_BUCKETS)
        self.inference = Histogram(LATENCY_BUCKETS)
        self.rows = 0

    def success(self, total_s: float, queue_s: float, infer_s: float, rows: int) -> None:
        self.outcomes[0] += 1
        self.duration.observe(total_s)
        self.queue.observe(queue_s)
        self.inference.observe(infer_s)
        self.rows += rows

    def failure(self, outcome: int) -> None:
        self.outcomes[outcome] += 1

    def state(self) -> dict[str, Any]:
        return {
            "outcomes": list(self.outcomes),
            "duration": self.duration.state(),
            "queue": self.queue.state(),
            "inference": self.inference.state(),
            "rows": self.rows,
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


# Per-worker copies of the same facts (labels, the reference profile): never added.
_CONSTANT_KEYS = frozenset({"names", "levels", "reference_ratio"})


def _add_into(target: dict[str, Any], source: Mapping[str, Any], gauge: bool = False) -> None:
    for key, value in source.items():
        if key not in target or key in _CONSTANT_KEYS:
            target[key] = _copy(value)
        elif isinstance(value, Mapping):
            _add_into(target[key], value, gauge or key == "gauges")
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
# exposition


def families(snapshot: Mapping[str, Any], reports: Mapping[str, Any]) -> Iterator[Metric]:
    """Prometheus families for a merged snapshot and the drift reports computed from it.

    ``snapshot["endpoints"]``: ``"model/version"`` → ``{"roles": {role: RequestStats.state()},
    "batch": histogram state, "pending": int, "monitor": monitor state}``;
    ``snapshot["gauges"]``: ``"model/version"`` → ``{"ready": 0|1, "load_seconds": s}``;
    ``snapshot["load_failures"]``: model → count; ``snapshot["rejected"]``:
    ``"model/version/reason"`` → count. ``reports``: ``"model/version"`` → monitor report.
    """
    endpoints: Mapping[str, Any] = snapshot.get("endpoints", {})
    requests = CounterMetricFamily(
        "mlserve_requests",
        "Inference requests by outcome (success, invalid, rejected, error).",
        labels=["model", "version", "role", "outcome"],
    )
    rows = CounterMetricFamily(
        "mlserve_inference_rows",
        "Rows inferred (batch dimension) in successful requests.",
        labels=["model", "version", "role"],
    )
    hist = {
        "duration": HistogramMetricFamily(
            "mlserve_request_duration_seconds",
            "Time from receiving the request to the answer, successful requests.",
            labels=["model", "version", "role"],
        ),
        "queue": HistogramMetricFamily(
            "mlserve_queue_duration_seconds",
            "Time waiting for a batch or an inference thread.",
            labels=["model", "version", "role"],
        ),
        "inference": HistogramMetricFamily(
            "mlserve_inference_duration_seconds",
            "Time in the onnxruntime session run (the whole batch when batched).",
            labels=["model", "version", "role"],
        ),
    }
    batch = HistogramMetricFamily(
        "mlserve_batch_size", "Rows per dynamic batch run.", labels=["model", "version"]
    )
    pending = GaugeMetricFamily(
        "mlserve_pending_requests",
        "Requests queued or running on threads for this version.",
        labels=["model", "version"],
    )
    for key in sorted(endpoints):
        model, version = key.split("/", 1)
        entry = endpoints[key]
        for role in sorted(entry.get("roles", {})):
            state = entry["roles"][role]
            labels = [model, version, role]
            for outcome, count in zip(OUTCOMES, state["outcomes"], strict=True):
                requests.add_metric([*labels, outcome], count)
            rows.add_metric(labels, state["rows"])
            for name, family in hist.items():
                family.add_metric(
                    labels, _buckets(LATENCY_BUCKETS, state[name]["counts"]), state[name]["sum"]
                )
        if "batch" in entry:
            batch.add_metric(
                [model, version],
                _buckets(BATCH_BUCKETS, entry["batch"]["counts"]),
                entry["batch"]["sum"],
            )
        pending.add_metric([model, version], entry.get("pending", 0))
    workers = GaugeMetricFamily(
        "mlserve_workers", "Live worker processes whose state this scrape summed."
    )
    workers.add_metric([], snapshot.get("workers", 1))
    yield workers
    yield requests
    yield rows
    yield from hist.values()
    yield batch
    yield pending
    yield from _model_families(snapshot)
    yield from _monitor_families(endpoints, reports)


def _model_families(snapshot: Mapping[str, Any]) -> Iterator[Metric]:
    ready = GaugeMetricFamily(
        "mlserve_model_ready",
        "1 when the version is loaded and serving.",
        labels=["model", "version"],
    )
    load = GaugeMetricFamily(
        "mlserve_model_load_seconds",
        "How long the version took to load and warm up.",
        labels=["model", "version"],
    )
    for key, gauge in sorted(snapshot.get("gauges", {}).items()):
        model, version = key.split("/", 1)
        ready.add_metric([model, version], gauge.get("ready", 0))
        if gauge.get("load_seconds") is not None:
            load.add_metric([model, version], gauge["load_seconds"])
    failures = CounterMetricFamily(
        "mlserve_model_load_failures", "Versions that failed to load.", labels=["model"]
    )
    for model, count in sorted(snapshot.get("load_failures", {}).items()):
        failures.add_metric([model], count)
    rejected = CounterMetricFamily(
        "mlserve_input_rejected",
        "Requests refused as invalid, by reason.",
        labels=["model", "version", "reason"],
    )
    for key, count in sorted(snapshot.get("rejected", {}).items()):
        model, version, reason = key.split("/", 2)
        rejected.add_metric([model, version, reason], count)
    yield ready
    yield load
    yield failures
    yield rejected


def _monitor_families(endpoints: Mapping[str, Any], reports: Mapping[str, Any]) -> Iterator[Metric]:
    fl = ["model", "version", "feature"]
    drift = GaugeMetricFamily(
        "mlserve_feature_drift",
        "Drift of a feature (or model output) over the current window, by statistic: psi, js, "
        "ks, chi2, psi_threshold, window_rows, alert (1 when the calibrated rule fires).",
        labels=[*fl, "statistic"],
    )
    bins = CounterMetricFamily(
        "mlserve_feature_bin",
        "Values counted into each reference bin since start "
        "(bin: index, or 'missing'); sum by across replicas for fleet-wide drift.",
        labels=[*fl, "bin"],
    )
    ratio = GaugeMetricFamily(
        "mlserve_feature_reference_ratio",
        "The reference profile's proportion in each bin.",
        labels=[*fl, "bin"],
    )
    missing = CounterMetricFamily(
        "mlserve_feature_missing", "Missing (NaN) values seen.", labels=fl
    )
    out_of_range = CounterMetricFamily(
        "mlserve_feature_out_of_range",
        "Values outside the reference [min, max] seen.",
        labels=fl,
    )
    classes = CounterMetricFamily(
        "mlserve_prediction_class",
        "Predicted classes of categorical outputs.",
        labels=["model", "version", "output", "class"],
    )
    alert = GaugeMetricFamily(
        "mlserve_drift_alert",
        "1 when any feature of the section alerts (section: inputs or an output name).",
        labels=["model", "version", "section"],
    )
    for key in sorted(endpoints):
        mon = endpoints[key].get("monitor")
        if not mon:
            continue
        model, version = key.split("/", 1)
        for state in mon["sections"].values():
            names = state["names"]
            for i, name in enumerate(names):
                labels = [model, version, name]
                counts = state["total"][i]
                for b, value in enumerate(counts):
                    label = "missing" if b == len(counts) - 1 else str(b)
                    bins.add_metric([*labels, label], value)
                    ref = state["reference_ratio"][i][b]
                    ratio.add_metric([*labels, label], ref)
                missing.add_metric(labels, counts[-1])
                out_of_range.add_metric(labels, state["out_of_range"][i])
            for name, cls in state.get("classes", {}).items():
                for level, count in zip([*cls["levels"], "other"], cls["counts"], strict=True):
                    classes.add_metric([model, version, name, str(level)], count)
        report = reports.get(key)
        if not report:
            continue
        for section, rep in report["sections"].items():
            alert.add_metric([model, version, section], 1 if rep["alert"] else 0)
            for feat in rep["features"]:
                labels = [model, version, feat["name"]]
                for stat in ("psi", "js", "ks", "chi2", "psi_threshold"):
                    value = feat.get(stat)
                    if value is not None:
                        drift.add_metric([*labels, stat], _finite(value))
                drift.add_metric([*labels, "window_rows"], feat["window_count"])
                drift.add_metric([*labels, "alert"], 1 if feat["alert"] else 0)
    yield from (drift, bins, ratio, missing, out_of_range, classes, alert)


def _buckets(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*bounds, math.inf), counts, strict=True):
        total += count
        out.append(("+Inf" if bound == math.inf else _le(bound), total))
    return out


def _le(bound: float) -> str:
    return repr(float(bound))


def _finite(value: float) -> float:
    return value if math.isfinite(value) else (math.inf if value > 0 else math.nan)
