"""One worker's monitoring state, its snapshot, and the merge across worker processes.

The hub holds what each loaded version records (``EndpointStats``: request stats per
traffic role, the runner's queue and batch sizes, the ``ModelMonitor``). A scrape or a
monitor request takes a snapshot (``WorkerSnapshot``, with the registered ``SnapshotSource``s'
sections: ``snapshot.py``); with several workers (``state_dir`` set) each publishes its own to
``state_dir`` once a second, and the answering worker sums them (``merged``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.core import CollectorRegistry, Metric
from prometheus_client.registry import Collector

from .exposition import Family, collect_families, render_text, to_metrics
from .monitor import ModelMonitor
from .process import process_families, process_state
from .request_stats import Histogram, RequestStats
from .snapshot import EndpointState, SnapshotSource, VersionGauges, WorkerSnapshot, merge

log = logging.getLogger("mlserve.monitoring")

ROLES = ("stable", "canary", "pinned", "shadow")
_EOF = b"# EOF\n"  # what ends an OpenMetrics exposition
# (model, version, state, load_seconds) for every known version
# (model, version, state, load seconds, gate passed (None: no result), may take unpinned
# traffic).
VersionFacts = Callable[[], Iterable[tuple[str, int, str, float | None, bool | None, bool]]]


@dataclass(eq=False)
class EndpointStats:
    """What one loaded version records; created at load, written only by its event loop."""

    model: str
    version: int
    roles: dict[str, RequestStats] = field(default_factory=dict)
    monitor: ModelMonitor | None = None
    runner: Any = None  # has .pending; a batcher also has .sizes (a Histogram)

    @property
    def key(self) -> str:
        return f"{self.model}/{self.version}"


class MonitoringHub:
    """Snapshots, cross-worker merge, drift reports and the Prometheus collector."""

    def __init__(
        self,
        registry: CollectorRegistry,
        versions: VersionFacts,
        *,
        enabled: bool = True,
        state_dir: str = "",
    ) -> None:
        self.registry = registry
        self.enabled = enabled
        self.state_dir = Path(state_dir) if state_dir else None
        self._versions = versions
        # Failed version loads per model since start (the service points this at the store).
        self.load_failures: Callable[[], Mapping[str, int]] = dict
        self._endpoints: dict[str, EndpointStats] = {}
        self._rejected: dict[str, int] = {}
        self._lock = threading.Lock()  # endpoints are registered from the loader thread
        self._reports: tuple[float, dict[str, Any]] | None = None
        self._leader_fd: int | None = None
        # Snapshot and write of this worker's file as one step; what the file last got.
        self._publish_lock = threading.Lock()
        self._published: WorkerSnapshot | None = None
        self._publish_failed = False
        # The last bytes read of each other worker's file (pid → bytes), used when a read fails.
        self._seen: dict[int, bytes] = {}
        # Components whose sections go into every snapshot (shadows, guardrails, …).
        self.sources: list[SnapshotSource] = []
        registry.register(_Collector(self))

    # ------------------------------------------------------------------ registration
    def register(
        self, model: str, version: int, runner: Any, monitor: ModelMonitor | None
    ) -> EndpointStats:
        with self._lock:
            previous = self._endpoints.get(f"{model}/{version}")
            # A reloaded version keeps its counters: they must never go backwards.
            roles = previous.roles if previous else {role: RequestStats() for role in ROLES}
            stats = EndpointStats(model, version, roles, monitor, runner)
            self._endpoints = {**self._endpoints, stats.key: stats}
        return stats

    def retire(self, stats: EndpointStats) -> None:
        """A version left the registry: keep its counters, drop its live state (unless a
        reload has already put a new version in its place)."""
        with self._lock:
            if self._endpoints.get(stats.key) is stats:
                stats.monitor = None
                stats.runner = None

    def rejected(self, stats: EndpointStats, reason: str) -> None:
        key = f"{stats.key}/{reason}"
        self._rejected[key] = self._rejected.get(key, 0) + 1

    def endpoint(self, model: str, version: int) -> EndpointStats | None:
        return self._endpoints.get(f"{model}/{version}")

    def exposition(self, openmetrics: bool = False) -> bytes:
        """``/metrics``: the merged state in the text format, rendered directly."""
        return b"".join(self.exposition_parts(openmetrics))

    def exposition_parts(self, openmetrics: bool = False) -> list[bytes]:
        """``exposition`` as one part per metric family, for ``/metrics`` to render in a
        thread and send part by part: with 100 models × 2 versions × 20 features the text
        is ~26 MB, and joining and encoding it whole is one call of ~60 ms that no thread
        switch can interrupt; the largest family is ~4 MB. Safe off the event loop: the
        monitors' state is read under their own locks (as ``publish`` does each second)
        and request counters are lists copied whole (two series of one version may differ
        by a request still being counted; neither ever goes back)."""
        with _collections_paused():
            merged = self.merged()
            families = self.families(merged)
            _dismantle(merged)
            parts = []
            pace = _Pacer()
            while families:  # each family freed once rendered, not all of them in one go
                pace()
                family = families.pop(0)
                part = render_text((family,), openmetrics)
                if openmetrics:  # each rendering ends with the terminator: one, at the end
                    part = part[: -len(_EOF)]
                if part:
                    parts.append(part)
                del family
        if openmetrics:
            parts.append(_EOF)
        return parts

    def families(self, merged: WorkerSnapshot) -> list[Family]:
        """Every family of a merged snapshot: mlserve's, then the process's and the GC's."""
        return [*collect_families(merged, self.reports(merged)), *process_families(merged)]

    # ------------------------------------------------------------------ workers
    def mark_ready(self, ready: bool = True) -> None:
        """Tell the other workers this one has loaded its registry (or is going away)."""
        if self.state_dir is None:
            return
        marker = self.state_dir / f"ready-{os.getpid()}"
        if ready:
            marker.touch()
        else:
            marker.unlink(missing_ok=True)

    def ready_workers(self) -> int:
        """Live workers that have loaded their registry (1 without a state directory)."""
        if self.state_dir is None:
            return 1
        return sum(
            1 for p in self.state_dir.glob("ready-*") if _alive(int(p.name.split("-", 1)[1]))
        )

    def leader(self) -> bool:
        """Whether this worker runs the server-wide duties (guardrails): the one holding
        ``state_dir/leader.lock``; a worker that exits releases it to the next that asks."""
        if self.state_dir is None:
            return True
        if self._leader_fd is None:
            fd = os.open(self.state_dir / "leader.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            self._leader_fd = fd
        return True

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> WorkerSnapshot:
        """This worker's state. Taken off the event loop's thread (a scrape, the
        once-a-second publish), it hands the GIL to the loop every few milliseconds
        (``_Pacer``)."""
        endpoints: dict[str, EndpointState] = {}
        pace = _Pacer()
        for key, st in list(self._endpoints.items()):
            pace()
            sizes = getattr(st.runner, "sizes", None)
            endpoints[key] = EndpointState(
                roles={r: s.snapshot() for r, s in st.roles.items() if any(s.outcomes)},
                pending=int(getattr(st.runner, "pending", 0)),
                batch=sizes.snapshot() if isinstance(sizes, Histogram) else None,
                monitor=st.monitor.state() if st.monitor is not None else None,
            )
        gauges: dict[str, VersionGauges] = {}
        failed_now: dict[str, int] = {}
        for model, version, state, load_s, gate, servable in self._versions():
            gauges[f"{model}/{version}"] = VersionGauges(
                ready=1 if state == "ready" else 0,
                servable=1 if servable else 0,
                load_seconds=load_s,
                gate_passed=None if gate is None else 1 if gate else 0,
            )
            failed_now.setdefault(model, 0)
            if state == "failed":
                failed_now[model] += 1
        snap = WorkerSnapshot(
            pid=os.getpid(),
            endpoints=endpoints,
            gauges=gauges,
            load_failures=dict(self.load_failures()),
            failed_versions=failed_now,
            rejected=dict(self._rejected),
            process=process_state(),
        )
        for source in self.sources:
            snap.place(source.snapshot_section())
        return snap

    def publish(self) -> None:
        """Write this worker's snapshot for the other workers (atomically)."""
        if self.state_dir is not None:
            self._publish(self.state_dir)

    def _publish(self, state_dir: Path) -> WorkerSnapshot:
        """Take this worker's snapshot and write it to its file; return the snapshot.

        Under the lock, so the file only ever grows: a snapshot taken later is written
        later. The snapshot returned is not to be changed (it is what the file holds)."""
        # Each worker's file only grows: its snapshot and write are one step under this lock
        # (two threads writing could otherwise replace a newer snapshot with an older one).
        with self._publish_lock:
            snap = self.snapshot()
            data = snap.to_json()
            fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, state_dir / f"worker-{os.getpid()}.json")
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            self._published = snap
            return snap

    def _own_part(self, state_dir: Path) -> WorkerSnapshot:
        """This worker's part of a merge: its fresh snapshot, published first. When it cannot
        be written, what its file last got (the other workers see no more of it than that),
        or, before any publish succeeded, the fresh snapshot."""
        try:
            own = self._publish(state_dir)
        except OSError as exc:
            if not self._publish_failed:
                log.warning("could not publish monitoring state: %s", exc)
            self._publish_failed = True
            own = self._published if self._published is not None else self.snapshot()
        else:
            self._publish_failed = False
        return own

    def merged(self) -> WorkerSnapshot:
        """All workers' snapshots summed (this worker's taken fresh, and published first so
        that no later merge on any worker sees less of it); a new object each call."""
        if self.state_dir is None:
            own = self.snapshot()
            own.workers = 1
            return own
        # Counters never go backwards, whichever worker answers: a merge first publishes the
        # fresh snapshot it is about to export, then reads the others' files. So a worker's
        # file always holds at least what any merge has exported of that worker, and a merge
        # that starts after another has answered reads at least as much of every worker (its
        # own part is fresh, the others' files were written before that answer). Without this,
        # a scrape answered by A (A fresh + B's file, up to a second old) followed by one
        # answered by B (B fresh + A's file) showed A's part going back to what A had published
        # a second earlier. The answering worker sums its own fresh snapshot with the others'.
        own = self._own_part(self.state_dir)
        workers = 1
        pid_self = os.getpid()
        paths = {
            int(path.stem.split("-", 1)[1]): path for path in self.state_dir.glob("worker-*.json")
        }
        parts = [own]
        for pid in sorted(paths.keys() | self._seen.keys()):
            if pid == pid_self:
                continue
            snap = self._read_worker(pid, paths.get(pid))
            if snap is None:
                continue
            if _alive(pid):
                workers += 1
            else:  # its counters still count; its gauges, drift windows included, are stale
                snap.exited()
            parts.append(snap)
        merged = merge(parts)
        merged.workers = workers
        return merged

    def _read_worker(self, pid: int, path: Path | None) -> WorkerSnapshot | None:
        """Another worker's snapshot; as last read when its file cannot be read now (files
        are replaced whole, so only a removed or damaged file reads wrong)."""
        data = None
        if path is not None:
            with contextlib.suppress(OSError):
                data = path.read_bytes()
        if data is not None:
            try:
                snap = WorkerSnapshot.from_json(data)
            except ValueError:  # not a snapshot: taken as it last was, like an unreadable file
                pass
            else:
                self._seen[pid] = data
                return snap
        seen = self._seen.get(pid)
        return None if seen is None else WorkerSnapshot.from_json(seen)

    def reports(self, merged: WorkerSnapshot) -> dict[str, Any]:
        """Drift reports per endpoint from merged state, recomputed at most once a second."""
        now = time.monotonic()
        cached = self._reports
        # Computed from the merged windows at most once a second; scrapes in between reuse them.
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        reports: dict[str, Any] = {}
        pace = _Pacer()
        for key, st in list(self._endpoints.items()):
            pace()
            entry = merged.endpoints.get(key)
            state = entry.monitor if entry is not None else None
            if st.monitor is not None and state:
                reports[key] = st.monitor.report(state)
        self._reports = (now, reports)
        return reports


