"""The process's own metrics: CPU, memory, file descriptors, start time and Python's GC.

Taken into each worker's snapshot as plain data, so that they sum over workers like every
other counter: ``process`` holds counters (an exited worker's totals stay in the sum, as
its request counters do), ``process_now`` gauges that add over live workers (memory, open
descriptors), ``process_max`` gauges merged by maximum (the latest start, the descriptor
limit). The names are prometheus_client's process and GC collectors', which dashboards
expect; ``/proc`` readings are left out where there is no ``/proc``.
"""

from __future__ import annotations

import gc
import os
import platform
import resource
from typing import Any

from .metrics import Family

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


def process_state() -> dict[str, Any]:
    """This process's readings (see the module doc for how each part merges)."""
    times = os.times()
    stats = gc.get_stats()
    state: dict[str, Any] = {
        "process": {
            "cpu_seconds": times.user + times.system,
            "gc_collections": [s["collections"] for s in stats],
            "gc_collected": [s["collected"] for s in stats],
            "gc_uncollectable": [s["uncollectable"] for s in stats],
        },
        "process_now": {},
        "process_max": {"max_fds": resource.getrlimit(resource.RLIMIT_NOFILE)[0]},
    }
    try:
        with open(f"{_PROC}/statm", "rb") as fh:
            size, resident = (int(x) for x in fh.read().split()[:2])
        state["process_now"]["virtual_memory_bytes"] = size * _PAGE
        state["process_now"]["resident_memory_bytes"] = resident * _PAGE
        state["process_now"]["open_fds"] = len(os.listdir(f"{_PROC}/fd"))
        if _BOOT is not None:
            with open(f"{_PROC}/stat", "rb") as fh:
                # Field 22, counted after the command name's closing parenthesis.
                fields = fh.read().rsplit(b")", 1)[1].split()
            state["process_max"]["start_time_seconds"] = _BOOT + int(fields[19]) / _TICKS
    except OSError:  # no /proc: CPU and GC only
        pass
    return state


def process_families(snapshot: dict[str, Any]) -> list[Family]:
    """The process and GC families of a merged snapshot (absent readings: no sample)."""
    counters = snapshot.get("process", {})
    now = snapshot.get("process_now", {})
    most = snapshot.get("process_max", {})
    out: list[Family] = []
    cpu = Family(
        "process_cpu_seconds", "counter", "User and system CPU time of the worker processes.", ()
    )
    if "cpu_seconds" in counters:
        cpu.samples.append(("_total", (), counters["cpu_seconds"]))
    out.append(cpu)
    for key, name, help_text in (
        ("resident_memory_bytes", "process_resident_memory_bytes", "Resident memory, summed."),
        ("virtual_memory_bytes", "process_virtual_memory_bytes", "Virtual memory, summed."),
        ("open_fds", "process_open_fds", "Open file descriptors, summed over the workers."),
    ):
        if key in now:
            family = Family(name, "gauge", help_text, ())
            family.samples.append(("", (), now[key]))
            out.append(family)
    for key, name, help_text in (
        ("max_fds", "process_max_fds", "The open file descriptor limit of a worker."),
        (
            "start_time_seconds",
            "process_start_time_seconds",
            "Start of the most recently started worker, seconds since the epoch.",
        ),
    ):
        if key in most:
            family = Family(name, "gauge", help_text, ())
            family.samples.append(("", (), most[key]))
            out.append(family)
    for key, name, help_text in (
        ("gc_collected", "python_gc_objects_collected", "Objects collected by the GC."),
        ("gc_uncollectable", "python_gc_objects_uncollectable", "Uncollectable objects found."),
        ("gc_collections", "python_gc_collections", "Times each generation was collected."),
    ):
        family = Family(name, "counter", help_text, ("generation",))
        for generation, count in enumerate(counters.get(key, [])):
            family.samples.append(("_total", (str(generation),), count))
        out.append(family)
    info = Family("python_info", "gauge", "Python platform information.", _INFO_LABELS)
    info.samples.append(("", _INFO, 1))
    out.append(info)
    return out


_INFO_LABELS = ("implementation", "major", "minor", "patchlevel", "version")
_INFO = (
    platform.python_implementation(),
    *platform.python_version_tuple(),
    platform.python_version(),
)
