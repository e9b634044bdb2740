"""Every bound holds under concurrency and hostile sizes, against a real server (issue 17):
the event-stream limit when streams open all at once, routing bodies (duplicate, long,
mistyped shadows) refused before anything changes, and the payload log's ``max_bytes``
and its export's memory whatever one field's length."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mlserve.http.monitor import MAX_STREAMS

from .conftest import linear_model, running_server, write_version
from .support.metrics import parse
from .support.waiting import NOT_YET, wait_for

# Slow: every test here starts real servers and waits on them (-m "not slow" skips them).
pytestmark = pytest.mark.slow

TOKEN = "bounds-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STREAM = "/v2/monitor/stream?interval=60&max_seconds=120"


# ------------------------------------------------------------------ (a) event streams


def test_streams_opened_at_once_never_pass_the_limit(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    write_version(registry, "linear", 1, linear_model(seed=1))
    opens = 60

    async def open_all(url: str) -> tuple[list[int], list[httpx.Response]]:
        """60 streams requested at once, each on its own connection, made beforehand so
        the requests reach the server together."""
        clients = [httpx.AsyncClient(base_url=url, timeout=60) for _ in range(opens)]
        release = asyncio.Event()
        answered = 0
        everyone = asyncio.Event()
        ok: list[int] = []
        refused: list[httpx.Response] = []

        async def one(c: httpx.AsyncClient) -> None:
            nonlocal answered
            async with c.stream("GET", STREAM) as r:
                if r.status_code == 200:
                    ok.append(200)
                else:
                    await r.aread()
                    refused.append(r)
                answered += 1
                if answered == opens:
                    everyone.set()
                if r.status_code == 200:
                    await release.wait()  # held open until every stream has been answered

        try:
            for c in clients:  # connect first (keep-alive)
                assert (await c.get("/v2/health/live")).status_code == 200
            tasks = [asyncio.ensure_future(one(c)) for c in clients]
            await asyncio.wait_for(everyone.wait(), 60)
            release.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
        finally:
            release.set()
            for c in clients:
                await c.aclose()
        return ok, refused

    with running_server(registry) as srv:
        ok, refused = asyncio.run(open_all(srv.url))
        # Admitted when counted: at most the limit, and the limit is reached.
        assert len(ok) == MAX_STREAMS, (len(ok), len(refused))
        assert len(refused) == opens - MAX_STREAMS
        for r in refused:
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.headers["content-type"].startswith("application/json")
            doc = r.json()
            assert doc["code"] == "overloaded" and f"{MAX_STREAMS} event streams" in doc["error"]

        # Closed streams give their slots back: the limit can be filled again, exactly.
        def admitted() -> bool:
            with httpx.stream("GET", srv.url + STREAM, timeout=10) as r:
                return r.status_code == 200

        wait_for(
            admitted,
            30,
            what="a stream to be admitted again",
            detail=srv.log,
            interval=0.25,
            ignore=NOT_YET,
        )
        clients = [httpx.Client(base_url=srv.url, timeout=30) for _ in range(MAX_STREAMS + 1)]
        held = []
        try:

            def fill() -> bool:  # earlier probes may still be closing: retry until all fit
                while len(held) < MAX_STREAMS:
                    cm = clients[len(held)].stream("GET", STREAM)
                    r = cm.__enter__()
                    if r.status_code != 200:
                        cm.__exit__(None, None, None)
                        return False
                    held.append(cm)
                return True

            wait_for(
                fill,
                30,
                what="the limit to be filled again",
                detail=srv.log,
                interval=0.25,
                ignore=NOT_YET,
            )
            with clients[-1].stream("GET", STREAM) as r:
                assert r.status_code == 503
        finally:
            for cm in held:
                cm.__exit__(None, None, None)
            for c in clients:
                c.close()


# ------------------------------------------------------------------ (b) routing bodies


def iris_versions(root: Path, model: str, count: int) -> None:
    """``count`` versions of a scikit-learn logistic regression on iris (different C)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    for v in range(1, count + 1):
        clf = LogisticRegression(C=0.1 * v, max_iter=500).fit(X, y)
        proto = convert_sklearn(
            clf, initial_types=[("X", FloatTensorType([None, 4]))], options={"zipmap": False}
        )
        write_version(root, model, v, proto)


