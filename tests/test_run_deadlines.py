"""Run deadlines on worker threads (``[execution] run_timeout_s``) and runs stopped at the
end of the drain, with real onnxruntime sessions and real server processes. The runaway
graph is an ONNX ``Loop`` of 10^12 trips (test_load_deadlines.py); a batchable variant
takes one trip count per row."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mlserve.config import ExecutionConfig, InputPolicy
from mlserve.errors import InferenceFailed, RunTimeout, ServerNotReady
from mlserve.monitoring.request_stats import ERROR, REJECTED
from mlserve.runtime.session import ModelSession, terminate_runs
from mlserve.serving.accounting import outcome_of

from .conftest import ServerProcess, linear_model, write_version
from .support.loop_model import TRIPS, loop_model
from .support.metrics import parse

X = {"name": "x", "datatype": "FP32", "shape": [1], "data": [0.0]}


def counted(trips: int) -> dict[str, object]:
    return {"inputs": [X, {"name": "n", "datatype": "INT64", "shape": [1], "data": [trips]}]}


def batch_loop_model() -> onnx.ModelProto:
    """``y = x + max(n)`` per row, by a ``Loop`` of ``max(n)`` trips; both inputs ``[rows]``,
    so the model batches."""
    body = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["one"], value=numpy_helper.from_array(np.ones(1, np.float32))
            ),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [None]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [None]),
        ],
    )
    keep = numpy_helper.from_array(np.array(True))
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["keep_going"], value=keep),
            helper.make_node("ReduceMax", ["n"], ["trips"], keepdims=0),
            helper.make_node("Loop", ["trips", "keep_going", "x"], ["y"], body=body),
        ],
        "batchloop",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [None]),
            helper.make_tensor_value_info("n", TensorProto.INT64, [None]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _session(tmp_path: Path, timeout_s: float) -> ModelSession:
    write_version(tmp_path, "counted", 1, loop_model(None))
    execution = ExecutionConfig(run_timeout_s=timeout_s)
    path = tmp_path / "counted/1/model.onnx"
    return ModelSession("counted", 1, path, execution, InputPolicy(), 1 << 20)


def _feeds(trips: int) -> dict[str, np.ndarray]:
    return {"x": np.array([0.5], np.float32), "n": np.array([trips], np.int64)}


def test_a_run_past_its_timeout_is_stopped_and_the_next_runs(tmp_path: Path) -> None:
    session = _session(tmp_path, 0.5)
    start = time.monotonic()
    try:
        session.run_bounded(_feeds(TRIPS))
        raise AssertionError("10^12 trips ended by themselves")
    except RunTimeout as exc:
        took = time.monotonic() - start
        assert str(exc).startswith("the run exceeded [execution] run_timeout_s = 0.5 s")
        assert exc.status_code == 504 and exc.code == "run_timeout"
    assert 0.5 <= took < 1.5, took
    # Only that run was stopped: the session's own options are untouched.
    assert not session.run_options.terminate
    assert session.run_bounded(_feeds(7))[0].tolist() == [7.5]
    assert session.run(_feeds(3))[0].tolist() == [3.5]


@pytest.mark.slow
def test_concurrent_runs_each_keep_their_own_deadline(tmp_path: Path) -> None:
    """A short run beside a runaway one is not stopped with it, nor the other way round."""
    session = _session(tmp_path, 1.0)
    results: dict[str, object] = {}

    def runaway() -> None:
        try:
            session.run_bounded(_feeds(TRIPS))
        except RunTimeout as exc:
            results["runaway"] = exc

    thread = threading.Thread(target=runaway)
    thread.start()
    for _ in range(20):  # short runs while the runaway goes on
        assert session.run_bounded(_feeds(1000))[0].tolist() == [1000.5]
    thread.join(5)
    assert isinstance(results["runaway"], RunTimeout)


@pytest.mark.slow
def test_no_timeout_means_no_deadline(tmp_path: Path) -> None:
    session = _session(tmp_path, 0.0)
    assert session.run_bounded(_feeds(2_000_000))[0].tolist() == [2_000_000.5]


def test_a_run_stopped_for_shutdown_is_unavailable_not_an_error(tmp_path: Path) -> None:
    session = _session(tmp_path, 30.0)
    caught: list[Exception] = []

    def run() -> None:
        try:
            session.run_bounded(_feeds(TRIPS))
        except Exception as exc:
            caught.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive()
    terminate_runs()
    thread.join(5)
    assert not thread.is_alive()
    (exc,) = caught
    assert isinstance(exc, ServerNotReady) and exc.status_code == 503
    assert "shutting down" in str(exc)
    assert outcome_of(exc) == REJECTED
    assert outcome_of(RunTimeout("x")) == ERROR
    assert outcome_of(InferenceFailed("x")) == ERROR


@pytest.mark.slow
def test_a_runaway_thread_request_gets_504_and_frees_the_thread(tmp_path: Path) -> None:
    """With one inference thread, a runaway request on a thread-mode model held it for good
    and every thread-mode model starved; now it is stopped at its timeout, answered 504,
    counted as the version's error, and the other model is served."""
    registry = tmp_path / "registry"
    write_version(registry, "counted", 1, loop_model(None))
    (registry / "counted/model.toml").write_text(
        '[execution]\nmode = "thread"\nrun_timeout_s = 1\n'
    )
    write_version(registry, "normal", 1, linear_model())
    (registry / "normal/model.toml").write_text('[execution]\nmode = "thread"\n')
    write_version(registry, "batched", 1, batch_loop_model())
    (registry / "batched/model.toml").write_text(
        "[execution]\nrun_timeout_s = 1\n[batching]\nmax_batch_size = 8\nmax_delay_us = 1000\n"
    )
    srv = ServerProcess(registry, "--inference-threads", "1")
    try:
        srv.wait_ready(timeout=60)
        url = srv.url + "/v2/models/{}/infer"
        assert httpx.post(url.format("counted"), json=counted(3)).json()["outputs"][0]["data"] == [
            3.0
        ]
        answers: dict[str, httpx.Response] = {}

        def runaway() -> None:
            answers["runaway"] = httpx.post(url.format("counted"), json=counted(TRIPS), timeout=30)

        caller = threading.Thread(target=runaway)
        caller.start()
        time.sleep(0.3)
        normal = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 20], "data": [0] * 20}]}
        start = time.monotonic()
        r = httpx.post(url.format("normal"), json=normal, timeout=30)
        waited = time.monotonic() - start
        assert r.status_code == 200, r.text
        assert waited < 3, f"the other thread-mode model waited {waited:.1f} s"
        caller.join(10)
        timed_out = answers["runaway"]
        assert timed_out.status_code == 504, timed_out.text
        assert timed_out.json()["code"] == "run_timeout"
        assert "run_timeout_s = 1 s" in timed_out.json()["error"]
        # Batch mode: the batch's run is stopped the same way.
        rows = {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1], "data": [0.5]},
                {"name": "n", "datatype": "INT64", "shape": [1], "data": [TRIPS]},
            ]
        }
        start = time.monotonic()
        b = httpx.post(url.format("batched"), json=rows, timeout=30)
        assert b.status_code == 504 and b.json()["code"] == "run_timeout", b.text
        assert time.monotonic() - start < 3
        rows["inputs"][1]["data"] = [4]  # type: ignore[index]
        ok = httpx.post(url.format("batched"), json=rows, timeout=30)
        assert ok.json()["outputs"][0]["data"] == [4.5], ok.text
        metrics = httpx.get(srv.url + "/metrics").text
        name = "mlserve_requests_total"
        assert parse(metrics).value(name, model="counted", role="stable", outcome="error") == 1.0
        assert parse(metrics).value(name, model="batched", role="stable", outcome="error") == 1.0
    finally:
        srv.stop(timeout=30)


@pytest.mark.slow
def test_a_run_stopped_at_the_end_of_the_drain_is_answered_503(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    write_version(registry, "counted", 1, loop_model(None))
    (registry / "counted/model.toml").write_text('[execution]\nmode = "thread"\n')
    answers: list[httpx.Response] = []
    srv = ServerProcess(registry, "--drain-seconds", "1")
    try:
        srv.wait_ready(timeout=60)
        url = srv.url + "/v2/models/counted/infer"
        caller = threading.Thread(
            target=lambda: answers.append(httpx.post(url, json=counted(TRIPS), timeout=30))
        )
        caller.start()
        time.sleep(0.5)
    finally:
        code = srv.stop(timeout=30)
    caller.join(10)
    log = srv.log_path.read_text(errors="replace")
    assert code == 0, log
    (answer,) = answers
    assert answer.status_code == 503, answer.text
    assert answer.json()["code"] == "server_not_ready"
    assert "shutting down" in answer.json()["error"]
    assert "inference_failed" not in log
