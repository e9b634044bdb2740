"""Payload logging: sampling, failures, redaction, a full queue, rotation, export."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import threading
import time
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
from mlserve.governance.payloads import PayloadLogger, export_payloads, parse_time
from mlserve.monitoring.profile import build_profile, save_profile
from mlserve.profiling import read_reference
from mlserve.service import InferenceService

from .conftest import linear_model, running_server, write_version

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


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a family's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


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
        deadline = time.monotonic() + 10
        while True:
            text = c.get("/metrics").text
            if metric(text, "mlserve_payloads_logged_total", model="quiet") == 1:
                break
            assert time.monotonic() < deadline, "payload records were not written"
            time.sleep(0.1)
        out.metrics = text
        out.lines_before_stop = len(records(payload_dir))
    return out


def test_sampled_rate_is_within_binomial_tolerance(logged: SimpleNamespace) -> None:
    k = len(records(logged.dir, "sampled"))
    n, p = 1000, 0.3
    assert abs(k - n * p) <= 4 * math.sqrt(n * p * (1 - p)), k
    assert metric(logged.metrics, "mlserve_payloads_logged_total", model="sampled") == k


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
    assert metric(text, "mlserve_payloads_logged_total", model="full") == len(full)
    assert metric(text, "mlserve_payloads_dropped_total", model="full", reason="queue") == 0
    assert metric(text, "mlserve_payloads_dropped_total", model="full", reason="error") == 0
    raw = [
        line
        for path in logged.dir.glob("payloads-*.jsonl")
        for line in path.read_bytes().splitlines(keepends=True)
        if json.loads(line)["model"] == "full"
    ]
    assert metric(text, "mlserve_payloads_bytes_total", model="full") == sum(map(len, raw))
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
        deadline = time.monotonic() + 10
        while True:
            text = c.get("/metrics").text
            logged = metric(text, "mlserve_payloads_logged_total", model="m")
            dropped = metric(text, "mlserve_payloads_dropped_total", model="m", reason="queue")
            if logged + dropped == n and len(records(payload_dir)) == logged:
                break
            assert time.monotonic() < deadline, (logged, dropped)
            time.sleep(0.1)


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
        deadline = time.monotonic() + 15
        while True:  # each worker publishes its counters once a second
            text = httpx.get(srv.url + "/metrics").text
            if metric(text, "mlserve_payloads_logged_total", model="m") == n:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
    files = sorted(payload_dir.glob("payloads-*.jsonl"))
    pids = {f.name.rsplit("-", 2)[1] for f in files}
    assert len(pids) == len(files)  # one file per process, never shared
    assert len(records(payload_dir)) == n
