"""The typed worker snapshot: one worker's monitoring state, its merge and its JSON form.

``WorkerSnapshot`` holds what a scrape exports, in typed sections: request statistics per
version and role, version gauges, shadow comparisons, guardrail and explain counters,
payload counters, load shedding, the registry's scan failures and the process readings.
Components hand in their section through ``SnapshotSource``. Each field's merge rule over
workers is written once, in its class's ``add``: counters sum, gauges every worker shares
(readiness, load failures, loop delay) take the maximum, per-worker copies of one fact
(canary weights) take the last. A ``ModelMonitor``'s state stays the monitor's own plain
data, merged by ``merge_monitor_states``. ``to_json``/``from_json`` are the file workers
publish (orjson); reading tolerates keys that an older or partial writer left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import orjson

# ---------------------------------------------------------------------------------------------
# merge helpers: one rule each


def _add_counts(current: list[Any], other: list[Any]) -> list[Any]:
    """Position by position; a shape that changed between workers keeps the newer."""
    if len(current) != len(other):
        return list(other)
    return [a + b for a, b in zip(current, other, strict=True)]


def _add_map(target: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        target[key] = target.get(key, 0) + value


def _max_map(target: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        target[key] = max(target[key], value) if key in target else value


_N = TypeVar("_N", int, float)


def _max_opt(a: _N | None, b: _N | None) -> _N | None:
    return b if a is None else a if b is None else max(a, b)


def _sum_opt(a: _N | None, b: _N | None) -> _N | None:
    return b if a is None else a if b is None else a + b


def _ints(doc: Any) -> dict[str, int]:
    return {str(k): v for k, v in doc.items()} if isinstance(doc, Mapping) else {}


# ---------------------------------------------------------------------------------------------
# sections


@dataclass(slots=True)
class HistogramState:
    """Per-bucket counts (last: +Inf) and the sum of observations."""

    counts: list[int] = field(default_factory=list)
    sum: float = 0.0

    def add(self, other: HistogramState) -> None:
        self.counts = _add_counts(self.counts, other.counts)
        self.sum += other.sum

    def copy(self) -> HistogramState:
        return HistogramState(list(self.counts), self.sum)

    def to_json(self) -> dict[str, Any]:
        return {"counts": self.counts, "sum": self.sum}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> HistogramState:
        return cls(list(doc.get("counts", [])), doc.get("sum", 0.0))


@dataclass(slots=True)
class RoleStats:
    """One version in one traffic role: outcome counts (``OUTCOMES`` order), latencies,
    rows, and each worker's time of its last success (pid → unix time: never summed)."""

    outcomes: list[int] = field(default_factory=list)
    duration: HistogramState = field(default_factory=HistogramState)
    queue: HistogramState = field(default_factory=HistogramState)
    inference: HistogramState = field(default_factory=HistogramState)
    rows: int = 0
    last: dict[str, float] = field(default_factory=dict)

    def add(self, other: RoleStats) -> None:
        self.outcomes = _add_counts(self.outcomes, other.outcomes)
        self.duration.add(other.duration)
        self.queue.add(other.queue)
        self.inference.add(other.inference)
        self.rows += other.rows
        _add_map(self.last, other.last)

    def copy(self) -> RoleStats:
        return RoleStats(
            list(self.outcomes),
            self.duration.copy(),
            self.queue.copy(),
            self.inference.copy(),
            self.rows,
            dict(self.last),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "outcomes": self.outcomes,
            "duration": self.duration.to_json(),
            "queue": self.queue.to_json(),
            "inference": self.inference.to_json(),
            "rows": self.rows,
            "last": self.last,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RoleStats:
        return cls(
            list(doc.get("outcomes", [])),
            HistogramState.from_json(doc.get("duration", {})),
            HistogramState.from_json(doc.get("queue", {})),
            HistogramState.from_json(doc.get("inference", {})),
            doc.get("rows", 0),
            dict(doc.get("last", {})),
        )


@dataclass(slots=True)
class EndpointState:
    """One loaded version: its roles' statistics (those that saw a request), requests
    pending, the batcher's sizes (batching only) and the drift monitor's state."""

    roles: dict[str, RoleStats] = field(default_factory=dict)
    pending: int = 0
    batch: HistogramState | None = None
    monitor: dict[str, Any] | None = None  # ModelMonitor.state(): the monitor's own data

    def add(self, other: EndpointState) -> None:
        for role, stats in other.roles.items():
            mine = self.roles.get(role)
            if mine is None:
                self.roles[role] = stats.copy()
            else:
                mine.add(stats)
        self.pending += other.pending
        if other.batch is not None:
            if self.batch is None:
                self.batch = other.batch.copy()
            else:
                self.batch.add(other.batch)
        if other.monitor is not None:
            if self.monitor is None:
                self.monitor = _copy(other.monitor)
            else:
                _add_into(self.monitor, other.monitor)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "roles": {role: stats.to_json() for role, stats in self.roles.items()},
            "pending": self.pending,
        }
        if self.batch is not None:
            doc["batch"] = self.batch.to_json()
        if self.monitor is not None:
            doc["monitor"] = self.monitor
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> EndpointState:
        batch = doc.get("batch")
        return cls(
            {r: RoleStats.from_json(s) for r, s in doc.get("roles", {}).items()},
            doc.get("pending", 0),
            HistogramState.from_json(batch) if batch is not None else None,
            doc.get("monitor"),
        )


