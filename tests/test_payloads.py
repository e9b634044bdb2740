"""Payload logging: sampling, failures, redaction, a full queue, rotation, export."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mlserve.config import PayloadConfig, ServerSettings
from mlserve.errors import InvalidInput, MLServeError
from mlserve.governance import payloads as payloads_module
from mlserve.governance.payload_export import export_payloads, parse_time
from mlserve.governance.payloads import PayloadLogger
from mlserve.http.infer import InferHandler
from mlserve.monitoring.profile import build_profile, save_profile
from mlserve.reference_data import read_reference
from mlserve.service import InferenceService

from .conftest import gather_model, linear_model, running_server, wait_for, write_version
from .support import asgi
from .support.metrics import parse, scrape

SECRET = 987654321  # never to be found in a payload file
SECRET_FAILED = 987654322
FEATURES = ["age", "income", "debt", "tenure"]


def secret_model() -> onnx.ModelProto:
    """Inputs ``X`` (FP32, 4 columns) and ``ssn`` (INT64, 1 column, multiplied by zero)."""
    w = np.arange(8, dtype=np.float32).reshape(4, 2) / 10
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["xw"]),
            helper.make_node("Cast", ["ssn"], ["ssn_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["ssn_f", "zero"], ["nothing"]),
            helper.make_node("Add", ["xw", "nothing"], ["y"]),
        ],
        "secret",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("ssn", TensorProto.INT64, ["N", 1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        initializer=[
            helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.ravel()),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def tensor(x: np.ndarray, name: str = "X") -> dict[str, Any]:
    dt = "FP32" if x.dtype == np.float32 else "INT64"
    return {"name": name, "datatype": dt, "shape": list(x.shape), "data": x.ravel().tolist()}


def records(directory: Path, model: str | None = None) -> list[dict[str, Any]]:
    out = []
    for path in sorted(directory.glob("payloads-*.jsonl")):
        for line in path.read_text().splitlines():
            doc = json.loads(line)
            if model is None or doc["model"] == model:
                out.append(doc)
    return out


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One server, every kind of traffic; returns what was sent and where it was logged."""
    root = tmp_path_factory.mktemp("payloads")
    registry = root / "registry"
    payload_dir = root / "payloads"
    write_version(registry, "sampled", 1, linear_model(seed=1))
    (registry / "sampled" / "model.toml").write_text("[payloads]\nsample = 0.3\n")
    for v in (1, 2):
        write_version(registry, "full", v, linear_model(n_features=4, seed=v))
    ref = np.random.default_rng(9).standard_normal((500, 4))
    save_profile(build_profile(ref, FEATURES), registry / "full" / "1" / "reference.json")
    (registry / "full" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n[routing]\nstable = 1\n'
        '[payloads]\nsample = 1.0\nfields = ["inputs", "outputs", "parameters"]\n'
    )
    write_version(registry, "secret", 1, secret_model())
    (registry / "secret" / "model.toml").write_text('[payloads]\nsample = 1.0\nredact = ["ssn"]\n')
    write_version(registry, "quiet", 1, linear_model(seed=3))  # defaults: errors only

    rng = np.random.default_rng(0)
    sent: dict[str, np.ndarray] = {}  # request id → X (version 1 of "full")
    labels: dict[str, list[int]] = {}  # request id → served labels
    out = SimpleNamespace(registry=registry, dir=payload_dir, sent=sent, labels=labels)
    with (
        running_server(registry, "--payload-dir", str(payload_dir), "--max-body-bytes", "200000")
        as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):  # fmt: skip
        x20 = {"inputs": [tensor(np.full((1, 20), 0.5, np.float32))]}
        for _ in range(1000):
            assert c.post("/v2/models/sampled/infer", json=x20).status_code == 200
        for i in range(40):
            x = rng.standard_normal((3 if i % 10 == 7 else 1, 4)).astype(np.float32)
            rid = f"req-{i}"
            body = {"id": rid, "inputs": [tensor(x)], "parameters": {"note": "n" + str(i)}}
            r = c.post("/v2/models/full/infer", json=body)
            assert r.status_code == 200 and r.headers["mlserve-model-version"] == "1"
            sent[rid] = x
            labels[rid] = next(o["data"] for o in r.json()["outputs"] if o["name"] == "label")
            if i == 19:
                time.sleep(0.01)
                out.t_mid = time.time()
                time.sleep(0.01)
        for i in range(5):
            x = rng.standard_normal((1, 4)).astype(np.float32)
            r = c.post(
                "/v2/models/full/versions/2/infer", json={"id": f"v2-{i}", "inputs": [tensor(x)]}
            )
            assert r.status_code == 200
        bad = {"id": "bad-shape", "inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 3],
                                             "data": [1.25, 2.5, 3.75]}]}  # fmt: skip
        assert c.post("/v2/models/full/infer", json=bad).status_code == 400
        r = c.post("/v2/models/full/infer", content=b'{"inputs": [')
        assert r.status_code == 400
        assert (
            c.post("/v2/models/full/infer", content=b"[" + b"0," * 150_000 + b"0]").status_code
            == 413
        )
        for _ in range(5):
            body = {"inputs": [tensor(np.ones((1, 4), np.float32)),
                               tensor(np.array([[SECRET]], np.int64), "ssn")]}  # fmt: skip
            assert c.post("/v2/models/secret/infer", json=body).status_code == 200
        body = {"inputs": [tensor(np.ones((1, 3), np.float32)),
                           tensor(np.array([[SECRET_FAILED]], np.int64), "ssn")]}  # fmt: skip
        assert c.post("/v2/models/secret/infer", json=body).status_code == 400
        for _ in range(10):
            assert c.post("/v2/models/quiet/infer", json=x20).status_code == 200
        assert c.post("/v2/models/quiet/infer", json=bad).status_code == 400
        # The writer takes the queue in order, a few times a second: once the last record
        # offered (quiet's failure) is counted, every earlier one has been written.
        metrics = wait_for(
            lambda: (
                (m := parse(c.get("/metrics").text)).value(
                    "mlserve_payloads_logged_total", 0.0, model="quiet"
                )
                == 1
                and m
            ),
            10,
            what="quiet's failure to be logged, the last record offered",
        )
        out.metrics = metrics.text
        out.lines_before_stop = len(records(payload_dir))
    return out


