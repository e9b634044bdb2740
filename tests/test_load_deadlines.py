"""Loads within deadlines and outside the store lock, runs that can be stopped, and a
bounded exit after SIGTERM (issue 17, part 2), with real onnxruntime sessions and real
server processes. The runaway graph is an ONNX ``Loop`` of 10^12 trips of one ``Add``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlserve.config import ExecutionConfig, InputPolicy, ServerSettings
from mlserve.errors import ModelLoadError, ServerNotReady
from mlserve.registry.store import ModelStore, VersionState
from mlserve.runtime.session import STOP_GRACE_S, ModelSession, load_version
from mlserve.server import EXIT_BOUND_S

from .conftest import ServerProcess, linear_model, wait_for, write_version
from .support.loop_model import TRIPS, loop_model
from .support.metrics import parse


def _loading(name: str) -> bool:
    return any(t.name == f"load {name} v1" for t in threading.enumerate())


def test_the_loop_model_counts_its_trips(tmp_path: Path) -> None:
    """The runaway below is the same graph as this one, with 10^12 trips instead of 7."""
    write_version(tmp_path, "counted", 1, loop_model(None))
    session = ModelSession(
        "counted", 1, tmp_path / "counted/1/model.onnx", ExecutionConfig(), InputPolicy(), 1 << 20
    )
    (y,) = session.run({"x": np.array([0.5], np.float32), "n": np.array([7], np.int64)})
    assert y.tolist() == [7.5]


def test_a_runaway_run_stops_when_told(tmp_path: Path) -> None:
    write_version(tmp_path, "counted", 1, loop_model(None))
    session = ModelSession(
        "counted", 1, tmp_path / "counted/1/model.onnx", ExecutionConfig(), InputPolicy(), 1 << 20
    )
    failures: list[Exception] = []

    def run() -> None:
        try:
            session.run({"x": np.zeros(1, np.float32), "n": np.array([TRIPS], np.int64)})
        except ServerNotReady as exc:  # the session's own options: shutdown's
            failures.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(0.3)
    assert worker.is_alive(), "10^12 trips ended by themselves"
    session.run_options.terminate = True
    start = time.monotonic()
    worker.join(5)
    assert not worker.is_alive()
    assert time.monotonic() - start < 1.0
    assert failures and "shutting down" in str(failures[0])
    assert "terminate" in str(failures[0].__cause__)


@pytest.mark.slow
def test_a_runaway_warm_up_is_failed_at_its_deadline_and_stopped(tmp_path: Path) -> None:
    write_version(tmp_path, "runaway", 1, loop_model(TRIPS))
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as caught:
        load_version(
            "runaway",
            1,
            tmp_path / "runaway/1",
            ExecutionConfig(load_timeout_s=1.0),
            InputPolicy(),
            1 << 20,
        )
    took = time.monotonic() - start
    assert str(caught.value).startswith("warm-up exceeded 1 s")
    assert str(caught.value).endswith("its runs were stopped")
    assert 1.0 <= took < 1.0 + STOP_GRACE_S
    assert not _loading("runaway"), "the warm-up thread still runs"


@pytest.mark.slow
def test_loads_run_outside_the_store_lock(tmp_path: Path) -> None:
    """While a runaway version warms up, what takes the store's lock answers at once, and
    the other model loads and serves; the runaway version is failed with the reason."""
    registry = tmp_path / "registry"
    write_version(registry, "aaa-runaway", 1, loop_model(TRIPS))
    (registry / "aaa-runaway/model.toml").write_text("[execution]\nload_timeout_s = 3\n")
    write_version(registry, "normal", 1, linear_model())
    store: ModelStore[ModelSession] = ModelStore(
        ServerSettings(registry=registry), lambda session, config: session
    )
    loader = threading.Thread(target=store.load_all)
    loader.start()
    wait_for(lambda: _loading("aaa-runaway"))
    start = time.monotonic()
    store.take_routing_changes()  # takes the lock that loads used to hold throughout
    assert time.monotonic() - start < 0.2
    assert _loading("aaa-runaway"), "the runaway load ended before the lock was tried"
    loader.join(30)
    assert not loader.is_alive()
    runaway = store.version_record("aaa-runaway", 1)
    assert runaway.state is VersionState.FAILED
    assert runaway.reason is not None and runaway.reason.startswith("warm-up exceeded 3 s")
    assert store.load_failures == {"aaa-runaway": 1, "normal": 0}
    assert store.resolve("normal").run({"X": np.zeros((1, 20), np.float32)})[0].shape == (1, 3)


def _infer(url: str, model: str, body: dict[str, object], timeout: float = 10) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=timeout)


NORMAL_BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 20], "data": [0.0] * 20}]}


@pytest.mark.slow
def test_server_serves_beside_a_runaway_version_and_says_why_it_failed(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    write_version(registry, "normal", 1, linear_model())
    write_version(registry, "runaway", 1, loop_model(TRIPS))
    (registry / "runaway/model.toml").write_text("[execution]\nload_timeout_s = 2\n")
    token = "load-deadline-token"
    srv = ServerProcess(registry, "--drain-seconds", "1", env={"MLSERVE_ADMIN_TOKEN": token})
    try:
        start = time.monotonic()
        srv.wait_ready(timeout=30)
        ready_s = time.monotonic() - start
        assert ready_s < 2 + 10, f"ready after {ready_s:.1f} s"
        answer = _infer(srv.url, "normal", NORMAL_BODY)
        assert answer.status_code == 200, answer.text
        reason_start = "warm-up exceeded 2 s"
        refused = _infer(srv.url, "runaway", {"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1], "data": [0.0]}]})  # fmt: skip
        assert refused.status_code == 503
        assert reason_start in refused.json()["error"]
        assert httpx.get(srv.url + "/v2/models/runaway/ready").status_code == 503
        assert httpx.get(srv.url + "/v2/models/normal/ready").status_code == 200
        index = httpx.post(
            srv.url + "/v2/repository/index", headers={"Authorization": f"Bearer {token}"}, json={}
        )
        assert index.status_code == 200, index.text
        (entry,) = [e for e in index.json() if e["name"] == "runaway"]
        assert entry["state"] != "READY"
        assert reason_start in entry["reason"]
        meta = httpx.get(srv.url + "/v2/models/runaway").json()
        assert meta["parameters"]["versions"]["1"]["state"] == "failed"
        assert meta["parameters"]["versions"]["1"]["reason"].startswith(reason_start)
        monitor = httpx.get(srv.url + "/v2/models/runaway/monitor").json()
        failed = monitor["unavailable_versions"]["1"]
        assert failed["state"] == "failed" and failed["reason"].startswith(reason_start)
        metrics = httpx.get(srv.url + "/metrics").text
        assert parse(metrics).value("mlserve_model_load_failures_total", model="runaway") == 1.0
        assert parse(metrics).value("mlserve_model_load_failures_total", model="normal") == 0.0
        assert parse(metrics).value("mlserve_model_ready", model="normal", version="1") == 1.0
        assert reason_start in srv.log()
    finally:
        start = time.monotonic()
        code = srv.stop(timeout=30)
        stop_s = time.monotonic() - start
    assert code == 0, srv.log()
    assert stop_s < 1 + EXIT_BOUND_S


@pytest.mark.slow
def test_sigterm_during_a_runaway_warm_up_ends_the_process(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    write_version(registry, "runaway", 1, loop_model(TRIPS))
    (registry / "runaway/model.toml").write_text("[execution]\nload_timeout_s = 600\n")
    srv = ServerProcess(registry, "--drain-seconds", "1")
    try:
        wait_for(lambda: _live(srv.url), timeout=30)
        ready = httpx.get(srv.url + "/v2/health/ready")
        assert ready.status_code == 503  # still warming up the runaway version
    finally:
        start = time.monotonic()
        code = srv.stop(timeout=30)
        stop_s = time.monotonic() - start
    assert stop_s < 1 + EXIT_BOUND_S + 1, srv.log()
    assert code == 0, srv.log()  # the warm-up was stopped: a clean exit


@pytest.mark.slow
def test_each_model_serves_as_soon_as_it_is_loaded_while_the_server_starts(
    tmp_path: Path,
) -> None:
    """A runaway warm-up holds the start (not ready: the server has not loaded everything)
    but not the models already loaded, which answer; the others say what they wait for."""
    registry = tmp_path / "registry"
    write_version(registry, "aaa-normal", 1, linear_model())
    write_version(registry, "zzz-runaway", 1, loop_model(TRIPS))  # scanned after aaa-normal
    (registry / "zzz-runaway/model.toml").write_text("[execution]\nload_timeout_s = 600\n")
    srv = ServerProcess(registry, "--drain-seconds", "1")
    try:

        def runaway_loading() -> bool:
            if not _live(srv.url):
                return False
            ready = httpx.get(srv.url + "/v2/models/zzz-runaway/ready")
            return ready.status_code == 503 and "loading" in ready.text

        wait_for(runaway_loading, timeout=30)
        assert httpx.get(srv.url + "/v2/health/ready").status_code == 503
        answer = _infer(srv.url, "aaa-normal", NORMAL_BODY)
        assert answer.status_code == 200, answer.text
        assert answer.headers["mlserve-model-version"] == "1"
        waiting = _infer(srv.url, "zzz-runaway", {"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1], "data": [0.0]}]})  # fmt: skip
        assert waiting.status_code == 503
        assert "loading" in waiting.json()["error"], waiting.text
        monitor = httpx.get(srv.url + "/v2/models/zzz-runaway/monitor").json()
        assert monitor["unavailable_versions"] == {"1": {"state": "loading", "reason": None}}
        pinned = httpx.get(srv.url + "/v2/models/zzz-runaway/versions/1/ready")
        assert pinned.status_code == 503 and "version 1 is loading" in pinned.json()["reason"]
        unknown = _infer(srv.url, "not-there", NORMAL_BODY)  # it may yet appear: not a 404
        assert unknown.status_code == 503
        assert "the server is starting" in unknown.json()["error"]
    finally:
        code = srv.stop(timeout=30)
    assert code == 0, srv.log()


@pytest.mark.slow
def test_sigterm_during_a_runaway_request_on_a_thread_ends_the_process(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    write_version(registry, "counted", 1, loop_model(None))
    (registry / "counted/model.toml").write_text('[execution]\nmode = "thread"\n')
    answers: list[httpx.Response | Exception] = []
    x = {"name": "x", "datatype": "FP32", "shape": [1], "data": [0.0]}
    body = {"inputs": [x, {"name": "n", "datatype": "INT64", "shape": [1], "data": [TRIPS]}]}
    srv = ServerProcess(registry, "--drain-seconds", "1")
    try:
        srv.wait_ready(timeout=30)
        small = {"inputs": [x, {"name": "n", "datatype": "INT64", "shape": [1], "data": [3]}]}
        assert _infer(srv.url, "counted", small).json()["outputs"][0]["data"] == [3.0]

        def call() -> None:
            try:
                answers.append(_infer(srv.url, "counted", body, timeout=30))
            except httpx.HTTPError as exc:
                answers.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.5)
        assert caller.is_alive() and not answers
    finally:
        start = time.monotonic()
        code = srv.stop(timeout=30)
        stop_s = time.monotonic() - start
    caller.join(10)
    assert stop_s < 1 + EXIT_BOUND_S + 1, srv.log()
    assert code == 0, srv.log()  # the run was told to stop at the drain's end
    assert answers and not (isinstance(answers[0], httpx.Response) and answers[0].is_success)


def _live(url: str) -> bool:
    try:
        return httpx.get(url + "/v2/health/live", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_a_process_that_cannot_end_exits_at_the_bound(tmp_path: Path) -> None:
    """What onnxruntime cannot stop (session creation, one long operator) holds a thread that
    the interpreter would join forever: a stand-in thread that never ends shows the bound."""
    script = textwrap.dedent(
        """
        import logging, threading, time
        from mlserve.server import ExitBound
        logging.basicConfig(level=logging.INFO)
        threading.Thread(target=lambda: time.sleep(3600), name="stuck").start()
        ExitBound(None, drain_seconds=0.5).arm()
        """
    )
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    took = time.monotonic() - start
    assert out.returncode == 1
    assert 0.5 + EXIT_BOUND_S <= took < 0.5 + EXIT_BOUND_S + 3
    assert "exiting now" in out.stderr and "stuck" in out.stderr.split("threads left:")[1]
