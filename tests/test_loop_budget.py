"""The event loop is never held: hostile bodies, big legitimate requests and scrapes of many
models, each against a real server while a probe measures how late the loop answers.

The probe is a separate process on its own keep-alive connection sending
``GET /v2/health/live`` every 5 ms and keeping each answer's latency: a request that arrives
while the loop is held waits for the whole rest of the hold, so the worst latency is the
worst hold (within the 5 ms between probes) plus ~0.3 ms of its own. It is a process, not a
thread, so the test's own work with 60 MB bodies cannot delay it.
``mlserve_event_loop_delay_seconds`` is not used: it is the last 10 ms check's lateness,
overwritten by the next check, and a scrape reading it waits behind the very stall it should
see, so it misses most stalls.

Each case runs three times (five against the tighter ``OFF_LOOP_MS``) and the best trial
must be within its budget (``held``): a hold the server does on every such request shows in
every trial, while other test runs descheduling the server or the probe on these two shared
cores rarely hit all of them.
``BUDGET_MS`` is the 20 ms target plus a margin for that noise; the probe's worst with
nothing else sent is printed beside each case (``pytest -s``). Before this change the same
cases held the loop for seconds (docs/RELIABILITY.md, "The event loop is never held").
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import orjson
import pytest
from onnx import TensorProto, helper

from mlserve.config import ServerSettings
from mlserve.http.app import create_app
from mlserve.runtime.binary import MAX_BYTES_ELEMENTS

from .conftest import ServerProcess, running_server

BUDGET_MS = 20.0 + 30.0  # target + this machine's own scheduling noise (see the module doc)
# The largest request the model takes (max_rows 10,000 x 20 features, 2 MB of JSON numbers
# and a 2 MB id), parsed and decoded off the loop: the loop waits for one step at most,
# orjson's parse, which holds the GIL (best of five trials 13-15 ms under load), instead of
# the whole request (24-37 ms on a quiet machine, best of five 25-49 ms under load). The
# 20 ms target plus one probe interval: BUDGET_MS's margin would let the inline request pass.
OFF_LOOP_MS = 20.0 + 5.0
PROBE_EVERY_S = 0.005
FEATURES = 20


_PROBE = r"""
import http.client, json, select, sys, time
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=60)
latencies, statuses, due, first = [], set(), time.perf_counter(), True
while True:
    start = time.perf_counter()
    conn.request("GET", "/v2/health/live")
    response = conn.getresponse()
    response.read()
    latencies.append(time.perf_counter() - start)
    statuses.add(response.status)
    if first:
        print("ready", flush=True)
        first = False
    due = max(due + float(sys.argv[2]), time.perf_counter())
    if select.select([sys.stdin], [], [], max(0.0, due - time.perf_counter()))[0]:
        break