def test_routing_bodies_are_checked_before_anything_changes(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    iris_versions(registry, "iris", 3)
    (registry / "iris" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n[routing]\nstable = 1\n'
    )
    iris_versions(registry, "dup", 2)
    (registry / "dup" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n[routing]\nstable = 1\nshadows = [2, 2]\n'
    )
    audit = registry / "audit.jsonl"
    row = {"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
    bad: list[tuple[Any, str]] = [
        ({"shadows": [2, 3] * 50_000}, "shadows names 100000 versions: at most 16"),
        ({"shadows": [2, 3, 2]}, "shadows names version 2 twice"),
        ({"shadows": list(range(1, 18))}, "shadows names 17 versions: at most 16"),
        ({"shadows": [True]}, "got True"),
        ({"shadows": [2, "3x"]}, "got '3x'"),  # "3" is version 3, as the protocol writes it
        ({"shadows": [0]}, "got 0"),
        ({"shadows": [2.0]}, "got 2.0"),
        ({"shadows": "2,3"}, "shadows must be a list of versions"),
        ({"shadows": ["x" * 100_000]}, "got str"),
        ({"canary_weight": True}, "canary_weight must be a number"),
        ({"canary_weight": 100.5}, "canary_weight must be in 0..100"),
        ({"canary_weight": -1}, "canary_weight must be in 0..100"),
        ({"shadow_sample": 1.5}, "shadow_sample must be in 0..1"),
        ({"shadow_queue": 0}, "shadow_queue must be in 1..100000"),
        ({"canary": True}, "canary must be an integer"),
        ({"stable": "1" * 100_000}, "stable must be an integer"),
        ({"stable": -2}, "stable and canary are versions"),
        ({"stable": 2, "canary": 2}, "canary must differ from stable"),
        ({"x" * 100_000: 1}, "unknown routing key"),
    ]
    env = {"MLSERVE_ADMIN_TOKEN": TOKEN}
    with running_server(registry, env=env) as srv, httpx.Client(base_url=srv.url) as c:
        url = "/v2/admin/models/iris/routing"
        before = c.get(url, headers=AUTH).json()
        state_file = registry / "iris" / "routing.json"
        state_before = state_file.read_bytes() if state_file.exists() else b""
        audit_before = audit.read_bytes() if audit.exists() else b""
        for body, why in bad:
            started = time.monotonic()
            r = c.put(url, headers=AUTH, json=body, timeout=30)
            took = time.monotonic() - started
            assert r.status_code == 400, (why, r.status_code, r.text[:300])
            doc = r.json()
            assert doc["code"] == "invalid_input" and why in doc["error"], (why, doc)
            assert len(r.content) < 1000 and took < 5, (why, len(r.content), took)
        # Nothing changed: the routing in force, its state file, the audit log.
        assert c.get(url, headers=AUTH).json() == before
        assert (state_file.read_bytes() if state_file.exists() else b"") == state_before
        assert (audit.read_bytes() if audit.exists() else b"") == audit_before
        hit = c.post("/v2/models/iris/infer", json={"inputs": [row]})
        assert hit.status_code == 200 and hit.headers["mlserve-model-version"] == "1"

        # A valid body still works, and is audited once.
        r = c.put(url, headers=AUTH, json={"shadows": [2, 3], "canary": 2, "canary_weight": 10})
        assert r.status_code == 200, r.text
        assert r.json()["serving"]["shadows"] == [2, 3]
        added = audit.read_bytes()[len(audit_before) :].splitlines()
        assert [json.loads(line)["action"] for line in added] == ["set_routing"]
        assert c.post("/v2/models/iris/infer", json={"inputs": [row]}).status_code == 200

        # model.toml follows the same rule: the model does not load, and says why.
        meta = c.get("/v2/models/dup").json()
        assert meta["versions"] == []
        error = meta["parameters"]["config_error"]
        assert "[routing] shadows names version 2 twice" in error, error
        assert c.get("/v2/models/dup/ready").status_code == 503


# ------------------------------------------------------------------ (c) the payload log


def text_model() -> onnx.ModelProto:
    """Inputs ``X`` (FP32, 4 columns) and ``text`` (BYTES, 1 column); outputs ``y = X @ W``
    and ``echo`` (the text)."""
    w = np.arange(8, dtype=np.float32).reshape(4, 2) / 10
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["y"]),
            helper.make_node("Identity", ["text"], ["echo"]),
        ],
        "text",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("text", TensorProto.STRING, ["N", 1]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("echo", TensorProto.STRING, ["N", 1]),
        ],
        initializer=[helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.ravel())],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def body(rid: str, text: str, value: float = 0.5) -> dict[str, Any]:
    return {
        "id": rid,
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [value, 1.0, 2.0, 3.0]},
            {"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": [text]},
        ],
    }


