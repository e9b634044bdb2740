"""The metric catalogue: every family ``/metrics`` exposes, in one table.

Each ``Metric`` is a family's name (counters without ``_total``, as OpenMetrics names them),
type, labels, the HELP text it is exposed with and the meaning docs/metrics.md gives it. The
exposition builds every family from here (``family``: a name not in the table cannot be
exposed), the tests read it, and ``python -m mlserve.monitoring.catalogue`` writes the table
of docs/metrics.md between its markers (``--check``: exit 1 when the page is out of date).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Metric:
    """One metric family as exposed and documented."""

    name: str  # counters without the _total suffix
    kind: str  # "counter" | "gauge" | "histogram"
    labels: tuple[str, ...]
    help: str  # the HELP line
    doc: str  # the meaning, for docs/metrics.md

    @property
    def exposed(self) -> str:
        """The name in the text format (counters with ``_total``)."""
        return self.name + "_total" if self.kind == "counter" else self.name

    @property
    def series(self) -> tuple[str, ...]:
        """The names of its series (a histogram's ``_bucket``, ``_sum``, ``_count``)."""
        if self.kind == "histogram":
            return tuple(self.name + s for s in ("_bucket", "_sum", "_count"))
        return (self.exposed,)

    @property
    def unit(self) -> str:
        """The base unit its name ends with ("" for counts and ratios)."""
        for unit in ("seconds", "bytes"):
            if self.name.endswith("_" + unit):
                return unit
        return ""


CATALOGUE: tuple[Metric, ...] = (
    Metric(
        "mlserve_requests",
        "counter",
        ("model", "version", "role", "outcome"),
        "Inference requests by outcome (success, invalid, rejected, error).",
        "outcome ∈ success, invalid (400), rejected (503/504), error (500), refused (409 "
        "`gate_not_passed`: the version may not serve under `require_gate`; unpinned requests "
        "count against the highest ready version)",
    ),
    Metric(
        "mlserve_request_duration_seconds",
        "histogram",
        ("model", "version", "role"),
        "Time from receiving the request to the answer, successful requests.",
        "receipt to answer, successful requests",
    ),
    Metric(
        "mlserve_queue_duration_seconds",
        "histogram",
        ("model", "version", "role"),
        "Time waiting for a batch or an inference thread.",
        "waiting for a batch or a thread",
    ),
    Metric(
        "mlserve_inference_duration_seconds",
        "histogram",
        ("model", "version", "role"),
        "Time in the onnxruntime session run (the whole batch when batched).",
        "the session run (the whole batch when batched)",
    ),
    Metric(
        "mlserve_inference_rows",
        "counter",
        ("model", "version", "role"),
        "Rows inferred (batch dimension) in successful requests.",
        "rows inferred",
    ),
    Metric(
        "mlserve_batch_size",
        "histogram",
        ("model", "version"),
        "Rows per dynamic batch run.",
        "rows per dynamic batch",
    ),
    Metric(
        "mlserve_pending_requests",
        "gauge",
        ("model", "version"),
        "Requests queued or running on threads for this version.",
        "queued or running on threads",
    ),
    Metric(
        "mlserve_model_ready",
        "gauge",
        ("model", "version"),
        "1 when the version is loaded and serving.",
        "1 when loaded and ready",
    ),
    Metric(
        "mlserve_model_servable",
        "gauge",
        ("model", "version"),
        "1 when the version may take unpinned traffic (ready, and passing its gate where "
        "require_gate is set).",
        "1 when the version may take unpinned traffic (ready, and passing its gate where "
        "`require_gate` is set); a model whose versions are all 0 serves nothing unpinned "
        "(`MlserveNoServableVersion`)",
    ),
    Metric(
        "mlserve_model_gate_passed",
        "gauge",
        ("model", "version"),
        "1 when the version's validation.json passes its [gate], 0 when it fails or is stale "
        "(absent: never validated).",
        "1 when the version's `validation.json` passes its `[gate]`, 0 when it fails (or was "
        "made for another model file or `[gate]`); absent when never validated",
    ),
    Metric(
        "mlserve_model_load_seconds",
        "gauge",
        ("model", "version"),
        "How long the version took to load and warm up.",
        "load and warm-up time",
    ),
    Metric(
        "mlserve_model_load_failures",
        "counter",
        ("model",),
        "Failed attempts to load a version (each new or changed version directory counts once).",
        "failed attempts to load a version since start (a new or changed version directory that "
        "fails counts once; the same on every worker, merged by maximum)",
    ),
    Metric(
        "mlserve_model_versions_failed",
        "gauge",
        ("model",),
        "Versions of the model that failed to load and serve nothing now.",
        "versions of the model that failed to load and serve nothing now (a failed reload keeps "
        "the old files serving and is not counted here)",
    ),
    Metric(
        "mlserve_input_rejected",
        "counter",
        ("model", "version", "reason"),
        "Requests refused as invalid, by reason.",
        "invalid requests by reason (shape, datatype, size (incl. 413), rows, nan, data, name, "
        "json, binary, runtime, http)",
    ),
    Metric(
        "mlserve_feature_drift",
        "gauge",
        ("model", "version", "feature", "statistic"),
        "Drift of a feature (or model output) over the current window, by statistic: psi, js, "
        "ks, chi2, psi_threshold, psi_critical, rank_z, auc, window_rows, alert (1 when the rule"
        " fires: significant and large).",
        "psi, js, ks, chi2, psi_threshold, psi_critical, rank_z, auc, window_rows, alert over "
        "the current window",
    ),
    Metric(
        "mlserve_drift_alert",
        "gauge",
        ("model", "version", "section"),
        "1 when any feature of the section alerts (section: inputs or an output name).",
        "1 when any feature of the section alerts",
    ),
    Metric(
        "mlserve_feature_window_bin",
        "gauge",
        ("model", "version", "feature", "bin"),
        "Values in each reference bin over the current drift window (bin: index, or 'missing'): "
        "sum by across replicas for the fleet's window, exactly.",
        "values per reference bin in the current window (sum over replicas: the fleet's window, "
        "exactly)",
    ),
    Metric(
        "mlserve_feature_reference_bin",
        "gauge",
        ("model", "version", "feature", "bin"),
        "The reference profile's count in each bin.",
        "the reference profile's count in the bin",
    ),
    Metric(
        "mlserve_feature_reference_midrank",
        "gauge",
        ("model", "version", "feature", "bin"),
        "Numeric features: reference values below the bin plus half of the bin's (the rank "
        "test's U is the sum of window counts times these).",
        "numeric features: reference values below the bin plus half the bin's (the rank test's U"
        " = Σ window count × midrank)",
    ),
    Metric(
        "mlserve_drift_rule",
        "gauge",
        ("model", "version", "parameter"),
        "The version's drift alert rule: alpha_per_test, z_critical, psi_floor, auc_floor, "
        "min_window, max_window_rows (0: no cap).",
        "the version's alert rule: alpha_per_test, z_critical, psi_floor, auc_floor, min_window,"
        " max_window_rows",
    ),
    Metric(
        "mlserve_segment_drift_alert",
        "gauge",
        ("model", "version", "segment"),
        "1 when any input feature of the segment alerts ([monitoring] segment_by).",
        "1 when any input feature of the segment alerts (`segment_by`)",
    ),
    Metric(
        "mlserve_segment_feature_drift",
        "gauge",
        ("model", "version", "segment", "feature", "statistic"),
        "Drift of an input feature within one segment over the current window, by statistic: "
        "psi, psi_threshold, auc, window_rows, alert.",
        "psi, psi_threshold, auc, window_rows, alert within the segment",
    ),
    Metric(
        "mlserve_feature_bin",
        "counter",
        ("model", "version", "feature", "bin"),
        "Values counted into each reference bin since start (bin: index, or 'missing'); sum by "
        "across replicas for fleet-wide drift.",
        "values per reference bin since start (`bin`: index or `missing`)",
    ),
    Metric(
        "mlserve_feature_reference_ratio",
        "gauge",
        ("model", "version", "feature", "bin"),
        "The reference profile's proportion in each bin.",
        "the reference proportion of the bin",
    ),
    Metric(
        "mlserve_feature_missing",
        "counter",
        ("model", "version", "feature"),
        "Missing (NaN) values seen.",
        "NaN values",
    ),
    Metric(
        "mlserve_feature_out_of_range",
        "counter",
        ("model", "version", "feature"),
        "Values outside the reference [min, max] seen.",
        "values outside the reference [min, max]",
    ),
    Metric(
        "mlserve_prediction_class",
        "counter",
        ("model", "version", "output", "class"),
        "Predicted classes of categorical outputs.",
        "predicted classes (`other`: not a reference class)",
    ),
    Metric(
        "mlserve_workers",
        "gauge",
        (),
        "Live worker processes whose state this scrape summed.",
        "live workers whose state the scrape summed",
    ),
    Metric(
        "mlserve_overload_rejections",
        "counter",
        (),
        "Requests refused with 503 overloaded because the event loop ran late.",
        "infer/explain requests refused by load shedding (also in `mlserve_requests_total` as "
        "`rejected` where the version resolved)",
    ),
    Metric(
        "mlserve_event_loop_delay_seconds",
        "gauge",
        (),
        "How late the event loop ran at its last check (the most of any worker).",
        "how late the event loop ran at its last 10 ms check (the most of any worker)",
    ),
    Metric(
        "mlserve_registry_scan_failures",
        "counter",
        (),
        "Registry scans that could not read the registry directory (what loaded keeps serving).",
        "registry scans that could not read the registry directory; what loaded keeps serving",
    ),
    Metric(
        "mlserve_shadow_requests",
        "counter",
        ("model", "version"),
        "Mirrored requests run on a shadow version.",
        "mirrored copies run on the shadow",
    ),
    Metric(
        "mlserve_shadow_errors",
        "counter",
        ("model", "version"),
        "Mirrored requests the shadow failed (never surfaced).",
        "mirrored copies the shadow failed (never surfaced)",
    ),
    Metric(
        "mlserve_shadow_dropped",
        "counter",
        ("model", "version"),
        "Mirrored requests dropped because the shadow queue was full.",
        "mirrored copies dropped (the shadow queue was full)",
    ),
    Metric(
        "mlserve_shadow_rows",
        "counter",
        ("model", "version", "output"),
        "Rows compared between the shadow and the primary, by output.",
        "rows compared with the primary",
    ),
    Metric(
        "mlserve_shadow_disagreement",
        "counter",
        ("model", "version", "output"),
        "Rows whose predicted class differs from the primary's.",
        "rows whose predicted class differs from the primary's",
    ),
    Metric(
        "mlserve_shadow_abs_diff",
        "histogram",
        ("model", "version", "output"),
        "Absolute difference of each score from the primary's.",
        "absolute difference of each score from the primary's",
    ),
    Metric(
        "mlserve_shadow_inference_duration_seconds",
        "histogram",
        ("model", "version"),
        "The shadow's session run time, beside the primary's.",
        "the shadow's run time",
    ),
    Metric(
        "mlserve_canary_weight",
        "gauge",
        ("model",),
        "Percent of unpinned traffic the model's canary takes.",
        "percent of unpinned traffic on the canary",
    ),
    Metric(
        "mlserve_guardrail_actions",
        "counter",
        ("model", "action"),
        "Guardrail decisions carried out (rollback, step, promote).",
        "rollback, step, promote carried out by the guardrails",
    ),
    Metric(
        "mlserve_explain_requests",
        "counter",
        ("model", "version", "outcome"),
        "Explain requests by outcome (not counted as inference requests).",
        "explain requests (not counted in `mlserve_requests_total`)",
    ),
    Metric(
        "mlserve_payloads_logged",
        "counter",
        ("model",),
        "Request records written to the payload log.",
        "records written to the payload log",
    ),
    Metric(
        "mlserve_payloads_dropped",
        "counter",
        ("model", "reason"),
        "Sampled request records not written: queue (the queue was full), error (could not be "
        "serialised or written).",
        "sampled records not written: `queue` (the queue was full), `error` (could not be "
        "serialised or written)",
    ),
    Metric(
        "mlserve_payloads_bytes",
        "counter",
        ("model",),
        "Bytes written to the payload log.",
        "bytes written to the payload log",
    ),
    Metric(
        "process_cpu_seconds",
        "counter",
        (),
        "User and system CPU time of the worker processes.",
        "user and system CPU time, summed over the workers (an exited worker's CPU stays counted)",
    ),
    Metric(
        "process_resident_memory_bytes",
        "gauge",
        (),
        "Resident memory, summed.",
        "resident memory of the live workers, summed",
    ),
    Metric(
        "process_virtual_memory_bytes",
        "gauge",
        (),
        "Virtual memory, summed.",
        "virtual memory of the live workers, summed",
    ),
    Metric(
        "process_open_fds",
        "gauge",
        (),
        "Open file descriptors, summed over the workers.",
        "open file descriptors of the live workers, summed",
    ),
    Metric(
        "process_max_fds",
        "gauge",
        (),
        "The open file descriptor limit of a worker.",
        "one worker's open file descriptor limit",
    ),
    Metric(
        "process_start_time_seconds",
        "gauge",
        (),
        "Start of the most recently started worker, seconds since the epoch.",
        "start of the most recently started worker (it moves when a worker restarts), seconds "
        "since the epoch",
    ),
    Metric(
        "python_gc_objects_collected",
        "counter",
        ("generation",),
        "Objects collected by the GC.",
        "objects collected by the GC, by generation",
    ),
    Metric(
        "python_gc_objects_uncollectable",
        "counter",
        ("generation",),
        "Uncollectable objects found.",
        "uncollectable objects found by the GC, by generation",
    ),
    Metric(
        "python_gc_collections",
        "counter",
        ("generation",),
        "Times each generation was collected.",
        "collections of each GC generation",
    ),
    Metric(
        "python_info",
        "gauge",
        ("implementation", "major", "minor", "patchlevel", "version"),
        "Python platform information.",
        "the Python platform (always 1)",
    ),
)

METRICS: dict[str, Metric] = {m.name: m for m in CATALOGUE}
assert len(METRICS) == len(CATALOGUE), "a metric is listed twice"

BEGIN = "<!-- generated: metric catalogue (python -m mlserve.monitoring.catalogue) -->"
END = "<!-- end of generated metric catalogue -->"
DOC = Path("docs") / "metrics.md"


def markdown_table() -> str:
    """The catalogue as docs/metrics.md's table."""
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for m in CATALOGUE:
        lines.append(f"| `{m.exposed}` | {m.kind} | {', '.join(m.labels)} | {m.doc} |")
    return "\n".join(lines) + "\n"


def render_page(page: str) -> str:
    """``page`` with the text between the markers replaced by the catalogue's table."""
    head, found, rest = page.partition(BEGIN + "\n")
    _, found_end, tail = rest.partition(END)
    if not found or not found_end:
        raise ValueError(f"the page lacks the markers {BEGIN!r} … {END!r}")
    return f"{head}{BEGIN}\n{markdown_table()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite docs/metrics.md's table (run from the repository root); ``--check``: only
    say whether it is up to date."""
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    paths = [a for a in args if a != "--check"]
    path = Path(paths[0]) if paths else DOC
    page = path.read_text(encoding="utf-8")
    wanted = render_page(page)
    if page == wanted:
        return 0
    if check:
        print(f"{path} is out of date: run python -m mlserve.monitoring.catalogue", file=sys.stderr)
        return 1
    path.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
