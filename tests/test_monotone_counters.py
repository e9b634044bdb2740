"""Counters never go backwards with several workers (issue 15, item 6).

Two worker processes serve continuous traffic while ``/metrics`` is scraped every 0.2 s over a
new connection each time, so the kernel spreads the scrapes over both workers. Whichever
worker answers, every counter sample (``_total``) and every histogram ``_count``/``_bucket``
is at least what the previous scrape showed: each scrape's share of a worker is never above
what any later scrape can read of that worker.

The worker that answered each scrape is found from ``/proc``: the server side of the scrape's
connection is a socket held by exactly one worker process.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlserve.monitoring import build_profile, save_profile
from mlserve.monitoring import hub as hub_module
from mlserve.monitoring.hub import MonitoringHub
from mlserve.monitoring.request_stats import RequestStats
from mlserve.monitoring.snapshot import EndpointState, WorkerSnapshot

from .conftest import running_server, wait_for, write_version
from .support.metrics import parse

TRAFFIC_SECONDS = 15.0
SCRAPE_EVERY = 0.2
MIN_SCRAPES = 60
PER_CONNECTION = 100

JSON = {"content-type": "application/json"}
Sample = tuple[str, tuple[tuple[str, str], ...]]


@pytest.fixture(scope="module")
def cancer_registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """``cancer`` v1: a scaled LogisticRegression on the breast-cancer data, with a reference
    profile (so the feature and prediction counters count too)."""
    root = tmp_path_factory.mktemp("monotone-registry")
    data = load_breast_cancer()
    x = np.asarray(data.data, dtype=np.float32)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    pipe.fit(x, data.target)
    proto = convert_sklearn(
        pipe, initial_types=[("X", FloatTensorType([None, 30]))], options={"zipmap": False}
    )
    vdir = write_version(root, "cancer", 1, proto)
    label = pipe.predict(x).astype(np.int64)
    names = [str(n) for n in data.feature_names]
    save_profile(build_profile(x, names, outputs={"label": label}), vdir / "reference.json")
    return root, x


def _serving_pid(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """The worker holding the server side of the loopback connection from ``client_port``."""
    # /proc/net/tcp: "sl local remote st ... uid timeout inode", addresses as hex IP:port.
    key = f" 0100007F:{server_port:04X} 0100007F:{client_port:04X} "
    table = Path("/proc/net/tcp").read_text()
    at = table.find(key)
    if at < 0:
        return None
    inode = table[at : table.index("\n", at)].split()[8]
    target = f"socket:[{inode}]"
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == target:
                    return pid
    return None


def _scrape(port: int, pids: list[int]) -> tuple[str, int | None]:
    """One scrape over a new connection: the text, and the worker that answered."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        text = response.read().decode()
        assert response.status == 200
        pid = _serving_pid(port, conn.sock.getsockname()[1], pids)  # connection still open
    finally:
        conn.close()
    return text, pid


def _monotone_samples(text: str) -> dict[Sample, float]:
    """Every counter's ``_total`` and every histogram's ``_count`` and ``_bucket``."""
    return {
        s.key(): s.value
        for s in parse(text)
        if (s.type == "counter" and s.name.endswith("_total"))
        or (s.type == "histogram" and s.name.endswith(("_count", "_bucket")))
    }


def _traffic(port: int, rows: np.ndarray, stop: threading.Event, ok: list[int]) -> None:
    """Inference requests until ``stop``, on a new connection every 10 (so both workers
    serve, without a loopback port for every request)."""
    rng = np.random.default_rng(threading.get_ident() % 2**32)
    deadline = time.monotonic() + TRAFFIC_SECONDS + 30  # bounded even if the test hangs
    while not stop.is_set() and time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for _ in range(PER_CONNECTION):
                x = rows[rng.integers(0, len(rows), 4)]
                tensor = {"name": "X", "datatype": "FP32", "shape": list(x.shape)}
                body = orjson.dumps({"inputs": [{**tensor, "data": x.ravel().tolist()}]})
                conn.request("POST", "/v2/models/cancer/infer", body, JSON)
                response = conn.getresponse()
                response.read()
                ok[0] += response.status == 200
        except OSError:
            continue
        finally:
            conn.close()