print(json.dumps({"latencies": latencies, "statuses": sorted(statuses)}), flush=True)
"""


class Probe:
    """``GET /v2/health/live`` every 5 ms on its own connection, from its own process (so
    that the test's own work on big bodies cannot delay it); the worst latency."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self.statuses: set[int] = set()

    def __enter__(self) -> Probe:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _PROBE, str(self.port), str(PROBE_EVERY_S)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        assert self._proc.stdout.readline().strip() == "ready"
        return self

    def __exit__(self, *exc: Any) -> None:
        time.sleep(0.05)  # a few probes after the case, so a hold at its very end shows
        out, _ = self._proc.communicate("stop\n", timeout=60)
        result = orjson.loads(out)
        self.latencies = result["latencies"]
        self.statuses = set(result["statuses"])

    @property
    def worst_ms(self) -> float:
        return max(self.latencies) * 1e3


def baseline(port: int, seconds: float = 1.0) -> float:
    """The probe's worst latency with nothing else sent: this machine's own noise."""
    with Probe(port) as probe:
        time.sleep(seconds)
    return probe.worst_ms


def post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        start = time.perf_counter()
        conn.request("POST", path, body, headers or {"content-type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        return response.status, data, time.perf_counter() - start
    finally:
        conn.close()


def held(
    case: str, port: int, send: Callable[[], None], budget_ms: float, trials: int = 3
) -> list[float]:
    """The probe's worst latency while ``send()`` runs (it sends the case and checks its
    answer), ``trials`` times, against the machine's quiet noise; the best of the trials
    must be within ``budget_ms``. A hold the server does on every such request shows in
    every trial; other processes descheduling the server or the probe rarely in all."""
    quiet = baseline(port)
    worst = []
    for _ in range(trials):
        with Probe(port) as probe:
            send()
        assert probe.statuses == {200}
        worst.append(probe.worst_ms)
    print(
        f"\n{case}: probe worst {', '.join(f'{w:.1f}' for w in worst)} ms "
        f"(quiet {quiet:.1f} ms; budget {budget_ms:.0f} ms)"
    )
    assert min(worst) < budget_ms, (case, worst, quiet)
    return worst


# ------------------------------------------------------------------ models


def _sklearn_versions(root: Path) -> Path:
    """A scikit-learn logistic regression of 20 features, published twice (two versions,
    each with its reference profile): ``credit`` 1 and 2."""
    from sklearn.linear_model import LogisticRegression

    from mlserve.governance.publish import publish

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, FEATURES)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    names = [f"f{i}" for i in range(FEATURES)]
    for c in (1.0, 0.1):
        estimator = LogisticRegression(C=c, max_iter=200).fit(x, y)
        publish(root, "credit", estimator=estimator, reference=x, feature_names=names)
    (root / "credit" / "model.toml").write_text('[versions]\npolicy = "all"\n')
    return root / "credit"


def _texts_model() -> onnx.ModelProto:
    """A string input ``[N]`` → its length (``Shape``): BYTES in, one INT64 out."""
    graph = helper.make_graph(
        [helper.make_node("Shape", ["text"], ["n"])],
        "texts",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from .conftest import write_version

    root = tmp_path_factory.mktemp("loop") / "registry"
    _sklearn_versions(root)
    write_version(root, "texts", 1, _texts_model())
    # Rows limited only by the server's element limit (16 Mi): 10 M strings fit the shape.
    (root / "texts" / "model.toml").write_text("[inputs]\nmax_rows = 20000000\n")
    with running_server(root) as server:
        yield server


# ------------------------------------------------------------------ finding 1: JSON bodies


@pytest.mark.parametrize("megabytes", [8, 63])
@pytest.mark.slow
def test_empty_objects_are_refused_without_holding_the_loop(
    hostile_server: ServerProcess, megabytes: int
) -> None:
    port = hostile_server.port
    n = (megabytes << 20) // 3
    body = b'{"inputs":[' + b"{}," * (n - 1) + b"{}]}"

    def send() -> None:
        status, data, _ = post(port, "/v2/models/credit/infer", body)
        assert status == 413, data[:300]
        doc = orjson.loads(data)
        assert doc["code"] == "payload_too_large"
        assert "more than" in doc["error"] and "arrays and objects" in doc["error"]

    held(f"{megabytes} MB of {{}}", port, send, BUDGET_MS)


@pytest.mark.slow
def test_numbers_beyond_the_models_limits_are_refused(hostile_server: ServerProcess) -> None:
    # 30 M numbers in one flat data array: no container to spare, but 1,500 times the values
    # a 20-feature request of at most 10,000 rows holds.
    port = hostile_server.port
    n = 30_000_000
    body = (
        b'{"inputs":[{"name":"X","datatype":"FP32","shape":[1500000,20],"data":['
        + b"0," * (n - 1)
        + b"0]}]}"
    )

    def send() -> None:
        status, data, _ = post(port, "/v2/models/credit/versions/1/infer", body)
        assert status == 413, data[:300]
        assert "JSON values" in orjson.loads(data)["error"]

    held("60 MB of numbers", port, send, BUDGET_MS)


@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.slow
def test_largest_request_is_parsed_and_decoded_off_the_loop(
    hostile_server: ServerProcess, nested: bool
) -> None:
    # The largest request the model takes: max_rows (10,000) x 20 features, with an id of
    # 2 MB of brackets and commas (the scan skips strings, so none of them counts against
    # the bound). Above serving/codec.py's DECODE_OFF_LOOP_FROM the body is parsed and its tensors
    # decoded in a worker thread: the loop waits for the longest step (orjson's parse holds
    # the GIL) instead of the whole request.
    port = hostile_server.port
    model = hostile_server.log_path.parent / "registry" / "credit" / "1" / "model.onnx"
    x = np.random.default_rng(1).normal(size=(10_000, FEATURES)).astype(np.float32)
    doc = {
        "id": "{[,:" * (512 << 10),
        "inputs": [
            {
                "name": "X",
                "datatype": "FP32",
                "shape": list(x.shape),
                "data": x if nested else x.ravel(),
            }
        ],
    }
    body = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    expected = dict(
        zip([o.name for o in session.get_outputs()], session.run(None, {"X": x}), strict=True)
    )

    def send() -> None:
        status, data, _ = post(port, "/v2/models/credit/versions/1/infer", body)
        assert status == 200, data[:300]
        answer = orjson.loads(data)
        assert answer["id"] == doc["id"]
        outputs = answer["outputs"]
        assert sorted(o["name"] for o in outputs) == sorted(expected)
        for out in outputs:
            want = expected[out["name"]]
            assert out["shape"] == list(want.shape)
            got = np.array(out["data"], dtype=want.dtype).reshape(want.shape)
            np.testing.assert_array_equal(got, want)

    case = f"10,000 x 20 JSON, {'nested' if nested else 'flat'}"
    held(case, port, send, OFF_LOOP_MS, trials=5)


# ------------------------------------------------------------------ finding 2: binary BYTES


def _bytes_request(blob: bytes, count: int) -> tuple[bytes, dict[str, str]]:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [count],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        }
    )
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
    return header + blob, headers


@pytest.mark.slow
def test_ten_million_bytes_elements_are_refused_at_once(hostile_server: ServerProcess) -> None:
    port = hostile_server.port
    count = 10_000_000
    body, headers = _bytes_request(b"\x00\x00\x00\x00" * count, count)

    def send() -> None:
        status, data, _ = post(port, "/v2/models/texts/infer", body, headers)
        assert status == 400, data[:300]
        error = orjson.loads(data)["error"]
        assert f"over the limit of {MAX_BYTES_ELEMENTS} strings" in error, error

    held("10 M BYTES elements (40 MB)", port, send, BUDGET_MS)


@pytest.mark.slow
def test_ten_million_json_strings_are_refused_unparsed(hostile_server: ServerProcess) -> None:
    # The JSON form of the same: the body scan counts a BYTES input at the binary limit.
    port = hostile_server.port
    count = 10_000_000
    body = (
        b'{"inputs":[{"name":"text","datatype":"BYTES","shape":[%d],"data":[' % count
        + b'"",' * (count - 1)
        + b'""]}]}'
    )

    def send() -> None:
        status, data, _ = post(port, "/v2/models/texts/infer", body)
        assert status == 413, data[:300]
        assert "JSON values" in orjson.loads(data)["error"]

    held("10 M JSON strings (30 MB)", port, send, BUDGET_MS)


@pytest.mark.slow
def test_most_bytes_elements_a_tensor_takes_are_answered(hostile_server: ServerProcess) -> None:
    port = hostile_server.port
    blob = b"".join(struct.pack("<I", len(s)) + s for s in (b"%d" % i for i in range(1 << 17)))
    body, headers = _bytes_request(blob, MAX_BYTES_ELEMENTS)

    def send() -> None:
        status, data, _ = post(port, "/v2/models/texts/infer", body, headers)
        assert status == 200, data[:300]
        assert orjson.loads(data)["outputs"][0]["data"] == [MAX_BYTES_ELEMENTS]

    held(f"{MAX_BYTES_ELEMENTS} BYTES elements", port, send, BUDGET_MS)


# ------------------------------------------------------------------ large answers


def _outer_model() -> onnx.ModelProto:
    """``Y = transpose(X) @ X`` for ``X`` of ``[1, K]``: K numbers in, K x K out."""
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["X"], ["XT"], perm=[1, 0]),
            helper.make_node("MatMul", ["XT", "X"], ["Y"]),
        ],
        "outer",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, "K"])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["K", "K"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.slow
def test_a_large_json_answer_is_encoded_off_the_loop(tmp_path: Path) -> None:
    # 2,000 numbers in, 4 M out (~50 MB of JSON): encoded on the loop, the answer held it
    # 146 ms; in a worker thread, in steps that each hold the GIL ~2 ms.
    from .conftest import write_version

    root = tmp_path / "registry"
    write_version(root, "outer", 1, _outer_model())
    (root / "outer" / "model.toml").write_text('[execution]\nmode = "thread"\n')
    x = np.random.default_rng(2).normal(size=(1, 2000)).astype(np.float32)
    body = orjson.dumps(
        {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 2000], "data": x.ravel()}]},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    expected = (x.T * x).ravel()  # one product per element: exactly what MatMul gives

    with running_server(root) as server:

        def send() -> None:
            status, data, _ = post(server.port, "/v2/models/outer/infer", body)
            assert status == 200, data[:300]
            (out,) = orjson.loads(data)["outputs"]
            assert out["shape"] == [2000, 2000]
            np.testing.assert_array_equal(np.array(out["data"], np.float32), expected)

        held("4 M FP32 outputs (50 MB of JSON)", server.port, send, BUDGET_MS)


