"""The server as a process: CLI, settings from the environment, execution mode, shutdown."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

import mlserve

from .conftest import linear_model, matmul_model, running_server, wait_for, write_version
from .support.metrics import parse
from .support.timing import baseline, bound


@pytest.fixture(scope="module")
def slow_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slow-registry")
    write_version(root, "heavy", 1, matmul_model(fixed=1000))
    write_version(root, "slow", 1, matmul_model(fixed=None))
    (root / "slow" / "model.toml").write_text('[execution]\nmode = "thread"\n')
    write_version(root, "fast", 1, linear_model())
    return root


def slow_request(url: str, n: int, out: list[httpx.Response]) -> None:
    body = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1], "data": [1e-3]},
            {"name": "size", "datatype": "INT64", "shape": [2], "data": [n, n]},
        ]
    }
    out.append(httpx.post(url + "/v2/models/slow/infer", json=body, timeout=60))


def test_version_flag() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mlserve", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"mlserve {mlserve.__version__}"


def test_missing_registry_is_a_clear_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mlserve", "serve", "--registry", str(tmp_path / "absent")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "does not exist" in out.stderr


@pytest.mark.slow
def test_execution_mode_is_chosen_at_load_and_slow_models_leave_the_loop_free(
    slow_registry: Path,
) -> None:
    with running_server(slow_registry) as srv, httpx.Client(base_url=srv.url) as c:
        modes = {
            m: c.get(f"/v2/models/{m}").json()["parameters"]["versions"]["1"]["execution_mode"]
            for m in ("heavy", "slow", "fast")
        }
        assert modes == {"heavy": "thread", "slow": "thread", "fast": "inline"}
        # The baseline: liveness on this machine now, with nothing else running.
        unloaded_s = baseline(lambda: c.get("/v2/health/live"))
        results: list[httpx.Response] = []
        worker = threading.Thread(target=slow_request, args=(srv.url, 2500, results))
        slow_start = time.perf_counter()
        worker.start()
        wait_for(lambda: pending(c) >= 1, what="the slow request to be running on the server")
        start = time.perf_counter()
        assert c.get("/v2/health/live").status_code == 200
        live_s = time.perf_counter() - start
        assert worker.is_alive(), "the slow request finished too early to prove anything"
        worker.join()
        slow_s = time.perf_counter() - slow_start
        assert results[0].status_code == 200, results[0].text
        # A loop held by the slow model would answer only after it: a large part of slow_s.
        # A free one answers about as fast as unloaded, give or take a busy machine.
        limit = min(bound(0.1, unloaded_s, factor=20), slow_s / 4)
        assert live_s < limit, (
            f"liveness took {live_s:.3f}s while a slow request ran ({slow_s:.3f}s; "
            f"unloaded {unloaded_s:.4f}s)"
        )


def pending(c: httpx.Client) -> float:
    """Requests the server holds now, over every model."""
    return parse(c.get("/metrics").text).value("mlserve_pending_requests")


@pytest.mark.slow
def test_sigterm_lets_in_flight_requests_finish_and_exits_zero(slow_registry: Path) -> None:
    with running_server(slow_registry) as srv:
        results: list[httpx.Response] = []
        worker = threading.Thread(target=slow_request, args=(srv.url, 2500, results))
        worker.start()
        with httpx.Client(base_url=srv.url) as c:
            wait_for(lambda: pending(c) >= 1, what="the slow request to be running on the server")
        assert worker.is_alive()
        assert srv.stop() == 0
        worker.join()
        assert results and results[0].status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(srv.url + "/v2/health/live", timeout=2)


@pytest.mark.slow
def test_sigterm_ends_open_event_streams_instead_of_waiting_out_the_drain(
    slow_registry: Path,
) -> None:
    with running_server(slow_registry, "--drain-seconds", "30") as srv:
        events: list[str] = []

        def listen() -> None:
            with (
                contextlib.suppress(httpx.HTTPError),
                httpx.stream("GET", srv.url + "/v2/monitor/stream?interval=0.5", timeout=60) as r,
            ):
                events.extend(line for line in r.iter_lines() if line.startswith("data:"))

        listener = threading.Thread(target=listen)
        listener.start()
        wait_for(lambda: events, 10, what="the stream's first event")
        start = time.monotonic()
        assert srv.stop() == 0
        assert time.monotonic() - start < 10  # not the 30 s drain
        listener.join(10)
        assert not listener.is_alive()


def _worker_pids(parent: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"spawn_main" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.slow
def test_settings_from_environment_and_two_workers(slow_registry: Path) -> None:
    env = {"MLSERVE_WORKERS": "2", "MLSERVE_MAX_BODY_BYTES": "300"}
    with running_server(slow_registry, env=env) as srv, httpx.Client(base_url=srv.url) as c:
        assert len(_worker_pids(srv.proc.pid)) == 2
        x = {"name": "X", "datatype": "FP32", "shape": [1, 20], "data": [0.0] * 20}
        for _ in range(20):
            r = c.post("/v2/models/fast/infer", json={"inputs": [x]})
            assert r.status_code == 200
        big = orjson.dumps({"inputs": [{**x, "shape": [3, 20], "data": [0.0] * 60}]})
        r = c.post("/v2/models/fast/infer", content=big)
        assert r.status_code == 413
        assert (
            r.json()["error"] == f"request body of {len(big)} bytes is over the limit of 300 bytes"
        )
    assert srv.proc.returncode == 0