class _Collector(Collector):
    """Reads the hub's merged snapshot and cached reports; computes nothing heavy."""

    def __init__(self, hub: MonitoringHub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        merged = self.hub.merged()
        yield from to_metrics(self.hub.families(merged))


class _Pacer:
    """Called between steps of a long computation: off the event loop's thread, every
    ``_PACE_S`` it sleeps ``_PAUSE_S`` without the GIL, so that the loop surely takes it.
    The switch interval alone does not ensure that: monitor snapshots release and retake
    the GIL many times a millisecond (numpy, the compiled binning kernel), and CPython's
    waiting thread asks for the GIL only after an interval in which nobody else took it,
    so a loop waiting behind a snapshot of 200 versions in a thread was measured late by
    45–140 ms, the whole snapshot, in about half the runs (with a pause each ~2 ms:
    under 12 ms)."""

    __slots__ = ("active", "last")

    def __init__(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.active = True  # a thread: the loop, if any, waits on this one's GIL
        else:
            self.active = False  # on the loop itself: a pause would only delay it
        self.last = time.perf_counter()

    def __call__(self) -> None:
        if self.active and time.perf_counter() - self.last > _PACE_S:
            time.sleep(_PAUSE_S)
            self.last = time.perf_counter()


_PACE_S = 0.002
_PAUSE_S = 0.0002

_paused_lock = threading.Lock()
_paused = 0  # renders running with the collector paused by them


@contextlib.contextmanager
def _collections_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while an exposition renders. Its millions of
    short-lived objects (merged snapshots, samples, lines) otherwise set off full
    collections that walk them all: 20-25 ms each, several a scrape, each one call that
    holds the GIL and so the event loop. They die by reference counting once rendered; the
    collector resumes after the last render (unless something else had paused it)."""
    global _paused
    with _paused_lock:
        ours = _paused > 0 or gc.isenabled()  # else paused by someone else: theirs to resume
        if ours:
            _paused += 1
            gc.disable()
    if not ours:
        yield
        return
    try:
        yield
    finally:
        with _paused_lock:
            _paused -= 1
            if _paused == 0:
                gc.enable()


def _dismantle(snapshot: WorkerSnapshot) -> None:
    """Free a large snapshot a version at a time (dropping it whole is one C call that
    frees every object in it with the GIL held: tens of milliseconds for 200 versions)."""
    for branch in (snapshot.endpoints, snapshot.gauges, snapshot.shadows):
        while branch:
            branch.popitem()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