@dataclass(slots=True)
class VersionGauges:
    """A known version's state (every worker loads the same registry: merged by maximum)."""

    ready: int = 0
    servable: int = 0
    load_seconds: float | None = None
    gate_passed: int | None = None  # None: never validated

    def add(self, other: VersionGauges) -> None:
        self.ready = max(self.ready, other.ready)
        self.servable = max(self.servable, other.servable)
        self.load_seconds = _max_opt(self.load_seconds, other.load_seconds)
        self.gate_passed = _max_opt(self.gate_passed, other.gate_passed)

    def copy(self) -> VersionGauges:
        return VersionGauges(self.ready, self.servable, self.load_seconds, self.gate_passed)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "ready": self.ready,
            "load_seconds": self.load_seconds,
            "servable": self.servable,
        }
        if self.gate_passed is not None:
            doc["gate_passed"] = self.gate_passed
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> VersionGauges:
        return cls(
            doc.get("ready", 0),
            doc.get("servable", 0),
            doc.get("load_seconds"),
            doc.get("gate_passed"),
        )


@dataclass(slots=True)
class ShadowState:
    """What one shadow version has shown against the primary (``routing/shadow.py``)."""

    requests: int = 0
    errors: int = 0
    dropped: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # rows compared, by output
    disagree: dict[str, int] = field(default_factory=dict)  # class outputs
    diff: dict[str, HistogramState] = field(default_factory=dict)  # float outputs: |Δ|
    infer: HistogramState = field(default_factory=HistogramState)

    def add(self, other: ShadowState) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.dropped += other.dropped
        _add_map(self.rows, other.rows)
        _add_map(self.disagree, other.disagree)
        for output, hist in other.diff.items():
            mine = self.diff.get(output)
            if mine is None:
                self.diff[output] = hist.copy()
            else:
                mine.add(hist)
        self.infer.add(other.infer)

    def copy(self) -> ShadowState:
        return ShadowState(
            self.requests,
            self.errors,
            self.dropped,
            dict(self.rows),
            dict(self.disagree),
            {k: h.copy() for k, h in self.diff.items()},
            self.infer.copy(),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "dropped": self.dropped,
            "rows": self.rows,
            "disagree": self.disagree,
            "diff": {k: h.to_json() for k, h in self.diff.items()},
            "infer": self.infer.to_json(),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ShadowState:
        return cls(
            doc.get("requests", 0),
            doc.get("errors", 0),
            doc.get("dropped", 0),
            _ints(doc.get("rows")),
            _ints(doc.get("disagree")),
            {k: HistogramState.from_json(h) for k, h in doc.get("diff", {}).items()},
            HistogramState.from_json(doc.get("infer", {})),
        )


@dataclass(slots=True)
class PayloadState:
    """One model's payload log counters (``governance/payloads.py``)."""

    logged: int = 0
    dropped: int = 0
    errors: int = 0
    bytes: int = 0

    def add(self, other: PayloadState) -> None:
        self.logged += other.logged
        self.dropped += other.dropped
        self.errors += other.errors
        self.bytes += other.bytes

    def copy(self) -> PayloadState:
        return PayloadState(self.logged, self.dropped, self.errors, self.bytes)

    def to_json(self) -> dict[str, Any]:
        return {
            "logged": self.logged,
            "dropped": self.dropped,
            "errors": self.errors,
            "bytes": self.bytes,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PayloadState:
        return cls(
            doc.get("logged", 0), doc.get("dropped", 0), doc.get("errors", 0), doc.get("bytes", 0)
        )


@dataclass(slots=True)
class ProcessState:
    """The process's readings (``process.py``): counters (an exited worker's still count),
    gauges that add over live workers, and gauges merged by maximum. None: not read
    (no ``/proc``)."""

    cpu_seconds: float | None = None
    gc_collections: list[int] = field(default_factory=list)
    gc_collected: list[int] = field(default_factory=list)
    gc_uncollectable: list[int] = field(default_factory=list)
    # live workers only, summed
    virtual_memory_bytes: int | None = None
    resident_memory_bytes: int | None = None
    open_fds: int | None = None
    # merged by maximum
    max_fds: int | None = None
    start_time_seconds: float | None = None

    def add(self, other: ProcessState) -> None:
        self.cpu_seconds = _sum_opt(self.cpu_seconds, other.cpu_seconds)
        self.gc_collections = _add_counts(self.gc_collections, other.gc_collections)
        self.gc_collected = _add_counts(self.gc_collected, other.gc_collected)
        self.gc_uncollectable = _add_counts(self.gc_uncollectable, other.gc_uncollectable)
        self.virtual_memory_bytes = _sum_opt(self.virtual_memory_bytes, other.virtual_memory_bytes)
        self.resident_memory_bytes = _sum_opt(
            self.resident_memory_bytes, other.resident_memory_bytes
        )
        self.open_fds = _sum_opt(self.open_fds, other.open_fds)
        self.max_fds = _max_opt(self.max_fds, other.max_fds)
        self.start_time_seconds = _max_opt(self.start_time_seconds, other.start_time_seconds)

    def exited(self) -> None:
        """A worker that has exited: its memory and descriptors are gone."""
        self.virtual_memory_bytes = self.resident_memory_bytes = self.open_fds = None
        self.max_fds = None
        self.start_time_seconds = None

    def to_json(self) -> dict[str, Any]:
        counters: dict[str, Any] = {
            "gc_collections": self.gc_collections,
            "gc_collected": self.gc_collected,
            "gc_uncollectable": self.gc_uncollectable,
        }
        if self.cpu_seconds is not None:
            counters["cpu_seconds"] = self.cpu_seconds
        now = {
            k: v
            for k, v in (
                ("virtual_memory_bytes", self.virtual_memory_bytes),
                ("resident_memory_bytes", self.resident_memory_bytes),
                ("open_fds", self.open_fds),
            )
            if v is not None
        }
        most = {
            k: v
            for k, v in (("max_fds", self.max_fds), ("start_time_seconds", self.start_time_seconds))
            if v is not None
        }
        return {"process": counters, "process_now": now, "process_max": most}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ProcessState:
        counters = doc.get("process", {})
        now = doc.get("process_now", {})
        most = doc.get("process_max", {})
        return cls(
            counters.get("cpu_seconds"),
            list(counters.get("gc_collections", [])),
            list(counters.get("gc_collected", [])),
            list(counters.get("gc_uncollectable", [])),
            now.get("virtual_memory_bytes"),
            now.get("resident_memory_bytes"),
            now.get("open_fds"),
            most.get("max_fds"),
            most.get("start_time_seconds"),
        )


# The sections components hand in (``SnapshotSource``); ``WorkerSnapshot.place`` puts each in.


@dataclass(slots=True)
class ShadowSection:
    """Shadow comparisons, ``"model/version"`` → state (``serving/mirroring.py``)."""

    comparisons: dict[str, ShadowState] = field(default_factory=dict)


@dataclass(slots=True)
class GuardrailSection:
    """Canary weights (percent, per model) and guardrail actions (``"model/action"`` →
    count) (``serving/guardrail_actions.py``)."""

    canary_weight: dict[str, float] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class ExplainSection:
    """Explain requests, ``"model/version/outcome"`` → count (``serving/accounting.py``)."""

    requests: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class PayloadSection:
    """Payload log counters per model (``governance/payloads.py``)."""

    models: dict[str, PayloadState] = field(default_factory=dict)


@dataclass(slots=True)
class ServingSection:
    """Load shedding and the registry scan (``service.py``): refusals for a late event
    loop, how late it ran at its last check, scans that could not read the registry."""

    overload_rejections: int = 0
    loop_delay_seconds: float = 0.0
    registry_scan_failures: int = 0


Section = ShadowSection | GuardrailSection | ExplainSection | PayloadSection | ServingSection


class SnapshotSource(Protocol):
    """A component whose state goes into each worker snapshot."""

    def snapshot_section(self) -> Section: ...


# ---------------------------------------------------------------------------------------------
# the snapshot


@dataclass(slots=True)
class WorkerSnapshot:
    """One worker's monitoring state (or several workers' merged: ``merge``)."""

    pid: int = 0
    workers: int = 0  # live workers summed (set by the hub; never published)
    endpoints: dict[str, EndpointState] = field(default_factory=dict)  # "model/version"
    gauges: dict[str, VersionGauges] = field(default_factory=dict)  # "model/version"
    load_failures: dict[str, int] = field(default_factory=dict)  # model → count (max)
    failed_versions: dict[str, int] = field(default_factory=dict)  # model → count (max)
    rejected: dict[str, int] = field(default_factory=dict)  # "model/version/reason" (sum)
    shadows: dict[str, ShadowState] = field(default_factory=dict)
    guardrails: GuardrailSection = field(default_factory=GuardrailSection)
    explain: ExplainSection = field(default_factory=ExplainSection)
    payloads: dict[str, PayloadState] = field(default_factory=dict)
    serving: ServingSection = field(default_factory=ServingSection)
    process: ProcessState = field(default_factory=ProcessState)

    def place(self, section: Section) -> None:
        """Put a source's section in its place."""
        if isinstance(section, ShadowSection):
            self.shadows.update(section.comparisons)
        elif isinstance(section, GuardrailSection):
            self.guardrails = section
        elif isinstance(section, ExplainSection):
            self.explain = section
        elif isinstance(section, PayloadSection):
            self.payloads.update(section.models)
        else:
            self.serving = section

    def add(self, other: WorkerSnapshot) -> None:
        """Merge ``other`` in (``other`` is left as it is)."""
        self.workers += other.workers
        for key, entry in other.endpoints.items():
            mine = self.endpoints.get(key)
            if mine is None:
                mine = self.endpoints[key] = EndpointState()
            mine.add(entry)
        for key, gauges in other.gauges.items():
            current = self.gauges.get(key)
            if current is None:
                self.gauges[key] = gauges.copy()
            else:
                current.add(gauges)
        _max_map(self.load_failures, other.load_failures)
        _max_map(self.failed_versions, other.failed_versions)
        _add_map(self.rejected, other.rejected)
        for key, shadow in other.shadows.items():
            theirs = self.shadows.get(key)
            if theirs is None:
                self.shadows[key] = shadow.copy()
            else:
                theirs.add(shadow)
        # Every worker's copy of the same routing: the last one read stands.
        self.guardrails.canary_weight = dict(other.guardrails.canary_weight)
        _add_map(self.guardrails.actions, other.guardrails.actions)
        _add_map(self.explain.requests, other.explain.requests)
        for model, counts in other.payloads.items():
            have = self.payloads.get(model)
            if have is None:
                self.payloads[model] = counts.copy()
            else:
                have.add(counts)
        serving = self.serving
        serving.overload_rejections += other.serving.overload_rejections
        serving.loop_delay_seconds = max(
            serving.loop_delay_seconds, other.serving.loop_delay_seconds
        )
        # Every worker scans the same directory: merged by maximum, like load failures.
        serving.registry_scan_failures = max(
            serving.registry_scan_failures, other.serving.registry_scan_failures
        )
        self.process.add(other.process)

    def exited(self) -> None:
        """This is the file of a worker that has exited: its counters still count; its
        gauges (readiness, loop delay, pending requests, memory, drift windows) do not."""
        self.workers = 0
        self.gauges = {}
        self.serving.loop_delay_seconds = 0.0
        self.process.exited()
        for entry in self.endpoints.values():
            entry.pending = 0
            _forget_windows(entry.monitor)

    def to_json(self) -> bytes:
        """The published form: JSON in the shape every earlier version wrote."""
        return orjson.dumps(
            {
                **self.process.to_json(),
                "canary_weight": self.guardrails.canary_weight,
                "guardrail_actions": self.guardrails.actions,
                "explain_requests": self.explain.requests,
                "payloads": {m: p.to_json() for m, p in self.payloads.items()},
                "overload_rejections": self.serving.overload_rejections,
                "loop": {"delay_seconds": self.serving.loop_delay_seconds},
                "registry": {"scan_failures": self.serving.registry_scan_failures},
                "pid": self.pid,
                "shadows": {k: s.to_json() for k, s in self.shadows.items()},
                "endpoints": {k: e.to_json() for k, e in self.endpoints.items()},
                "gauges": {k: g.to_json() for k, g in self.gauges.items()},
                "load_failures": self.load_failures,
                "failed_versions": self.failed_versions,
                "rejected": self.rejected,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> WorkerSnapshot:
        """A published snapshot; keys a writer left out read as empty. Raises ``ValueError``
        for what is not a snapshot (a damaged file)."""
        try:
            doc = orjson.loads(data)
            if not isinstance(doc, dict):
                raise TypeError("not a JSON object")
            _check_values(doc)
            return cls.from_doc(doc)
        except (AttributeError, KeyError, TypeError) as exc:
            raise ValueError(f"not a worker snapshot: {exc}") from exc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> WorkerSnapshot:
        serving = ServingSection(
            doc.get("overload_rejections", 0),
            doc.get("loop", {}).get("delay_seconds", 0.0),
            doc.get("registry", {}).get("scan_failures", 0),
        )
        return cls(
            pid=doc.get("pid", 0),
            endpoints={k: EndpointState.from_json(e) for k, e in doc.get("endpoints", {}).items()},
            gauges={k: VersionGauges.from_json(g) for k, g in doc.get("gauges", {}).items()},
            load_failures=_ints(doc.get("load_failures")),
            failed_versions=_ints(doc.get("failed_versions")),
            rejected=_ints(doc.get("rejected")),
            shadows={k: ShadowState.from_json(s) for k, s in doc.get("shadows", {}).items()},
            guardrails=GuardrailSection(
                dict(doc.get("canary_weight", {})), _ints(doc.get("guardrail_actions"))
            ),
            explain=ExplainSection(_ints(doc.get("explain_requests"))),
            payloads={m: PayloadState.from_json(p) for m, p in doc.get("payloads", {}).items()},
            serving=serving,
            process=ProcessState.from_json(doc),
        )


# The only keys whose values hold text: a monitor's feature names and category levels.
_TEXT_KEYS = frozenset(("names", "levels"))
_LIST_KINDS = frozenset((int, float, type(None), list, dict))


def _check_values(doc: Any) -> None:
    """Every value of a published snapshot a number (or null), bar the text of
    ``_TEXT_KEYS``: a file of the right shape with a string where a count goes would
    otherwise merge (``"1" + "1"``) or fail in the middle of a scrape (``TypeError``)."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _TEXT_KEYS and isinstance(value, list):
                    continue
                if isinstance(value, (dict, list)):
                    stack.append(value)
                elif not (value is None or type(value) in (int, float)):
                    raise TypeError(f"{key!r} holds {type(value).__name__}, not a number")
        else:  # lists are most of a snapshot: their types gathered at C speed
            kinds = set(map(type, node))
            if not kinds <= _LIST_KINDS:
                wrong = sorted(k.__name__ for k in kinds - _LIST_KINDS)
                raise TypeError(f"a list holds {', '.join(wrong)}, not numbers")
            if list in kinds or dict in kinds:
                stack.extend(v for v in node if isinstance(v, (dict, list)))


def merge(parts: list[WorkerSnapshot]) -> WorkerSnapshot:
    """The parts summed field by field (none of them is changed)."""
    merged = WorkerSnapshot(pid=parts[0].pid if parts else 0)
    for part in parts:
        merged.add(part)
    return merged


# ---------------------------------------------------------------------------------------------
# a monitor's state: plain data merged by addition


def merge_monitor_states(states: list[Mapping[str, Any]]) -> dict[str, Any]:
    """``ModelMonitor`` states summed element-wise: numbers add, lists add position by
    position, dicts by key; labels and the reference profile (``_CONSTANT_KEYS``) are kept."""
    merged: dict[str, Any] = {}
    for state in states:
        _add_into(merged, state)
    return merged


# Per-worker copies of the same facts (labels, the reference profile): never added.
_CONSTANT_KEYS = frozenset({"names", "levels", "reference_ratio", "reference", "reference_midrank"})


def _add_into(target: dict[str, Any], source: Mapping[str, Any]) -> None:
    for key, value in source.items():
        if key not in target or key in _CONSTANT_KEYS:
            target[key] = _copy(value)
        elif isinstance(value, Mapping):
            _add_into(target[key], value)
        elif isinstance(value, list):
            target[key] = _add_lists(target[key], value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            target[key] = target[key] + value
        else:
            target[key] = value


def _add_lists(current: list[Any], value: list[Any]) -> list[Any]:
    if len(current) != len(value):  # a shape changed between workers: keep the newer
        return list(value)
    out: list[Any] = []
    a: Any
    b: Any
    for a, b in zip(current, value, strict=True):
        if isinstance(b, list) and isinstance(a, list):
            out.append(_add_lists(a, b))
        elif isinstance(b, (int, float)) and not isinstance(b, bool):
            out.append(a + b)
        else:  # labels (feature names, class levels): equal across workers
            out.append(b)
    return out


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return list(value)
    return value


def _forget_windows(monitor: dict[str, Any] | None) -> None:
    """A dead worker's drift windows: what it saw in a window that has since moved on would
    count for ever (its bin totals, counters, still count)."""
    if not monitor:
        return
    monitor.pop("segments", None)
    for section in monitor.get("sections", {}).values():
        section.pop("window", None)
