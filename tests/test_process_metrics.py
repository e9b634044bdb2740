"""The process and GC metrics beside mlserve's own: the same readings as prometheus_client's
collectors in one process, and summed over workers (a killed worker's CPU stays counted)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from mlserve.monitoring.exposition import render_text
from mlserve.monitoring.process import process_families, process_state

from .conftest import linear_model, running_server, wait_for, write_version
from .support.metrics import parse, scrape

# Slow: every test here starts real servers and waits on them (-m "not slow" skips them).
pytestmark = pytest.mark.slow


def test_one_process_reads_as_prometheus_clients_collectors() -> None:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
    theirs = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
    }
    ours = parse(render_text(process_families(process_state())).decode()).as_dict()
    assert {name for name, _ in ours} == {name for name, _ in theirs}
    for key, value in theirs.items():
        name = key[0]
        if name == "process_cpu_seconds_total":
            assert ours[key] == pytest.approx(value, abs=0.05)
        elif name in ("process_resident_memory_bytes", "process_virtual_memory_bytes"):
            assert ours[key] == pytest.approx(value, rel=0.05)
        elif name == "process_open_fds":
            assert abs(ours[key] - value) <= 2
        elif name == "process_start_time_seconds":
            assert ours[key] == pytest.approx(value, abs=0.02)
        elif name.startswith("python_gc_"):
            assert value <= ours[key] <= value + 1_000  # the GC may run in between
        else:  # max fds, python_info
            assert ours[key] == value, key


def _workers(server_pid: int) -> list[int]:
    """The server's worker processes (uvicorn's supervisor's spawned children; not
    multiprocessing's resource tracker)."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    return [
        int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def _proc(pid: int) -> tuple[float, int, int]:
    """CPU seconds, resident bytes and open descriptors of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss, len(os.listdir(f"/proc/{pid}/fd"))


def test_workers_are_summed_and_cpu_survives_a_killed_worker(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    write_version(registry, "m", 1, linear_model())
    with running_server(registry, "--workers", "2") as server:
        body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 20], "data": [1] * 20}]}
        for _ in range(200):
            assert httpx.post(server.url + "/v2/models/m/infer", json=body).status_code == 200
        wait_for(lambda: scrape(server.url).value("mlserve_workers") == 2, 20)
        workers = _workers(server.proc.pid)
        assert len(workers) == 2
        # Each worker publishes its snapshot once a second, and a scrape publishes its own
        # first: once a scrape counts all 200 requests, every worker's part is current.
        wait_for(
            lambda: scrape(server.url).value("mlserve_requests_total", 0.0, model="m") == 200,
            20,
            what="both workers' snapshots to count the 200 requests",
        )
        before = [_proc(pid) for pid in workers]
        seen = scrape(server.url)
        after = [_proc(pid) for pid in workers]
        cpu = seen.value("process_cpu_seconds_total")
        # Each worker's part is from its last publish (≤ 1 s old) or fresh.
        assert sum(c for c, _, _ in before) - 1.5 <= cpu <= sum(c for c, _, _ in after) + 0.05
        rss = seen.value("process_resident_memory_bytes")
        assert rss == pytest.approx(sum(r for _, r, _ in after), rel=0.2)
        fds = seen.value("process_open_fds")
        assert abs(fds - sum(f for _, _, f in after)) <= 8
        start = seen.value("process_start_time_seconds")

        os.kill(workers[0], signal.SIGKILL)  # uvicorn's supervisor starts another
        wait_for(lambda: len(set(_workers(server.proc.pid)) - set(workers)) == 1, 30)
        wait_for(lambda: scrape(server.url).value("process_start_time_seconds") > start, 30)
        later = scrape(server.url)
        # The killed worker's CPU still counts: the counter never went back.
        assert later.value("process_cpu_seconds_total") >= cpu
        survivors = [_proc(pid) for pid in _workers(server.proc.pid)]
        assert later.value("process_resident_memory_bytes") == pytest.approx(
            sum(r for _, r, _ in survivors), rel=0.2
        )  # the killed worker's memory does not