@pytest.mark.slow
def test_counters_never_go_backwards_across_two_workers(
    cancer_registry: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    root, rows = cancer_registry
    worker_dir = tmp_path / "workers"
    worker_dir.mkdir()
    env = {"MLSERVE_WORKER_DIR": str(worker_dir)}  # to learn the workers' pids
    with running_server(root, "--workers", "2", env=env) as srv:
        wait_for(lambda: len(list(worker_dir.glob("worker-*.json"))) == 2)
        pids = sorted(int(p.stem.split("-", 1)[1]) for p in worker_dir.glob("worker-*.json"))
        stop = threading.Event()
        ok = [0]
        traffic = threading.Thread(target=_traffic, args=(srv.port, rows, stop, ok))
        traffic.start()
        raw: list[tuple[str, int | None]] = []
        try:
            start = time.monotonic()
            while time.monotonic() - start < TRAFFIC_SECONDS or len(raw) < MIN_SCRAPES:
                assert time.monotonic() - start < TRAFFIC_SECONDS + 15, "scrapes too slow"
                raw.append(_scrape(srv.port, pids))
                time.sleep(max(0.0, start + len(raw) * SCRAPE_EVERY - time.monotonic()))
        finally:
            stop.set()
            traffic.join()
    assert ok[0] > 100, f"only {ok[0]} successful requests"
    answered = [pid for _, pid in raw]
    assert set(answered) == set(pids), f"scrapes answered by {answered}, workers {pids}"
    scrapes = [_monotone_samples(text) for text, _ in raw]
    requests = [v for (name, _), v in scrapes[-1].items() if name == "mlserve_requests_total"]
    assert sum(requests) > 100

    backward = []
    for i in range(1, len(scrapes)):
        before, after = scrapes[i - 1], scrapes[i]
        drops = {
            key: before[key] - after.get(key, 0.0)
            for key in before
            if after.get(key, 0.0) < before[key]
        }
        if drops:
            worst = max(drops, key=lambda k: drops[k])
            backward.append((i, answered[i - 1], answered[i], len(drops), worst, drops[worst]))
    assert not backward, (
        f"{len(backward)} of {len(scrapes) - 1} steps went backwards "
        f"(scrape index, answered by before, after, samples, worst sample, drop): {backward}"
    )


# ------------------------------------------------------------------ the hub, in one process


def _hub(state_dir: Path) -> tuple[MonitoringHub, RequestStats]:
    """A hub with one version ``m/1``, as one worker sharing ``state_dir``."""
    hub = MonitoringHub(
        CollectorRegistry(), lambda: [("m", 1, "ready", 0.1, None, True)], state_dir=str(state_dir)
    )
    return hub, hub.register("m", 1, None, None).roles["stable"]


def _successes(snapshot: WorkerSnapshot) -> int:
    return snapshot.endpoints["m/1"].roles["stable"].outcomes[0]


def _own_file(state_dir: Path) -> WorkerSnapshot:
    return WorkerSnapshot.from_json((state_dir / f"worker-{os.getpid()}.json").read_bytes())


def _other_worker(state_dir: Path, successes: int) -> Path:
    """A file as another live worker (the parent process's pid) would publish it."""
    other, stats = _hub(state_dir / "elsewhere")
    for _ in range(successes):
        stats.success(0.001, 0.0, 0.001, 1)
    snap = other.snapshot()
    snap.pid = os.getppid()
    path = state_dir / f"worker-{os.getppid()}.json"
    path.write_bytes(snap.to_json())
    return path


def test_a_merge_publishes_what_it_exports_before_reading_the_others(tmp_path: Path) -> None:
    hub, stats = _hub(tmp_path)
    _other_worker(tmp_path, 7)
    for _ in range(5):
        stats.success(0.001, 0.0, 0.001, 1)
    merged = hub.merged()
    assert _successes(merged) == 12 and merged.workers == 2
    assert _successes(_own_file(tmp_path)) == 5  # no later merge elsewhere sees less of us


def test_concurrent_merges_in_one_worker_never_leave_its_file_below_an_export(
    tmp_path: Path,
) -> None:
    """Snapshot and write are one step: a slower thread never replaces a newer file."""
    hub, stats = _hub(tmp_path)
    done = threading.Event()
    below: list[tuple[int, int]] = []

    def count() -> None:
        while not done.is_set():
            stats.success(0.001, 0.0, 0.001, 1)
            time.sleep(0)  # let the mergers run

    def merge() -> None:
        for _ in range(150):
            exported = _successes(hub.merged())
            on_file = _successes(_own_file(tmp_path))
            if on_file < exported:
                below.append((exported, on_file))

    counter = threading.Thread(target=count)
    counter.start()
    mergers = [threading.Thread(target=merge) for _ in range(4)]
    try:
        for t in mergers:
            t.start()
        for t in mergers:
            t.join()
    finally:
        done.set()
        counter.join()
    assert not below


def test_another_workers_file_that_cannot_be_read_counts_as_it_last_was(tmp_path: Path) -> None:
    hub, _ = _hub(tmp_path)
    path = _other_worker(tmp_path, 7)
    assert _successes(hub.merged()) == 7
    path.write_bytes(b'{"endpoints": {"m/1"')  # damaged
    assert _successes(hub.merged()) == 7
    path.write_bytes(b'{"endpoints": ["m/1"]}')  # JSON, but not a snapshot
    assert _successes(hub.merged()) == 7
    # A snapshot's shape with a wrong type where a count goes (a hostile review: it was
    # kept as the last good copy, and every later scrape raised TypeError, file or not).
    for wrong in (b'{"overload_rejections": "1"}', b"[1, 2]", b'{"rejected": {"m": [true]}}'):
        path.write_bytes(wrong)
        merged = hub.merged()
        assert _successes(merged) == 7 and merged.serving.overload_rejections == 0
        assert b"mlserve_requests_total" in hub.exposition()  # the scrape renders
    path.unlink()  # removed
    assert _successes(hub.merged()) == 7
    _other_worker(tmp_path, 9)
    assert _successes(hub.merged()) == 9


def test_a_failed_publish_exports_what_the_file_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where this worker's file cannot be written, the others see no more of it than the
    file holds: nor does its own merge (a frozen share rather than one that goes back)."""
    hub, stats = _hub(tmp_path)
    for _ in range(3):
        stats.success(0.001, 0.0, 0.001, 1)
    assert _successes(hub.merged()) == 3
    for _ in range(4):
        stats.success(0.001, 0.0, 0.001, 1)

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hub_module.tempfile, "mkstemp", full)
    with caplog.at_level(logging.WARNING, logger="mlserve.monitoring"):
        assert _successes(hub.merged()) == 3
        assert _successes(hub.merged()) == 3
    assert [r.getMessage() for r in caplog.records] == [
        "could not publish monitoring state: [Errno 28] No space left on device"
    ]
    assert _successes(_own_file(tmp_path)) == 3
    monkeypatch.undo()
    assert _successes(hub.merged()) == 7
    assert _successes(_own_file(tmp_path)) == 7


def test_an_exited_workers_drift_window_stops_counting_its_totals_do_not(tmp_path: Path) -> None:
    """A worker that exited leaves its file: its bin totals (counters) still count, but its
    window (a gauge of what the last window_seconds held) must not stay in the sum for ever:
    a drifted window of a killed worker kept the version alerting until restart (review)."""
    hub, _ = _hub(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    section = {
        "names": ["x"],
        "total": [[7, 3, 0]],
        "window": {"counts": [[7, 3, 0]], "n_finite": [10]},
    }
    snap = hub.snapshot()
    snap.pid = dead.pid
    snap.endpoints = {
        "m/1": EndpointState(
            pending=2, monitor={"sections": {"inputs": section}, "segments": {"a": {}}}
        )
    }
    (tmp_path / f"worker-{dead.pid}.json").write_bytes(snap.to_json())
    merged = hub.merged()
    monitor = merged.endpoints["m/1"].monitor
    assert monitor is not None
    assert monitor["sections"]["inputs"]["total"] == [[7, 3, 0]]
    assert "window" not in monitor["sections"]["inputs"] and "segments" not in monitor
    assert merged.endpoints["m/1"].pending == 0