@pytest.mark.slow
def test_sampled_rate_is_within_binomial_tolerance(logged: SimpleNamespace) -> None:
    k = len(records(logged.dir, "sampled"))
    n, p = 1000, 0.3
    assert abs(k - n * p) <= 4 * math.sqrt(n * p * (1 - p)), k
    assert parse(logged.metrics).value("mlserve_payloads_logged_total", model="sampled") == k


def test_a_successful_record_joins_request_response_and_timings(logged: SimpleNamespace) -> None:
    docs = {d["id"]: d for d in records(logged.dir, "full") if d["status"] == 200}
    assert len(docs) == 45
    doc = docs["req-7"]  # a three-row request
    assert doc["model"] == "full" and doc["version"] == "1" and doc["role"] == "stable"
    stamp = datetime.fromisoformat(doc["timestamp"].replace("Z", "+00:00")).timestamp()
    assert abs(stamp - doc["unix"]) < 1e-3 and abs(doc["unix"] - time.time()) < 600
    assert doc["parameters"] == {"note": "n7"}
    [x] = doc["inputs"]
    assert (x["name"], x["datatype"], x["shape"]) == ("X", "FP32", [3, 4])
    assert np.array_equal(np.array(x["data"], np.float32), logged.sent["req-7"].ravel())
    outputs = {o["name"]: o for o in doc["outputs"]}
    assert outputs["label"]["data"] == logged.labels["req-7"]
    assert outputs["scores"]["shape"] == [3, 3] and len(outputs["scores"]["data"]) == 9
    t = doc["timing_ms"]
    assert 0 <= t["infer"] <= t["total"] and t["queue"] >= 0 and t["total"] < 1000
    assert docs["v2-0"]["role"] == "pinned" and docs["v2-0"]["version"] == "2"
    assert "error" not in doc


def test_failures_are_logged_with_status_and_error(logged: SimpleNamespace) -> None:
    failed = [d for d in records(logged.dir, "full") if d["status"] != 200]
    by_status: dict[int, list[dict[str, Any]]] = {}
    for d in failed:
        by_status.setdefault(d["status"], []).append(d)
    assert sorted(by_status) == [400, 413] and len(by_status[400]) == 2
    shape = next(d for d in by_status[400] if d["id"] == "bad-shape")
    assert shape["code"] == "invalid_input" and "expects shape" in shape["error"]
    assert shape["inputs"] == [
        {"name": "X", "datatype": "FP32", "shape": [1, 3], "data": [1.25, 2.5, 3.75]}
    ]
    assert "outputs" not in shape and "timing_ms" not in shape
    malformed = next(d for d in by_status[400] if d["id"] is None)
    assert "malformed JSON" in malformed["error"] and "inputs" not in malformed
    [too_large] = by_status[413]
    assert too_large["code"] == "payload_too_large" and "inputs" not in too_large
    # A model with the defaults (sample 0, error_sample 1) logs its failures only.
    quiet = records(logged.dir, "quiet")
    assert [d["status"] for d in quiet] == [400]


