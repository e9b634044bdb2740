"""Dynamic batching: exact splitting, isolation of failures, queue limits and timeouts."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest

from mlserve.config import BatchingConfig, ExecutionConfig, InputPolicy
from mlserve.errors import InvalidInput, Overloaded, QueueTimeout
from mlserve.execution.batcher import Batcher
from mlserve.execution.runners import InlineRunner, ThreadRunner, choose_runner
from mlserve.runtime.session import ModelSession

from .conftest import (
    gather_model,
    linear_model,
    matmul_model,
    running_server,
    slow_batch_model,
    write_version,
)


def make_session(tmp_path: Path, proto: onnx.ModelProto, mode: str = "auto") -> ModelSession:
    path = tmp_path / f"m-{id(proto)}.onnx"
    path.write_bytes(proto.SerializeToString())
    session = ModelSession(
        "m", 1, path, ExecutionConfig(mode=mode, warmup_runs=1), InputPolicy(), 10**7
    )
    session.warm_up(None)
    return session


@pytest.fixture(scope="module")
def executor():
    with ThreadPoolExecutor(2) as pool:
        yield pool


@pytest.mark.parametrize("mode", ["inline", "thread"])
def test_each_caller_gets_exactly_its_rows(tmp_path: Path, executor, mode: str) -> None:
    session = make_session(tmp_path, linear_model(), mode)
    batcher = Batcher(session, BatchingConfig(max_batch_size=32, max_delay_us=2000), executor)
    rng = np.random.default_rng(0)
    requests = [
        rng.standard_normal((int(rng.integers(1, 9)), 20)).astype(np.float32) for _ in range(40)
    ]

    async def main():
        async def one(x, names):
            outputs, queue_s, infer_s = await batcher.run({"X": x}, names)
            assert queue_s >= 0 and infer_s > 0
            return outputs

        names = [None if i % 3 else ["label"] for i in range(len(requests))]
        return await asyncio.gather(*(one(x, n) for x, n in zip(requests, names, strict=True)))

    results = asyncio.run(main())
    for i, (x, got) in enumerate(zip(requests, results, strict=True)):
        scores, label = session.run({"X": x})
        if i % 3:
            assert len(got) == 2
            np.testing.assert_array_equal(got[0], scores)
            np.testing.assert_array_equal(got[1], label)
        else:
            assert len(got) == 1
            np.testing.assert_array_equal(got[0], label)
    assert batcher.batches < len(requests) / 2, "requests were not batched together"
    assert batcher.pending == 0


def test_a_failing_request_never_fails_its_batch_mates(tmp_path: Path, executor) -> None:
    session = make_session(tmp_path, gather_model(), "inline")
    batcher = Batcher(session, BatchingConfig(max_batch_size=64, max_delay_us=5000), executor)
    idx = [np.array([i % 10, (i + 3) % 10]) for i in range(10)]
    idx[4] = np.array([1, 12])  # out of the table: fails inside onnxruntime

    async def main():
        return await asyncio.gather(
            *(batcher.run({"idx": x}, None) for x in idx), return_exceptions=True
        )

    results = asyncio.run(main())
    assert batcher.batches == 1
    for i, result in enumerate(results):
        if i == 4:
            assert isinstance(result, InvalidInput)
            assert "indices element out of data bounds" in result.message
        else:
            np.testing.assert_array_equal(result[0][0], idx[i].astype(np.float32) * 1.5)


def test_full_queue_is_rejected_and_timeouts_expire(tmp_path: Path, executor) -> None:
    session = make_session(tmp_path, slow_batch_model(1500), "thread")
    config = BatchingConfig(max_batch_size=2, max_delay_us=100, max_queue=4, timeout_ms=5)
    batcher = Batcher(session, config, executor)
    x = np.ones((2, 4), np.float32)  # each request fills a batch by itself

    async def main():
        return await asyncio.gather(
            *(batcher.run({"X": x}, None) for _ in range(8)), return_exceptions=True
        )

    results = asyncio.run(main())
    kinds = [type(r).__name__ for r in results]
    # The first runs at once; 4 wait (the queue limit); 3 are refused. The slow batch
    # (tens of ms) outlasts the 5 ms timeout, so the waiting ones expire.
    assert kinds.count("Overloaded") == 3, kinds
    assert kinds.count("QueueTimeout") == 4, kinds
    assert isinstance(results[0], tuple)
    assert all(isinstance(r, (tuple, Overloaded, QueueTimeout)) for r in results)


def test_runner_choice_is_made_at_load(tmp_path: Path, executor) -> None:
    fast = make_session(tmp_path, linear_model())
    assert isinstance(choose_runner(fast, BatchingConfig(), executor), InlineRunner)
    assert isinstance(choose_runner(fast, BatchingConfig(max_batch_size=8), executor), Batcher)
    slow = make_session(tmp_path, matmul_model(fixed=None), "thread")
    runner = choose_runner(slow, BatchingConfig(max_batch_size=8), executor)
    assert isinstance(runner, ThreadRunner)  # no batch dimension: batching is refused...
    assert slow.notes == ["batching disabled: 'x' has no free batch dimension (shape [1])"]


def test_thread_runner_limits_waiting_requests(tmp_path: Path) -> None:
    session = make_session(tmp_path, slow_batch_model(1200), "thread")
    with ThreadPoolExecutor(1) as pool:
        runner = ThreadRunner(session, pool, max_queue=2)

        async def main():
            x = np.ones((1, 4), np.float32)
            return await asyncio.gather(
                *(runner.run({"X": x}, None) for _ in range(5)), return_exceptions=True
            )

        kinds = [type(r).__name__ for r in asyncio.run(main())]
    assert kinds == ["tuple", "tuple", "Overloaded", "Overloaded", "Overloaded"]


@pytest.mark.slow
def test_batching_over_http(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    write_version(root, "batched", 1, linear_model())
    (root / "batched" / "model.toml").write_text(
        "[batching]\nmax_batch_size = 64\nmax_delay_us = 3000\n"
    )
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((int(rng.integers(1, 5)), 20)).astype(np.float32) for _ in range(24)]
    results: dict[int, httpx.Response] = {}
    with running_server(root) as srv:
        meta = httpx.get(srv.url + "/v2/models/batched").json()
        assert meta["parameters"]["versions"]["1"]["execution_mode"] == "batch"

        def post(i: int) -> None:
            body = {
                "inputs": [
                    {
                        "name": "X",
                        "datatype": "FP32",
                        "shape": list(xs[i].shape),
                        "data": xs[i].ravel().tolist(),
                    }
                ]
            }
            results[i] = httpx.post(srv.url + "/v2/models/batched/infer", json=body, timeout=10)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(xs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    session = make_session(tmp_path, linear_model())
    queued = []
    for i, x in enumerate(xs):
        r = results[i]
        assert r.status_code == 200, r.text
        scores = np.asarray(r.json()["outputs"][0]["data"], np.float32).reshape(-1, 3)
        np.testing.assert_array_equal(scores, session.run({"X": x})[0])
        timing = dict(part.strip().split(";dur=") for part in r.headers["server-timing"].split(","))
        assert set(timing) == {"queue", "infer", "total"}
        queued.append(float(timing["queue"]))
    assert max(queued) > 0.0  # requests waited in the batch queue