def export_rss(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """``mlserve payloads export`` in a child of a small wrapper, which reports the
    export's peak RSS (its VmHWM, ``RUSAGE_CHILDREN``) in MiB."""
    wrapper = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:])\n"
        "print('peak_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(r.returncode)\n"
    )
    cmd = [sys.executable, "-c", wrapper, sys.executable, "-m", "mlserve", "payloads", "export"]
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300)
    peak = re.search(r"peak_kib (\d+)", done.stdout)
    assert peak is not None, done.stdout + done.stderr
    return done, int(peak.group(1)) / 1024


ID_CHARS = 10 << 20  # a 10 MiB request id
MAX_BYTES = 1 << 20


def test_no_payload_file_passes_max_bytes_and_export_memory_is_bounded(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    payloads = tmp_path / "payloads"
    write_version(registry, "text", 1, text_model())
    (registry / "text" / "model.toml").write_text(
        '[payloads]\nsample = 1.0\nfields = ["inputs", "outputs"]\n'
    )
    args = ("--payload-dir", str(payloads), "--payload-max-bytes", str(MAX_BYTES))
    with (
        running_server(registry, *args, "--max-body-bytes", str(32 << 20)) as srv,
        httpx.Client(base_url=srv.url, timeout=60) as c,
    ):
        for i in range(20):
            assert c.post("/v2/models/text/infer", json=body(f"n{i}", "ok", i)).status_code == 200
        r = c.post("/v2/models/text/infer", json=body("i" * ID_CHARS, "long id"))
        assert r.status_code == 200
        r = c.post("/v2/models/text/infer", json=body("bigtext", "t" * (3 << 20)))
        assert r.status_code == 200

        def written() -> bool:
            metrics = parse(c.get("/metrics").text)
            return metrics.value("mlserve_payloads_logged_total", 0.0, model="text") == 22

        wait_for(
            written, 30, what="22 payload records", detail=srv.log, interval=0.25, ignore=NOT_YET
        )
    files = sorted(payloads.glob("payloads-*.jsonl"))
    assert files and all(f.stat().st_size <= MAX_BYTES for f in files), [
        f.stat().st_size for f in files
    ]
    docs = [json.loads(line) for f in files for line in f.read_bytes().splitlines()]
    assert len(docs) == 22
    by_id = {d["id"][:8]: d for d in docs}
    long_id = by_id["iiiiiiii"]
    assert long_id["truncated"] == ["id"] and len(long_id["id"]) <= 257
    assert long_id["inputs"][1]["data"] == ["long id"]  # only the id was cut
    big = by_id["bigtext"]
    assert big["truncated"] == ["inputs.text", "outputs.echo"]
    assert big["inputs"][1]["data"] == big["outputs"][1]["data"] == "[truncated]"
    assert big["inputs"][0]["data"] == [0.5, 1.0, 2.0, 3.0]  # the rest is whole
    assert all("truncated" not in d for d in docs if d["id"].startswith("n"))

    # The export keeps every row whose feature input is whole, leaves out (and counts) the
    # requests whose feature was cut.
    out = tmp_path / "x.parquet"
    done, _ = export_rss(
        "--dir", str(payloads), "--model", "text", "--input", "X", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert "22 rows" in done.stdout
    from mlserve.governance.payload_export import export_payloads

    summary = export_payloads(payloads, "text", input_name="text", out=tmp_path / "t.parquet")
    assert summary["rows"] == 21 and summary["skipped"]["truncated"] == 1

    # A log whose records carry a 10 MiB id (as a server with a larger max_bytes writes
    # them): the export's memory does not grow with rows × the longest id.
    template = docs[0]
    whole = tmp_path / "whole"
    whole.mkdir()
    rows = 300
    with (whole / "payloads-h-1-000000.jsonl").open("w") as fh:
        for i in range(rows):
            rid = "w" * ID_CHARS if i == 0 else f"w{i}"
            fh.write(json.dumps({**template, "id": rid, "unix": template["unix"] + i}) + "\n")
    pq = pytest.importorskip("pyarrow.parquet")
    for suffix in ("npz", "parquet"):
        out = tmp_path / f"whole.{suffix}"
        done, peak = export_rss(
            "--dir", str(whole), "--model", "text", "--input", "X", "--out", str(out)
        )
        assert done.returncode == 0, done.stderr
        assert f"{rows} rows" in done.stdout
        assert peak < 500, f"{suffix}: peak RSS {peak:.0f} MiB"
    with np.load(tmp_path / "whole.npz") as npz:
        assert npz["X"].shape == (rows, 4) and npz["request_id"][1] == "w1"
        assert npz["request_id"].dtype.itemsize <= 1024 * 4  # ids cut in .npz only
    ids = pq.read_table(tmp_path / "whole.parquet", columns=["request_id"]).column(0)
    assert len(ids) == rows and len(ids[0].as_py()) == ID_CHARS  # whole in parquet