def test_redacted_inputs_never_reach_disk(logged: SimpleNamespace) -> None:
    raw = b"".join(p.read_bytes() for p in logged.dir.glob("payloads-*.jsonl"))
    assert str(SECRET).encode() not in raw and str(SECRET_FAILED).encode() not in raw
    docs = records(logged.dir, "secret")
    assert [d["status"] for d in docs] == [200] * 5 + [400]
    for d in docs:
        inputs = {t["name"]: t for t in d["inputs"]}
        assert inputs["ssn"]["data"] == "[redacted]" and inputs["ssn"]["shape"] == [1, 1]
        assert isinstance(inputs["X"]["data"], list)  # the other input is kept


def test_metrics_count_what_was_written(logged: SimpleNamespace) -> None:
    text = logged.metrics
    full = records(logged.dir, "full")
    assert parse(text).value("mlserve_payloads_logged_total", model="full") == len(full)
    assert parse(text).value("mlserve_payloads_dropped_total", model="full", reason="queue") == 0
    assert parse(text).value("mlserve_payloads_dropped_total", model="full", reason="error") == 0
    raw = [
        line
        for path in logged.dir.glob("payloads-*.jsonl")
        for line in path.read_bytes().splitlines(keepends=True)
        if json.loads(line)["model"] == "full"
    ]
    assert parse(text).value("mlserve_payloads_bytes_total", model="full") == sum(map(len, raw))
    assert "# TYPE mlserve_payloads_logged_total counter" in text
    # Stopping the server wrote nothing more (everything had been flushed) and lost nothing.
    assert len(records(logged.dir)) == logged.lines_before_stop