# ------------------------------------------------------------------ finding 3: scrapes


@pytest.fixture(scope="module")
def many_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """100 models × 2 versions × 20 monitored features (copies of the scikit-learn model's
    two versions, each with its reference profile), with traffic on every version."""
    root = tmp_path_factory.mktemp("scrape")
    source = _sklearn_versions(root / "source")
    registry = root / "registry"
    for m in range(100):
        for version in ("1", "2"):
            shutil.copytree(source / version, registry / f"m{m}" / version)
        (registry / f"m{m}" / "model.toml").write_text('[versions]\npolicy = "all"\n')
    with running_server(registry, "--poll-seconds", "0") as server:
        x = np.random.default_rng(2).normal(size=(50, FEATURES)).astype(np.float32)
        doc = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [50, FEATURES], "data": x}]}
        body = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        for m in range(100):
            for version in (1, 2):
                conn.request("POST", f"/v2/models/m{m}/versions/{version}/infer", body)
                response = conn.getresponse()
                assert response.status == 200, response.read()[:200]
                response.read()
        conn.close()
        yield server


@pytest.mark.slow
def test_scrapes_of_many_models_do_not_hold_the_loop(many_models: ServerProcess) -> None:
    port = many_models.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    took: list[float] = []
    texts: list[bytes] = []

    def send() -> None:  # back to back, both formats, one recomputing the drift reports
        time.sleep(1.05)
        for i in range(4):
            start = time.perf_counter()
            accept = "application/openmetrics-text; version=1.0.0" if i % 2 else "text/plain"
            conn.request("GET", "/metrics", headers={"accept": accept})
            response = conn.getresponse()
            texts.append(response.read())
            took.append(time.perf_counter() - start)
            assert response.status == 200

    held("scrapes of 100 models x 2 versions x 20 features", port, send, BUDGET_MS)
    conn.close()
    assert b'mlserve_requests_total{model="m99",version="2"' in texts[-1]
    print(f"scrape of {len(texts[-1]) >> 10} KiB: {sorted(took)[len(took) // 2] * 1e3:.0f} ms")


# ------------------------------------------------------------------ finding 4: shedding


def test_one_long_stall_sheds_and_a_short_pause_does_not(tmp_path: Path) -> None:
    settings = ServerSettings(registry=tmp_path, overload_delay_ms=40, poll_seconds=0)
    app = create_app(settings)
    shedder = app.service.shedder

    async def stall(seconds: float) -> float:
        watch = asyncio.create_task(shedder.watch(settings.overload_delay_ms / 1e3))
        await asyncio.sleep(0.05)
        time.sleep(seconds)  # the loop held
        await asyncio.sleep(0.015)  # the watch's next check has run
        share = shedder.share
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        shedder.share = 0.0
        return share

    try:
        assert asyncio.run(stall(0.07)) == 0.0  # one check 1-2x late: a pause
        assert asyncio.run(stall(0.2)) > 0.0  # one check 5x late: shedding at once
    finally:
        app.service.close()
