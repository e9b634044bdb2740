"""The process's own metrics: CPU, memory, file descriptors, start time and Python's GC.

Taken into each worker's snapshot as a ``ProcessState`` (``snapshot.py``), so that they sum
over workers like every other counter: CPU and GC counters (an exited worker's totals stay
in the sum, as its request counters do), gauges that add over live workers (memory, open
descriptors) and gauges merged by maximum (the latest start, the descriptor limit). The
names are prometheus_client's process and GC collectors', which dashboards expect;
``/proc`` readings are left out where there is no ``/proc``.
"""

from __future__ import annotations

import gc
import os
import platform
import resource

from .exposition import Family, family
from .snapshot import ProcessState, WorkerSnapshot

_PROC = "/proc/self"


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", "rb") as fh:
            for line in fh:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = resource.getpagesize()
_BOOT = _boot_time()


def process_state() -> ProcessState:
    """This process's readings (see the module doc for how each part merges)."""
    times = os.times()
    stats = gc.get_stats()
    state = ProcessState(
        cpu_seconds=times.user + times.system,
        gc_collections=[s["collections"] for s in stats],
        gc_collected=[s["collected"] for s in stats],
        gc_uncollectable=[s["uncollectable"] for s in stats],
        max_fds=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    )
    try:
        with open(f"{_PROC}/statm", "rb") as fh:
            size, resident = (int(x) for x in fh.read().split()[:2])
        state.virtual_memory_bytes = size * _PAGE
        state.resident_memory_bytes = resident * _PAGE
        state.open_fds = len(os.listdir(f"{_PROC}/fd"))
        if _BOOT is not None:
            with open(f"{_PROC}/stat", "rb") as fh:
                # Field 22, counted after the command name's closing parenthesis.
                fields = fh.read().rsplit(b")", 1)[1].split()
            state.start_time_seconds = _BOOT + int(fields[19]) / _TICKS
    except OSError:  # no /proc: CPU and GC only
        pass
    return state


def process_families(snapshot: WorkerSnapshot | ProcessState) -> list[Family]:
    """The process and GC families of a merged snapshot (absent readings: no sample)."""
    state = snapshot.process if isinstance(snapshot, WorkerSnapshot) else snapshot
    out: list[Family] = []
    cpu = family("process_cpu_seconds")
    if state.cpu_seconds is not None:
        cpu.samples.append(("_total", (), state.cpu_seconds))
    out.append(cpu)
    gauges: tuple[tuple[float | None, str], ...] = (
        (state.resident_memory_bytes, "process_resident_memory_bytes"),
        (state.virtual_memory_bytes, "process_virtual_memory_bytes"),
        (state.open_fds, "process_open_fds"),
        (state.max_fds, "process_max_fds"),
        (state.start_time_seconds, "process_start_time_seconds"),
    )
    for value, name in gauges:
        if value is not None:
            gauge = family(name)
            gauge.samples.append(("", (), value))
            out.append(gauge)
    for counts, name in (
        (state.gc_collected, "python_gc_objects_collected"),
        (state.gc_uncollectable, "python_gc_objects_uncollectable"),
        (state.gc_collections, "python_gc_collections"),
    ):
        counter = family(name)
        for generation, count in enumerate(counts):
            counter.samples.append(("_total", (str(generation),), count))
        out.append(counter)
    info = family("python_info")
    info.samples.append(("", _INFO, 1))
    out.append(info)
    return out


_INFO = (
    platform.python_implementation(),
    *platform.python_version_tuple(),
    platform.python_version(),
)
