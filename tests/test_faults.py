"""Faults against a real server process over loopback HTTP.

The server keeps answering what it can, refuses what it must with a clear JSON error, and
never corrupts its state. What is already covered elsewhere and only extended here:
a garbage file over a loaded version and a truncated new version (test_hot_reload), one
in-flight request through SIGTERM (test_server_lifecycle), a failing row isolated inside
one batch (test_batching, in-process).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mlserve.governance.audit import AuditLog, verify

from .conftest import (
    ServerProcess,
    linear_model,
    matmul_model,
    running_server,
    slow_batch_model,
    wait_for,
    write_version,
)
from .support import raw_http
from .support.metrics import parse
from .support.raw_http import connect, read_all, read_response
from .support.timing import baseline, bound

X = {"name": "X", "datatype": "FP32", "shape": [1, 20], "data": [0.25] * 20}
TOKEN = "fault-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def slow_body(n: int) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1], "data": [1e-3]},
            {"name": "size", "datatype": "INT64", "shape": [2], "data": [n, n]},
        ]
    }


# ---------------------------------------------------------------- model files go bad


@pytest.mark.slow
def test_model_file_truncated_then_garbage_while_serving(tmp_path: Path) -> None:
    """Extends test_hot_reload: under load, v2's file is truncated, then replaced by garbage.
    Expected (what a production user wants): v1 keeps answering 200 with its outputs, v2 keeps
    serving its loaded session (the file on disk is not what serves), its metadata says
    ``reload failed`` and the load-failure counter counts each bad file; fixing the file
    reloads it."""
    root = tmp_path / "registry"
    write_version(root, "m", 1, linear_model(seed=1), lineage=False)
    write_version(root, "m", 2, linear_model(seed=2), lineage=False)
    (root / "m" / "model.toml").write_text('[versions]\npolicy = "all"\n')
    statuses: Counter[int] = Counter()
    stop = threading.Event()
    with running_server(root, "--poll-seconds", "0.1") as srv, httpx.Client(base_url=srv.url) as c:
        good = {v: c.post(f"/v2/models/m/versions/{v}/infer", json={"inputs": [X]}).json()
                for v in (1, 2)}  # fmt: skip

        def load() -> None:
            with httpx.Client(base_url=srv.url, timeout=10) as lc:
                while not stop.is_set():
                    for v in (1, 2):
                        r = lc.post(f"/v2/models/m/versions/{v}/infer", json={"inputs": [X]})
                        statuses[r.status_code] += 1
                        assert r.json()["outputs"] == good[v]["outputs"]

        worker = threading.Thread(target=load)
        worker.start()
        try:
            model = root / "m" / "2" / "model.onnx"
            data = model.read_bytes()
            model.write_bytes(data[: len(data) // 2])  # truncated
            wait_for(lambda: "reload failed" in str(c.get("/v2/models/m").json()))
            assert c.get("/v2/models/m/versions/2/ready").status_code == 200
            assert (
                parse(c.get("/metrics").text).value("mlserve_model_load_failures_total", model="m")
                == 1
            )
            model.write_bytes(b"\x08\x07garbage, not a protobuf" * 10)  # garbage
            wait_for(
                lambda: (
                    parse(c.get("/metrics").text).value(
                        "mlserve_model_load_failures_total", model="m"
                    )
                    == 2
                )
            )
            reason = c.get("/v2/models/m").json()["parameters"]["versions"]["2"]["reason"]
            assert "reload failed, still serving the previous files" in reason
            model.write_bytes(data)  # fixed: reloads, the reason goes
            wait_for(
                lambda: "reason" not in c.get("/v2/models/m").json()["parameters"]["versions"]["2"]
            )
        finally:
            stop.set()
            worker.join()
    assert set(statuses) == {200} and statuses[200] > 20, statuses


# ---------------------------------------------------------------- a version deleted mid-request


@pytest.mark.slow
def test_version_directory_deleted_while_requests_are_in_flight(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    write_version(root, "slow", 1, matmul_model(fixed=None))
    write_version(root, "slow", 2, matmul_model(fixed=None))
    (root / "slow" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n[execution]\nmode = "thread"\n'
    )
    results: list[int] = []

    def pinned() -> None:
        r = httpx.post(
            srv.url + "/v2/models/slow/versions/2/infer", json=slow_body(1500), timeout=30
        )
        results.append(r.status_code)

    with running_server(root, "--poll-seconds", "0.1") as srv, httpx.Client(base_url=srv.url) as c:
        workers = [threading.Thread(target=pinned) for _ in range(6)]
        for w in workers:
            w.start()
        wait_for(lambda: parse(c.get("/metrics").text).value("mlserve_pending_requests") >= 4)
        shutil.rmtree(root / "slow" / "2")
        wait_for(lambda: c.get("/v2/models/slow/versions/2").status_code == 404)
        for w in workers:
            w.join(30)
            assert not w.is_alive(), "a request on the deleted version hung"
        r = c.post("/v2/models/slow/versions/2/infer", json=slow_body(10))
        assert r.status_code == 404 and r.json()["code"] == "version_not_found"
        assert c.post("/v2/models/slow/versions/1/infer", json=slow_body(10)).status_code == 200
        assert c.get("/v2/health/ready").status_code == 200
    # The (at least 4) in flight when the directory went finished 200: a retired version
    # finishes what it has. Any that reached the server after it: 404, never a hang or 500.
    assert set(results) <= {200, 404} and results.count(200) >= 4, results
    assert srv.proc.returncode == 0


# ---------------------------------------------------------------- the registry unreadable


@pytest.mark.slow
def test_registry_unreadable_keeps_serving_and_recovers(tmp_path: Path) -> None:
    """The registry path stops being a readable directory (we run as root, which ignores
    mode bits, so it is replaced by a file: every scan fails with an OSError, as chmod 000
    would for another user). What is loaded keeps serving, the failure is logged on every
    scan, and once the directory is back, scans resume (a new version loads)."""
    root = tmp_path / "registry"
    write_version(root, "m", 1, linear_model(seed=1))
    with running_server(root, "--poll-seconds", "0.1") as srv, httpx.Client(base_url=srv.url) as c:
        before = c.post("/v2/models/m/infer", json={"inputs": [X]}).json()
        away = tmp_path / "registry.away"
        os.rename(root, away)
        root.write_text("not a directory")
        wait_for(lambda: "cannot be read" in srv.log())
        wait_for(  # several failed scans
            lambda: (
                parse(c.get("/metrics").text).value("mlserve_registry_scan_failures_total") >= 2
            ),
            what="two failed scans",
        )
        r = c.post("/v2/models/m/infer", json={"inputs": [X]})
        assert r.status_code == 200 and r.json()["outputs"] == before["outputs"]
        assert c.get("/v2/models/m/ready").status_code == 200
        assert c.get("/v2/health/ready").status_code == 200
        failed_scans = parse(c.get("/metrics").text).value("mlserve_registry_scan_failures_total")
        assert failed_scans >= 2  # metered, not only logged
        write_version(away, "m", 2, linear_model(seed=2))
        root.unlink()
        os.rename(away, root)
        # v2 loads beside v1, which stays the stable version (pinned: nobody moved traffic)
        wait_for(lambda: c.get("/v2/models/m").json()["versions"] == ["1", "2"])
        r = c.post("/v2/models/m/infer", json={"inputs": [X]})
        assert r.status_code == 200 and r.headers["mlserve-model-version"] == "1"
    assert srv.proc.returncode == 0


# ---------------------------------------------------------------- onnxruntime fails on some inputs


def reshape_model() -> onnx.ModelProto:
    """``y = 2·X`` by way of ``Reshape(X, [-1, k])`` with ``k = int(min(X))``: every row with
    a value under 1 makes k = 0, which onnxruntime refuses while running (FAIL, not an
    invalid argument). The batch dimension is free, so it batches."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMin", ["X"], ["m"], keepdims=0),
            helper.make_node("Cast", ["m"], ["mi"], to=TensorProto.INT64),
            helper.make_node("Reshape", ["mi", "one"], ["k"]),
            helper.make_node("Concat", ["minus1", "k"], ["shape"], axis=0),
            helper.make_node("Reshape", ["X", "shape"], ["flat"], allowzero=1),
            helper.make_node("Shape", ["X"], ["xs"]),
            helper.make_node("Reshape", ["flat", "xs"], ["back"]),
            helper.make_node("Add", ["back", "X"], ["y"]),
        ],
        "reshape",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=[
            helper.make_tensor("minus1", TensorProto.INT64, [1], [-1]),
            helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.slow
def test_onnxruntime_failure_for_some_inputs_is_isolated(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    for name in ("plain", "batched"):  # warm-up on golden rows that pass (generated may not)
        vdir = write_version(root, name, 1, reshape_model())
        ones = np.full((2, 4), 1.5, np.float32)
        np.savez(vdir / "samples.npz", **{"inputs.X": ones, "outputs.y": ones * 2})
    (root / "batched" / "model.toml").write_text(
        "[batching]\nmax_batch_size = 64\nmax_delay_us = 50000\n"
    )

    def body(value: float) -> dict[str, Any]:
        return {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [value] * 4}]}

    with running_server(root) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
        ok = c.post("/v2/models/plain/infer", json=body(1.5))
        assert ok.status_code == 200 and ok.json()["outputs"][0]["data"] == [3.0] * 4
        bad = c.post("/v2/models/plain/infer", json=body(0.5))
        assert bad.status_code == 500, bad.text
        assert bad.json()["code"] == "inference_failed"
        assert bad.json()["error"].startswith("inference failed in onnxruntime")
        assert "/onnxruntime_src" not in bad.text  # no server paths
        assert c.post("/v2/models/plain/infer", json=body(1.25)).status_code == 200
        # Batched: 16 requests gathered into batches, one bad; only that one fails.
        values = [1.0 + i / 16 for i in range(16)]
        values[5] = 0.25
        out: dict[int, httpx.Response] = {}

        def send(i: int) -> None:
            out[i] = httpx.post(
                srv.url + "/v2/models/batched/infer", json=body(values[i]), timeout=10
            )

        threads = [threading.Thread(target=send, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, r in out.items():
            if i == 5:
                assert r.status_code == 500 and r.json()["code"] == "inference_failed"
            else:
                assert r.status_code == 200, r.text
                np.testing.assert_allclose(r.json()["outputs"][0]["data"], [2 * values[i]] * 4)
        text = c.get("/metrics").text
        assert parse(text).value("mlserve_batch_size_count") < 16  # requests did share batches
        assert (
            parse(text).value(
                "mlserve_requests_total",
                model="batched",
                version="1",
                role="stable",
                outcome="error",
            )
            == 1
        )


# ---------------------------------------------------------------- a slow model fills the queue


@pytest.mark.slow
def test_slow_model_filling_the_queue_is_refused_then_recovers(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    write_version(root, "slow", 1, slow_batch_model(1200))
    (root / "slow" / "model.toml").write_text(
        '[execution]\nmode = "thread"\n[batching]\nmax_batch_size = 1\nmax_queue = 2\n'
    )
    x = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1.0] * 4}]}
    statuses: list[httpx.Response] = []
    with running_server(root, "--inference-threads", "1") as srv:

        def send() -> None:
            statuses.append(httpx.post(srv.url + "/v2/models/slow/infer", json=x, timeout=60))

        threads = [threading.Thread(target=send) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        refused = [r for r in statuses if r.status_code == 503]
        assert refused and any(r.status_code == 200 for r in statuses)
        assert {r.status_code for r in statuses} <= {200, 503}
        for r in refused:
            assert r.json()["code"] == "overloaded" and r.headers["retry-after"] == "1"
        r = httpx.post(srv.url + "/v2/models/slow/infer", json=x, timeout=60)
        assert r.status_code == 200  # load dropped: answered again
        pending = parse(httpx.get(srv.url + "/metrics").text).value("mlserve_pending_requests")
        assert pending == 0


# ---------------------------------------------------------------- clients that go away or dawdle


@pytest.mark.slow
def test_clients_disconnecting_mid_request_leave_the_server_healthy(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    write_version(root, "slow", 1, matmul_model(fixed=None))
    (root / "slow" / "model.toml").write_text('[execution]\nmode = "thread"\n')
    write_version(root, "fast", 1, linear_model())
    with running_server(root) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
        body = json.dumps(slow_body(1200)).encode()
        for _ in range(3):  # gone while its (slow) inference runs
            s = raw_http.send(
                srv.port,
                b"POST /v2/models/slow/infer HTTP/1.1\r\nhost: x\r\n"
                b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                % (len(body), body),
            )
            time.sleep(0.05)
            s.close()
        for _ in range(3):  # gone half-way through its body
            s = raw_http.send(
                srv.port,
                b"POST /v2/models/fast/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 500\r\n\r\n"
                b'{"inputs": [',
            )
            time.sleep(0.05)
            s.close()
        wait_for(  # the abandoned inferences finish
            lambda: parse(c.get("/metrics").text).value("mlserve_pending_requests") == 0,
            what="the abandoned inferences to finish",
        )
        assert c.get("/v2/health/ready").status_code == 200
        assert c.post("/v2/models/fast/infer", json={"inputs": [X]}).status_code == 200
        text = c.get("/metrics").text
        assert parse(text).value("mlserve_pending_requests") == 0
        assert srv.proc.poll() is None


BODY_TIMEOUT_S = 1.0


@dataclass
class TimeoutServer:
    srv: ServerProcess
    client: httpx.Client
    slack: float  # how late a timeout may come: 2 s, more when requests are slow right now

    def within_timeout(self, elapsed: float) -> bool:
        return 0.9 * BODY_TIMEOUT_S <= elapsed < BODY_TIMEOUT_S + self.slack


@pytest.fixture(scope="module")
def timeout_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TimeoutServer]:
    root = tmp_path_factory.mktemp("timeouts") / "registry"
    write_version(root, "fast", 1, linear_model())
    env = {"MLSERVE_ADMIN_TOKEN": TOKEN}
    with (
        running_server(root, "--body-timeout-seconds", str(BODY_TIMEOUT_S), env=env) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        # The baseline: a whole request now, on this machine as loaded as it is.
        base = baseline(lambda: c.post("/v2/models/fast/infer", json={"inputs": [X]}))
        yield TimeoutServer(srv, c, bound(2.0, base, factor=100))


def _half_body(t: TimeoutServer) -> None:
    """A body that stops half-way: 408 JSON after the timeout, then the connection closes."""
    body = json.dumps({"inputs": [X]}).encode()
    start = time.monotonic()
    s = raw_http.send(
        t.srv.port,
        b"POST /v2/models/fast/infer HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s"
        % (len(body), body[:20]),
    )
    answer = read_all(s, reset_is_close=True)
    elapsed = time.monotonic() - start
    s.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert b"connection: close" in head.lower()
    assert json.loads(payload)["code"] == "request_timeout"
    assert t.within_timeout(elapsed), (elapsed, t.slack)


def _dribbled_body(t: TimeoutServer) -> None:
    """A body dribbled a byte every 0.2 s: cut off all the same (the deadline is total)."""
    body = json.dumps({"inputs": [X]}).encode()
    s = raw_http.send(
        t.srv.port,
        b"POST /v2/models/fast/infer HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body),
    )
    start = time.monotonic()
    s.settimeout(0.2)
    got = b""
    for byte in body:
        try:
            s.sendall(bytes([byte]))
            got += s.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        if got:
            break
    elapsed = time.monotonic() - start
    s.close()
    assert got.startswith(b"HTTP/1.1 408"), got
    assert elapsed < BODY_TIMEOUT_S + t.slack, (elapsed, t.slack)


def _unfinished_admin_body(t: TimeoutServer) -> None:
    """Starlette routes read bodies too: an admin change whose body never finishes."""
    s = raw_http.send(
        t.srv.port,
        b"PUT /v2/admin/models/fast/routing HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
        + TOKEN.encode()
        + b"\r\ncontent-length: 100\r\n\r\n{",
    )
    answer = read_all(s, reset_is_close=True)
    s.close()
    assert answer.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in answer


def _unfinished_head(t: TimeoutServer) -> None:
    """A head that never completes (slowloris): the connection is closed."""
    start = time.monotonic()
    s = raw_http.send(t.srv.port, b"POST /v2/models/fast/infer HTTP/1.1\r\nhost: x\r\n")
    assert read_all(s, reset_is_close=True) == b""
    s.close()
    elapsed = time.monotonic() - start
    assert t.within_timeout(elapsed), (elapsed, t.slack)


def _silent_connection(t: TimeoutServer) -> None:
    """A connection that sends nothing at all: closed too."""
    s = connect(t.srv.port, 10)
    assert read_all(s, reset_is_close=True) == b""
    s.close()


@pytest.mark.parametrize(
    "scenario",
    [_half_body, _dribbled_body, _unfinished_admin_body, _unfinished_head, _silent_connection],
    ids=lambda f: f.__name__.strip("_"),
)
@pytest.mark.slow
def test_slow_bodies_and_heads_time_out(timeout_server: TimeoutServer, scenario: Any) -> None:
    scenario(timeout_server)
    # Normal requests, and keep-alive connections, are unaffected.
    c = timeout_server.client
    for _ in range(5):
        assert c.post("/v2/models/fast/infer", json={"inputs": [X]}).status_code == 200
    assert parse(c.get("/metrics").text).value("mlserve_pending_requests") == 0
    assert timeout_server.srv.proc.poll() is None


# ---------------------------------------------------------------- SIGTERM under load


def test_sigterm_under_load_drains_and_refuses_new_work(tmp_path: Path) -> None:
    """Extends test_server_lifecycle (one request): many in flight, then new connections."""
    root = tmp_path / "registry"
    write_version(root, "slow", 1, matmul_model(fixed=None))
    (root / "slow" / "model.toml").write_text('[execution]\nmode = "thread"\n')
    srv = ServerProcess(root, "--drain-seconds", "10", "--inference-threads", "2")
    results: list[str] = []

    def send() -> None:
        try:
            # 1400: long enough (about 0.3 s each on a quiet core) that the eight requests
            # are all in the server at once, even when the clients' threads start late.
            r = httpx.post(srv.url + "/v2/models/slow/infer", json=slow_body(1400), timeout=30)
            results.append(str(r.status_code))
        except httpx.TransportError:  # not yet accepted when the signal came: refused
            results.append("refused")

    try:
        srv.wait_ready()
        threads = [threading.Thread(target=send) for _ in range(8)]
        for t in threads:
            t.start()
        with httpx.Client(base_url=srv.url) as c:  # 8 in the server (2 run, the rest wait)
            wait_for(
                lambda: parse(c.get("/metrics").text).value("mlserve_pending_requests") >= 4,
                what="at least four requests in the server",
            )
        start = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        late: list[str] = []
        for _ in range(3):  # new work after the signal: refused, never served
            try:
                r = httpx.post(srv.url + "/v2/models/slow/infer", json=slow_body(10), timeout=5)
                late.append(str(r.status_code))
            except httpx.ConnectError:
                late.append("refused")
        for t in threads:
            t.join(30)
        code = srv.proc.wait(15)
        took = time.monotonic() - start
    finally:
        srv.stop()
    assert set(results) <= {"200", "refused"} and results.count("200") >= 4, results
    assert set(late) <= {"refused", "503"}, late
    assert code == 0 and took < 10, (code, took)


# ---------------------------------------------------------------- SIGKILL during admin changes


def audit_ok(path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mlserve", "audit", "verify", str(path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow
def test_sigkill_during_routing_changes_leaves_old_or_new_state(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    for v in (1, 2):
        write_version(root, "m", v, linear_model(seed=v))
    (root / "m" / "model.toml").write_text('[versions]\npolicy = "all"\n[routing]\nstable = 1\n')
    state_file = root / "m" / "routing.json"
    rng = random.Random(8)
    env = {"MLSERVE_ADMIN_TOKEN": TOKEN}
    kills = 0
    for _ in range(5):
        srv = ServerProcess(root, env=env)
        srv.wait_ready()
        persisted = (
            (json.loads(state_file.read_text())["override"] or {}).get("canary_weight", 0)
            if state_file.exists()
            else 0
        )
        r = httpx.get(srv.url + "/v2/admin/models/m/routing", headers=AUTH, timeout=5)
        assert r.json()["effective"]["canary_weight"] == persisted  # the restart serves it
        acked: list[float] = [persisted]
        sent: list[float] = []
        stop = threading.Event()

        def change(
            srv: ServerProcess = srv,
            stop: threading.Event = stop,
            sent: list[float] = sent,
            acked: list[float] = acked,
        ) -> None:
            with httpx.Client(base_url=srv.url, headers=AUTH, timeout=5) as c:
                while not stop.is_set():
                    weight = float(rng.randrange(1, 10000)) / 100
                    sent.append(weight)
                    try:
                        r = c.put(
                            "/v2/admin/models/m/routing",
                            json={"canary": 2, "canary_weight": weight},
                        )
                    except httpx.HTTPError:
                        return
                    assert r.status_code == 200, r.text
                    acked.append(weight)

        worker = threading.Thread(target=change)
        worker.start()
        time.sleep(rng.uniform(0.05, 0.5))
        srv.proc.kill()
        srv.proc.wait()
        kills += 1
        stop.set()
        worker.join()
        srv.stop()
        saved = json.loads(state_file.read_text())  # parses: never half-written
        # The last acknowledged state, or the one in flight when the kill came.
        weight = saved["override"]["canary_weight"]
        assert weight in {acked[-1], sent[-1]}, (saved, acked[-3:], sent[-3:])
        audit = root / "audit.jsonl"
        audit_ok(audit)
        last = json.loads(audit.read_text().splitlines()[-1])
        # Write-ahead audit: what is in force was audited (the last record's after), or the
        # kill fell between the record and the rename (the last record's before).
        states = [{k: v for k, v in last[s].items() if k != "serving"} for s in ("after", "before")]
        assert saved in states, (saved, last)
    assert kills == 5
    srv = ServerProcess(root, env=env)  # and it serves the last state
    try:
        srv.wait_ready()
        r = httpx.get(srv.url + "/v2/admin/models/m/routing", headers=AUTH, timeout=5)
        assert r.json()["effective"] == json.loads(state_file.read_text())["override"]
    finally:
        assert srv.stop() == 0


# ---------------------------------------------------------------- disk full


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {exc}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> None:
    with path.open("wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 4096)
            fh.flush()


@pytest.mark.slow
def test_disk_full_while_writing_state(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "256k") as disk:
        root = disk / "registry"
        for v in (1, 2):
            write_version(root, "m", v, linear_model(seed=v))
        (root / "m" / "model.toml").write_text(
            '[versions]\npolicy = "all"\n[routing]\nstable = 1\n'
        )
        env = {"MLSERVE_ADMIN_TOKEN": TOKEN}
        url = "/v2/admin/models/m/routing"
        with (
            running_server(root, env=env) as srv,
            httpx.Client(base_url=srv.url, headers=AUTH) as c,
        ):
            assert c.put(url, json={"canary": 2, "canary_weight": 10}).status_code == 200
            old_state = (root / "m" / "routing.json").read_text()
            old_audit = (root / "audit.jsonl").read_bytes()
            filler = disk / "filler"
            fill(filler)
            r = c.put(url, json={"canary_weight": 20})
            assert r.status_code == 507, r.text
            assert r.json()["code"] == "storage_full" and "nothing was changed" in r.json()["error"]
            assert (root / "m" / "routing.json").read_text() == old_state
            hidden = {p.name for p in (root / "m").iterdir() if p.name.startswith(".")}
            assert hidden <= {".routing.lock"}  # the lock file, and no staged file left
            assert (root / "audit.jsonl").read_bytes() == old_audit
            assert c.get(url).json()["effective"]["canary_weight"] == 10.0
            assert c.post("/v2/models/m/infer", json={"inputs": [X]}).status_code == 200
            filler.unlink()
            r = c.put(url, json={"canary_weight": 20})
            assert r.status_code == 200 and r.json()["effective"]["canary_weight"] == 20.0
        audit_ok(root / "audit.jsonl")
        # The audit log itself on a full disk: a line that did not fit is cut off, not left half.
        log = AuditLog(root / "audit.jsonl")
        fill(disk / "filler")
        size = (root / "audit.jsonl").stat().st_size
        with pytest.raises(OSError):
            log.append("t", "big", "m", None, "x" * 64 * 1024)
        assert (root / "audit.jsonl").stat().st_size == size
        (disk / "filler").unlink()
        log.append("t", "after", "m", None, 1)
        assert verify(root / "audit.jsonl") == (4, None)  # the pin, then three changes


# ---------------------------------------------------------------- bytes that start no request


def dribble(sock: socket.socket, data: bytes, every: float, limit: float) -> float:
    """Send ``data`` a byte every ``every`` seconds until the server closes the connection;
    the seconds that took (``limit`` if it never did). Any answer fails."""
    start = time.monotonic()
    sock.settimeout(every)
    i = 0
    while time.monotonic() - start < limit:
        try:
            sock.sendall(data[i % len(data) : i % len(data) + 1])
            i += 1
            got = sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start
        assert got == b"", got
        return time.monotonic() - start
    return limit


@pytest.mark.slow
def test_bytes_that_start_no_request_time_out_but_keep_alive_and_slow_answers_do_not(
    tmp_path: Path,
) -> None:
    root = tmp_path / "registry"
    write_version(root, "fast", 1, linear_model())
    write_version(root, "slow", 1, matmul_model(fixed=None))
    (root / "slow" / "model.toml").write_text('[execution]\nmode = "thread"\n')
    live = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n"
    with running_server(
        root, "--body-timeout-seconds", "1", "--inference-threads", "1", "--poll-seconds", "0"
    ) as srv:
        # An idle keep-alive connection: closed by uvicorn's keep-alive timeout (5 s), not
        # by the head timeout; watched while the rest runs.
        idle = raw_http.send(srv.port, live)
        assert read_response(idle)[0].startswith(b"HTTP/1.1 200")
        idle_since = time.monotonic()
        idle_closed: list[float] = []

        def watch() -> None:
            idle.settimeout(15)
            with contextlib.suppress(OSError):
                assert idle.recv(1) == b""
            idle_closed.append(time.monotonic() - idle_since)

        watcher = threading.Thread(target=watch)
        watcher.start()

        # Blank lines after a response (llhttp skips them: no request begins).
        s = raw_http.send(srv.port, live)
        assert read_response(s)[0].startswith(b"HTTP/1.1 200")
        assert 0.9 < dribble(s, b"\r\n", 0.2, 5.0) < 2.0
        s.close()

        # A body answered early (413), and the body of a GET that the application never
        # reads: the answer ends the connection (the rest would be taken for a request).
        s = raw_http.send(
            srv.port,
            b"POST /v2/models/fast/infer HTTP/1.1\r\nhost: x\r\n"
            b"content-length: 100000000000\r\n\r\n{",
        )
        head, body = read_response(s)
        assert head.startswith(b"HTTP/1.1 413") and b"connection: close" in head.lower(), head
        assert dribble(s, b"0", 0.2, 5.0) < 0.9
        s.close()
        s = raw_http.send(
            srv.port, b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n"
        )
        head, body = read_response(s)
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head.lower(), head
        assert dribble(s, b"0", 0.2, 5.0) < 0.9
        s.close()

        # A keep-alive client, each head sent in two parts, requests spaced under the timeout
        # and once over it (idle time between requests is the keep-alive timeout's): served
        # throughout.
        s = connect(srv.port, 10)
        start = time.monotonic()
        for gap in (0.2, 0.5, 1.5):
            s.sendall(live[:20])
            time.sleep(0.3)
            s.sendall(live[20:])
            assert read_response(s)[0].startswith(b"HTTP/1.1 200")
            time.sleep(gap)
        assert time.monotonic() - start > 3.0
        s.sendall(live)
        assert read_response(s)[0].startswith(b"HTTP/1.1 200")
        s.close()

        # A partial pipelined head behind a slow inference (longer than the timeout): the
        # slow answer arrives, then the head is finished and answered too. The size is
        # calibrated for about 2 s on this machine (the cost grows as n³).
        start = time.monotonic()
        r = httpx.post(srv.url + "/v2/models/slow/infer", json=slow_body(2000), timeout=60)
        assert r.status_code == 200, r.text
        n = min(int(2000 * (2.0 / max(time.monotonic() - start, 0.01)) ** (1 / 3)), 6000)
        body = json.dumps(slow_body(max(n, 2000))).encode()
        slow = (
            b"POST /v2/models/slow/infer HTTP/1.1\r\nhost: x\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )
        start = time.monotonic()
        s = raw_http.send(srv.port, slow + live[:20])
        head, payload = read_response(s)
        elapsed = time.monotonic() - start
        assert head.startswith(b"HTTP/1.1 200"), (head, payload)
        assert json.loads(payload)["outputs"][0]["name"] == "y"
        s.sendall(live[20:])
        assert read_response(s)[0].startswith(b"HTTP/1.1 200")
        s.close()
        assert elapsed > 1.5, f"the slow model took {elapsed:.2f} s: not slow enough"

        watcher.join()
        assert idle_closed and 4.5 <= idle_closed[0] < 7.0, idle_closed
        idle.close()
        assert srv.proc.poll() is None