def test_export_round_trips_through_read_reference(logged: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "eval.npz"
    summary = export_payloads(logged.dir, "full", version=1, out=out, registry=logged.registry)
    X, names = read_reference(out)
    assert names == FEATURES
    expected = np.concatenate([logged.sent[f"req-{i}"] for i in range(40)])
    assert X.dtype == np.float32 and np.array_equal(X, expected)
    with np.load(out) as npz:
        ids = npz["request_id"].tolist()
        assert ids[:8] == [f"req-{i}" for i in range(7)] + ["req-7"]
        assert ids[8:10] == ["req-7", "req-7"] and npz["row"][7:10].tolist() == [0, 1, 2]
        assert (np.diff(npz["timestamp"]) >= 0).all() and set(npz["version"].tolist()) == {1}
        assert "y" not in npz.files
    assert summary["rows"] == len(expected) and summary["failed_skipped"] == 3
    # All versions; the time range keeps the requests after the middle only.
    both = export_payloads(logged.dir, "full", out=tmp_path / "all.npz")
    assert both["versions"] == [1, 2] and both["rows"] == len(expected) + 5
    late = export_payloads(
        logged.dir, "full", version=1, since=logged.t_mid, out=tmp_path / "late.npz"
    )
    with np.load(tmp_path / "late.npz") as npz:
        assert npz["request_id"][0] == "req-20" and late["requests"] == 20
    iso = datetime.fromtimestamp(logged.t_mid).astimezone().isoformat()
    early = export_payloads(logged.dir, "full", version=1, until=iso, out=tmp_path / "e.npz")
    assert early["requests"] == 20


def test_export_joins_labels_from_csv(logged: SimpleNamespace, tmp_path: Path) -> None:
    csv_path = tmp_path / "labels.csv"
    lines = ["id,label,row,group"]
    for i in range(40):
        if i == 3:
            continue  # no label: dropped and counted
        if i % 10 == 7:  # three rows: labelled per row, except the last one
            lines += [f"req-{i},{r + 10},{r},g{r}" for r in range(2)]
        else:
            lines.append(f"req-{i},{i % 2},,g")
    csv_path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "labelled.npz"
    summary = export_payloads(logged.dir, "full", version=1, out=out, labels=csv_path)
    with np.load(out) as npz:
        assert "req-3" not in npz["request_id"].tolist()
        keys = zip(npz["request_id"].tolist(), npz["row"].tolist(), strict=True)
        y = dict(zip(keys, npz["y"].tolist(), strict=True))
        assert y[("req-0", 0)] == 0 and y[("req-1", 0)] == 1
        assert y[("req-7", 0)] == 10 and y[("req-7", 1)] == 11 and ("req-7", 2) not in y
        assert npz["y"].dtype == np.int64 and npz["group"].tolist()[0] == "g"
        assert npz["X"].shape[0] == len(npz["y"]) == len(npz["group"])
    assert summary["unlabeled_rows"] == 1 + 4  # req-3, and the last row of 4 three-row requests


def test_export_can_use_a_served_output_as_labels(logged: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "pseudo.npz"
    export_payloads(logged.dir, "full", version=1, out=out, label_output="label")
    with np.load(out) as npz:
        expected = [v for i in range(40) for v in logged.labels[f"req-{i}"]]
        assert npz["y"].tolist() == expected
    with pytest.raises(ValueError, match="one value per row"):
        export_payloads(logged.dir, "full", version=1, out=out, label_output="scores")


def test_redacted_inputs_cannot_be_exported(logged: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="choose the feature input"):
        export_payloads(logged.dir, "secret", out=tmp_path / "s.npz")
    with pytest.raises(ValueError, match="redacted"):
        export_payloads(logged.dir, "secret", out=tmp_path / "s.npz", input_name="ssn")
    summary = export_payloads(logged.dir, "secret", out=tmp_path / "s.npz", input_name="X")
    assert summary["rows"] == 5


def test_export_to_parquet(logged: SimpleNamespace, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "eval.parquet"
    export_payloads(
        logged.dir, "full", version=1, out=out, registry=logged.registry, label_output="label"
    )
    table = pq.read_table(out)
    assert table.column_names == [*FEATURES, "y", "request_id", "row", "timestamp", "version"]
    assert table.num_rows == sum(len(x) for x in logged.sent.values())
    first = logged.sent["req-0"][0]
    assert [table.column(f)[0].as_py() for f in FEATURES] == pytest.approx(first.tolist())


def test_export_command(logged: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "cli.npz"
    cmd = [sys.executable, "-m", "mlserve", "payloads", "export", "--dir", str(logged.dir)]
    ok = subprocess.run(
        [*cmd, "--model", "full", "--version", "1", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "wrote" in ok.stdout and read_reference(out)[0].shape == (sum(
        len(x) for x in logged.sent.values()), 4)  # fmt: skip
    bad = subprocess.run(
        [*cmd, "--model", "nope", "--out", str(out)], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "no successful requests of nope" in bad.stderr


def test_parse_time() -> None:
    assert parse_time("1700000000.5") == 1700000000.5
    assert parse_time("2023-11-14T22:13:20Z") == 1700000000.0
    assert parse_time("2023-11-14T22:13:20") == 1700000000.0  # naive: UTC
    assert parse_time("2023-11-15T00:13:20+02:00") == 1700000000.0
    with pytest.raises(ValueError, match="neither unix seconds nor"):
        parse_time("yesterday")


# ---------------------------------------------------------------------------------------------
# the logger alone


def fake_result(i: int, rows: int = 1) -> SimpleNamespace:
    x = np.full((rows, 4), float(i), np.float32)
    return SimpleNamespace(
        role="stable",
        body={"id": f"r{i}"},
        request={"id": f"r{i}"},
        feeds={"X": x},
        names=["y"],
        outputs=[np.array([i], np.int64)],
        queue_s=0.0,
        infer_s=1e-5,
    )


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    logger = PayloadLogger(tmp_path, max_queue=2)
    sink = logger.sink("m", 1, PayloadConfig(sample=1.0))
    assert sink is not None
    entered, release = threading.Event(), threading.Event()
    line = logger._line

    def slow_line(*item: Any) -> bytes:  # the writer stalls (a slow disk, say)
        entered.set()
        release.wait(10)
        return line(*item)

    logger._line = slow_line  # type: ignore[method-assign]
    try:
        sink.success(fake_result(0), 0.001)  # taken by the writer, which then blocks
        assert entered.wait(5)
        slowest = 0.0
        for i in range(1, 53):
            start = time.perf_counter()
            sink.success(fake_result(i), 0.001)
            slowest = max(slowest, time.perf_counter() - start)
        assert slowest < 0.005  # never waits for the writer
        assert sink.counts.dropped == 50  # two fit in the queue
    finally:
        release.set()
        logger.close()
    assert sink.counts.logged == 3 and sink.counts.errors == 0
    assert [d["id"] for d in records(tmp_path)] == ["r0", "r1", "r2"]
    state = logger.state()["payloads"]["m"]
    assert state["dropped"] == 50 and state["logged"] == 3


def test_rotation_keeps_at_most_backups_plus_one_files(tmp_path: Path) -> None:
    def run(first: int, count: int) -> None:
        logger = PayloadLogger(tmp_path, max_bytes=4096, backups=2)
        sink = logger.sink("m", 1, PayloadConfig(sample=1.0))
        assert sink is not None
        for i in range(first, first + count):
            sink.success(fake_result(i), 0.001)
        logger.close()
        assert sink.counts.logged == count and sink.counts.dropped == 0

    run(0, 300)
    files = sorted(tmp_path.glob("payloads-*.jsonl"))
    assert len(files) == 3 and all(f.stat().st_size <= 4096 for f in files)
    ids = [int(d["id"][1:]) for d in records(tmp_path)]
    assert ids == list(range(ids[0], 300)) and ids[0] > 0  # the newest records, in order
    # A restart with the same host and pid (a container) numbers on and keeps the limit.
    run(300, 100)
    again = sorted(tmp_path.glob("payloads-*.jsonl"))
    assert len(again) == 3 and again[0].name > files[-1].name
    assert int(records(tmp_path)[-1]["id"][1:]) == 399


def test_no_payload_dir_means_nothing_is_logged_and_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = tmp_path / "registry"
    for v in (1, 2):
        write_version(registry, "m", v, linear_model(seed=v))
    (registry / "m" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n[payloads]\nsample = 1.0\n'
    )
    service = InferenceService(ServerSettings(registry=registry, monitoring="off"))
    try:
        with caplog.at_level(logging.WARNING, logger="mlserve"):
            service.store.load_all()
        warnings = [r for r in caplog.records if "no payload directory" in r.getMessage()]
        assert len(warnings) == 1 and "m:" in warnings[0].getMessage()
        assert service.payloads is None
        for v in (1, 2):
            endpoint = service.store.resolve("m", v)
            assert endpoint.payloads is None and endpoint.observed is False
    finally:
        service.close()
    assert not list(tmp_path.rglob("payloads-*"))


@pytest.mark.slow
def test_a_tiny_queue_under_concurrency_counts_every_request(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    write_version(registry, "m", 1, linear_model(seed=1))
    (registry / "m" / "model.toml").write_text("[payloads]\nsample = 1.0\n")
    payload_dir = tmp_path / "payloads"
    body = {"inputs": [tensor(np.full((1, 20), 0.25, np.float32))]}
    n = 400
    with running_server(
        registry, "--payload-dir", str(payload_dir), "--payload-queue", "1"
    ) as srv, httpx.Client(base_url=srv.url, timeout=10,
                           limits=httpx.Limits(max_connections=16)) as c:  # fmt: skip

        def hit(_: int) -> int:
            return c.post("/v2/models/m/infer", json=body).status_code

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(hit, range(n)))
        assert codes == [200] * n

        def accounted() -> bool:
            m = parse(c.get("/metrics").text)
            logged = m.value("mlserve_payloads_logged_total", model="m")
            dropped = m.value("mlserve_payloads_dropped_total", model="m", reason="queue")
            return logged + dropped == n and len(records(payload_dir)) == logged

        wait_for(accounted, 10, what=f"all {n} requests logged or dropped, and written")


@pytest.mark.slow
def test_worker_processes_write_their_own_files_and_metrics_add_up(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    write_version(registry, "m", 1, linear_model(seed=1))
    (registry / "m" / "model.toml").write_text("[payloads]\nsample = 1.0\n")
    payload_dir = tmp_path / "payloads"
    body = {"inputs": [tensor(np.full((1, 20), 0.25, np.float32))]}
    n = 60
    with running_server(registry, "--payload-dir", str(payload_dir), "--workers", "2") as srv:
        for _ in range(n):  # a new connection each time: the kernel spreads them over workers
            assert httpx.post(srv.url + "/v2/models/m/infer", json=body).status_code == 200
        wait_for(  # each worker publishes its counters once a second
            lambda: scrape(srv.url).value("mlserve_payloads_logged_total", 0.0, model="m") == n,
            15,
            what=f"{n} payload records counted over both workers",
        )
    files = sorted(payload_dir.glob("payloads-*.jsonl"))
    pids = {f.name.rsplit("-", 2)[1] for f in files}
    assert len(pids) == len(files)  # one file per process, never shared
    assert len(records(payload_dir)) == n


# ---------------------------------------------------------------------------------------------
# failure records carry only what is safe and bounded (in-process: no server needed)


@contextlib.contextmanager
def in_process(
    tmp_path: Path, models: dict[str, tuple[onnx.ModelProto, str]], versions: int = 1
) -> Iterator[InferenceService]:
    """A service over ``models`` (name → (model, model.toml)) logging to ``tmp_path/payloads``;
    closing it drains the payload queue."""
    registry = tmp_path / "registry"
    for name, (proto, toml) in models.items():
        for v in range(1, versions + 1):
            write_version(registry, name, v, proto)
        (registry / name / "model.toml").write_text(toml)
    settings = ServerSettings(
        registry=registry, monitoring="off", payload_dir=str(tmp_path / "payloads")
    )
    service = InferenceService(settings)
    try:
        service.store.load_all()
        yield service
    finally:
        service.close()


def failing(call: Awaitable[Any]) -> MLServeError:
    async def main() -> MLServeError:
        try:
            await call
        except MLServeError as exc:
            return exc
        raise AssertionError("the request succeeded")

    return asyncio.run(main())


def test_a_sensitive_tensor_under_a_wrong_name_is_never_written(tmp_path: Path) -> None:
    toml = '[payloads]\nredact = ["ssn"]\n'
    secret = {"datatype": "INT64", "shape": [1, 1], "data": [SECRET_FAILED]}
    x = tensor(np.ones((1, 4), np.float32))
    names: list[Any] = ["x", "ssn ", "SSN", ["ssn"], {"n": 1}, 7, "s" * 1000]
    with in_process(tmp_path, {"secret": (secret_model(), toml)}) as service:
        for name in names:
            request = {"id": "r", "inputs": [x, {"name": name, **secret}]}
            failing(service.infer("secret", None, request))
        sink = service.store.resolve("secret", None).payloads
    raw = b"".join(p.read_bytes() for p in (tmp_path / "payloads").glob("payloads-*.jsonl"))
    assert str(SECRET_FAILED).encode() not in raw
    assert sink is not None and sink.counts.errors == 0  # a non-string name drops nothing
    docs = records(tmp_path / "payloads", "secret")
    assert len(docs) == len(names)
    for doc, name in zip(docs, names, strict=True):
        known, other = doc["inputs"]
        assert known == x  # an input of the model, not redacted: as sent
        assert other["data"] == "[omitted]" and other["shape"] == [1, 1]
        if isinstance(name, str):
            assert other["name"] == name[:64]
        else:
            assert other["name"] == "[omitted]"


def test_runtime_error_text_is_withheld_when_the_model_redacts_an_input(
    tmp_path: Path,
) -> None:
    secret = 987654
    models = {
        "hidden": (gather_model(), '[payloads]\nredact = ["idx"]\n'),
        "open": (gather_model(), "[payloads]\n"),
    }
    request = {"inputs": [{"name": "idx", "datatype": "INT64", "shape": [1], "data": [secret]}]}
    with in_process(tmp_path, models) as service:
        for model in models:
            exc = failing(service.infer(model, None, request))
            assert isinstance(exc, InvalidInput) and exc.reason == "runtime"
            assert str(secret) in exc.message  # the client is told (its own values)
    hidden = records(tmp_path / "payloads", "hidden")
    assert [d["error"] for d in hidden] == [
        "the model rejected the input (message withheld: the request carries redacted inputs)"
    ]
    assert hidden[0]["inputs"][0]["data"] == "[redacted]"
    raw = b"".join(p.read_bytes() for p in (tmp_path / "payloads").glob("payloads-*.jsonl"))
    assert raw.count(str(secret).encode()) == 2  # the open model's data and its error text
    [opened] = records(tmp_path / "payloads", "open")
    assert f"idx={secret}" in opened["error"]


ALL = '[versions]\npolicy = "all"\n'


def test_a_redact_name_the_model_lacks_is_warned_about_at_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models = {
        "typo": (secret_model(), f'{ALL}[payloads]\nredact = ["snn", "y"]\n'),
        "right": (secret_model(), f'{ALL}[payloads]\nredact = ["ssn", "y"]\n'),
    }
    with (
        caplog.at_level(logging.WARNING, logger="mlserve"),
        in_process(tmp_path, models, versions=2),
    ):
        pass
    warnings = [r.getMessage() for r in caplog.records if "redact" in r.getMessage()]
    assert len(warnings) == 2  # once per version
    assert {w.split(":")[0] for w in warnings} == {"typo version 1", "typo version 2"}
    assert all("redact names ['snn']," in w for w in warnings)  # "y" is an output


def test_failure_records_cap_every_raw_field(tmp_path: Path) -> None:
    toml = '[payloads]\nfields = ["inputs", "parameters"]\n'
    good = tensor(np.ones((1, 20), np.float32))
    requests: list[dict[str, Any]] = [
        {"id": "str-data", "inputs": [{**good, "data": "9" * 2_000_000}]},
        {"id": "long-shape", "inputs": [{**good, "shape": [1] * 300_000}]},
        {"id": "long-datatype", "inputs": [{**good, "datatype": "F" * 100_000}]},
        {"id": "obj-shape", "inputs": [{**good, "shape": [{"a": "b" * 100_000}, 20]}]},
        {"id": "big-params", "inputs": [good, good], "parameters": {"p": "q" * 100_000}},
        {"id": "small-params", "inputs": [good, good], "parameters": {"p": [1, 2]}},
        {"id": "i" * 100_000, "inputs": [good, good]},
        {"id": "many", "inputs": [good] + [{**good, "name": f"t{i}"} for i in range(200)]},
        {"id": "strings", "inputs": [{**good, "data": ["z" * 100_000] * 20}]},
        {"id": "nested", "inputs": [{**good, "data": [[[]] * 10] * 10_000}]},
    ]
    with in_process(tmp_path, {"m": (linear_model(), toml)}) as service:
        for request in requests:
            failing(service.infer("m", None, request))
    lines = [
        line
        for path in (tmp_path / "payloads").glob("payloads-*.jsonl")
        for line in path.read_bytes().splitlines()
    ]
    assert len(lines) == len(requests) and max(map(len, lines)) < 20_000
    docs = {d["id"][:8]: d for d in map(json.loads, lines)}
    assert docs["str-data"]["inputs"][0]["data"] == "[omitted]"
    assert docs["long-sha"]["inputs"][0]["shape"] == "[omitted]"
    assert docs["long-dat"]["inputs"][0]["datatype"] == "F" * 256 + "…"
    assert docs["obj-shap"]["inputs"][0]["shape"] == ["[omitted]", 20]
    assert docs["big-para"]["parameters"] == "[omitted]"
    assert docs["small-pa"]["parameters"] == {"p": [1, 2]}
    assert docs["i" * 8]["id"] == "i" * 256 + "…"
    many = docs["many"]
    assert len(many["inputs"]) == 64 and many["inputs_omitted"] == 201 - 64
    assert docs["strings"]["inputs"][0]["data"] == ["z" * 256 + "…"] * 20
    assert docs["nested"]["inputs"][0]["data"] == "[omitted]"  # 110,000 items
    assert all(len(d["error"]) <= 1025 for d in docs.values())


def test_a_failed_request_counts_its_body_against_the_queue_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the HTTP handler: a failure's record holds its parsed document until the
    writer runs, so the body's length counts against MAX_QUEUED_BYTES."""
    bad = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 20], "data": [0.5] * 200_000}]}
    body = json.dumps(bad).encode()
    monkeypatch.setattr(payloads_module, "MAX_QUEUED_BYTES", int(len(body) * 2.5))
    sent: list[asgi.Response] = []

    async def post() -> None:
        sent.append(
            await asgi.request(
                handler,
                "POST",
                "/v2/models/m/infer",
                headers=[(b"content-length", str(len(body)).encode())],
                body=body,
            )
        )

    with in_process(tmp_path, {"m": (linear_model(), "[payloads]\n")}) as service:
        logger = service.payloads
        assert logger is not None
        handler = InferHandler(service, 1 << 26)
        entered, release = threading.Event(), threading.Event()
        line = logger._line

        def slow_line(*item: Any) -> bytes:  # the writer stalls on the first record
            entered.set()
            release.wait(10)
            return line(*item)

        logger._line = slow_line  # type: ignore[method-assign]
        try:
            asyncio.run(post())
            assert entered.wait(5)
            for _ in range(5):
                asyncio.run(post())
            queued = logger._bytes_in - logger._bytes_out
        finally:
            release.set()
        sink = service.store.resolve("m", None).payloads
        assert sink is not None
    assert [r.status for r in sent] == [400] * 6
    assert len(body) * 2 <= queued <= len(body) * 2.5
    assert sink.counts.dropped == 3 and sink.counts.logged == 3


def test_a_raw_body_that_does_not_fit_the_input_is_logged(tmp_path: Path) -> None:
    with in_process(tmp_path, {"m": (linear_model(), "[payloads]\n")}) as service:
        exc = failing(service.infer_raw("m", None, memoryview(b"\0" * 7)))
        assert isinstance(exc, InvalidInput) and exc.reason == "binary"
    [doc] = records(tmp_path / "payloads", "m")
    assert doc["status"] == 400 and "80-byte rows" in doc["error"] and "inputs" not in doc


# ---------------------------------------------------------------------------------------------
# export: labels and time bounds


def write_logged(directory: Path, n: int) -> None:
    """``n`` one-row successful records ``r0``… of model ``m`` at unix 1000, 1001, …"""
    directory.mkdir(parents=True, exist_ok=True)
    x = {"name": "X", "datatype": "FP32", "shape": [1, 2]}
    docs = [
        {
            "model": "m",
            "version": "1",
            "unix": 1000.0 + i,
            "id": f"r{i}",
            "status": 200,
            "timestamp": f"t{i}",
            "inputs": [{**x, "data": [i, -i]}],
        }
        for i in range(n)
    ]
    lines = [json.dumps(d) for d in docs]
    (directory / "payloads-h-1-000000.jsonl").write_text("\n".join(lines) + "\n")


def test_export_drops_rows_whose_label_cell_is_blank(tmp_path: Path) -> None:
    write_logged(tmp_path / "p", 4)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\nr0,1\nr1,0\nr2,\nr3,1\n")  # r2 is not labelled yet
    out = tmp_path / "eval.npz"
    summary = export_payloads(tmp_path / "p", "m", out=out, labels=labels)
    with np.load(out) as npz:
        assert npz["y"].dtype == np.int64 and npz["y"].tolist() == [1, 0, 1]
        assert npz["request_id"].tolist() == ["r0", "r1", "r3"]
    assert summary["blank_labels"] == 1 and summary["unlabeled_rows"] == 1
    labels.write_text("id,label\nr0,cat\nr1,\nr2,dog\n")  # all text: fine
    export_payloads(tmp_path / "p", "m", out=out, labels=labels)
    with np.load(out) as npz:
        assert npz["y"].tolist() == ["cat", "dog"]


def test_export_refuses_mixed_numeric_and_text_labels(tmp_path: Path) -> None:
    write_logged(tmp_path / "p", 4)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\nr0,1\nr1,yes\nr2,0\n")
    with pytest.raises(ValueError, match=r"mix numbers \(line 2: 1\) and text \(line 3: 'yes'\)"):
        export_payloads(tmp_path / "p", "m", out=tmp_path / "eval.npz", labels=labels)


def test_export_reads_labels_with_a_byte_order_mark(tmp_path: Path) -> None:
    write_logged(tmp_path / "p", 2)
    labels = tmp_path / "labels.csv"
    labels.write_bytes("id,label\r\nr0,1\r\nr1,0\r\n".encode("utf-8-sig"))  # Excel "CSV UTF-8"
    out = tmp_path / "eval.npz"
    export_payloads(tmp_path / "p", "m", out=out, labels=labels)
    with np.load(out) as npz:
        assert npz["y"].tolist() == [1, 0]


def test_export_refuses_non_finite_and_reversed_time_bounds(tmp_path: Path) -> None:
    for bad in ("nan", " NaN ", "inf", "-inf", float("nan"), math.inf):
        with pytest.raises(ValueError, match="not a finite time"):
            parse_time(bad)
    write_logged(tmp_path / "p", 4)
    out = tmp_path / "eval.npz"
    with pytest.raises(ValueError, match="--since: 'nan' is not a finite time"):
        export_payloads(tmp_path / "p", "m", since="nan", out=out)
    with pytest.raises(ValueError, match="--until: "):
        export_payloads(tmp_path / "p", "m", until="inf", out=out)
    with pytest.raises(ValueError, match="--since is after --until"):
        export_payloads(tmp_path / "p", "m", since=1002, until=1001, out=out)
    assert export_payloads(tmp_path / "p", "m", since=1001, until=1003, out=out)["rows"] == 2


@pytest.mark.slow
def test_production_traffic_back_into_the_gate(tmp_path: Path) -> None:
    """The loop the issue asks for: serve a published version with payload logging, join
    labels that arrive later by request id, export, and validate the next version on it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score

    from mlserve.governance.gate import validate_version
    from mlserve.governance.publish import publish

    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 4)).astype(np.float32)
    group = rng.integers(0, 2, 400)
    y = (X[:, 0] + 0.3 * rng.normal(size=400) > 0).astype(np.int64)
    ref = tmp_path / "ref.npz"
    np.savez(ref, X=X[:200])
    registry = tmp_path / "registry"
    est = LogisticRegression().fit(X[:200], y[:200])
    publish(registry, "loop", reference=ref, estimator=est)
    (registry / "loop" / "model.toml").write_text(
        "[payloads]\nsample = 1.0\n[gate]\nmin_accuracy = 0.7\n"
        "max_demographic_parity_difference = 0.5\n"
    )
    payload_dir = tmp_path / "payloads"
    with running_server(registry, "--payload-dir", str(payload_dir)) as srv:
        for i in range(200, 400):  # one row per request, each with its id
            body = {"id": f"r{i}", "inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4],
                                               "data": X[i].tolist()}]}  # fmt: skip
            assert httpx.post(srv.url + "/v2/models/loop/infer", json=body).status_code == 200
    labels = tmp_path / "labels.csv"  # ground truth, known later
    labels.write_text(
        "id,label,group\n" + "".join(f"r{i},{y[i]},{group[i]}\n" for i in range(200, 400))
    )
    out = tmp_path / "eval.npz"
    summary = export_payloads(payload_dir, "loop", out=out, labels=labels, registry=registry)
    assert summary["rows"] == 200
    report = validate_version(registry, "loop", 1, out, write=False)
    expected = accuracy_score(y[200:], est.predict(X[200:]))
    assert report.metrics["accuracy"] == pytest.approx(expected, abs=1e-12)
    assert report.passed, report.table()
    assert report.evaluation["rows"] == 200 and report.evaluation["groups"] is True
