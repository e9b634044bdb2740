"""Triton's model configuration and statistics extensions, through the real
``tritonclient.http`` against a real server (two workers for the statistics).

Configurations are checked against the ONNX graphs the test wrote (types named from ONNX's
own enum, dims from the graph's shapes) and the model.toml settings; statistics against the
requests the test sent and the times it measured around them.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from .conftest import echo_model, linear_model, running_server, wait_for, write_version
from .support.metrics import scrape

# ONNX element type names → Triton's model configuration names (Triton's own table).
ONNX_TO_TRITON = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FLOAT16": "TYPE_FP16",
    "FLOAT": "TYPE_FP32",
    "DOUBLE": "TYPE_FP64",
    "STRING": "TYPE_STRING",
}
N_FEATURES = 4
MAX_BATCH = 8
DELAY_US = 2000


@pytest.fixture(scope="module")
def triton_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``batched``: v1 and v2 (policy all), dynamic batching on; ``echo``: every datatype,
    no batching, the default version policy."""
    root = tmp_path_factory.mktemp("triton") / "registry"
    write_version(root, "batched", 1, linear_model(N_FEATURES, seed=1))
    write_version(root, "batched", 2, linear_model(N_FEATURES, seed=2))
    (root / "batched" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n'
        f"[batching]\nmax_batch_size = {MAX_BATCH}\nmax_delay_us = {DELAY_US}\n"
    )
    write_version(root, "echo", 1, echo_model())
    return root


def _graph_tensors(path: Path, outputs: bool = False) -> list[tuple[str, str, list[int]]]:
    """(name, Triton type, shape with -1 for free dims) of each graph input or output."""
    graph = onnx.load(str(path)).graph
    found = []
    for value in graph.output if outputs else graph.input:
        t = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        found.append(
            (value.name, ONNX_TO_TRITON[onnx.TensorProto.DataType.Name(t.elem_type)], dims)
        )
    return found


def _config_tensors(items: list[dict[str, Any]]) -> list[tuple[str, str, list[int]]]:
    return [(i["name"], i["data_type"], [int(d) for d in i.get("dims", [])]) for i in items]


def test_model_configuration(triton_registry: Path) -> None:
    with running_server(triton_registry, "--poll-seconds", "0") as srv:
        client = triton.InferenceServerClient(srv.url.removeprefix("http://"))
        extensions = client.get_server_metadata()["extensions"]
        assert {"model_configuration", "statistics"} <= set(extensions)

        # Dynamic batching on: the batcher's size, the batch dimension left out of dims.
        for version in ("1", "2"):
            config = client.get_model_config("batched", version)
            assert config["name"] == "batched"
            assert config["platform"] == "onnxruntime_onnx"
            assert config["backend"] == "onnxruntime"
            assert config["max_batch_size"] == MAX_BATCH
            assert config["dynamic_batching"]["max_queue_delay_microseconds"] == DELAY_US
            assert config["version_policy"] == {"all": {}}
            onnx_path = triton_registry / "batched" / version / "model.onnx"
            assert _config_tensors(config["input"]) == [
                (n, t, d[1:]) for n, t, d in _graph_tensors(onnx_path)
            ]
            assert _config_tensors(config["output"]) == [
                (n, t, d[1:]) for n, t, d in _graph_tensors(onnx_path, outputs=True)
            ]
        assert client.get_model_config("batched") == client.get_model_config("batched", "2")

        # No batching: max_batch_size 0 and the whole shape, every datatype's Triton name.
        config = client.get_model_config("echo")
        assert config["max_batch_size"] == 0
        assert "dynamic_batching" not in config
        assert config["version_policy"] == {"latest": {"num_versions": 1}}
        onnx_path = triton_registry / "echo" / "1" / "model.onnx"
        assert _config_tensors(config["input"]) == _graph_tensors(onnx_path)
        assert _config_tensors(config["output"]) == _graph_tensors(onnx_path, outputs=True)
        assert len(config["input"]) == len(ONNX_TO_TRITON)

        for model, version, status in (("nope", "", 404), ("echo", "7", 404), ("e/x", "", 404)):
            with pytest.raises(InferenceServerException) as err:
                client.get_model_config(model, version)
            assert err.value.status() == str(status), err.value
        r = httpx.get(srv.url + "/v2/models/echo/versions/01/config")
        assert r.status_code == 400 and r.json()["code"] == "invalid_input", r.text
        r = httpx.get(srv.url + "/v2/models/nope/config")
        assert r.status_code == 404 and "nope" in r.json()["error"], r.text


def _infer(url: str, version: str, rows: int) -> tuple[int, float]:
    """One JSON request on a new connection (so the kernel spreads them over the workers):
    its status and the client's round-trip time."""
    x = np.ones((rows, N_FEATURES), np.float32)
    body = {
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/v2/models/batched/versions/{version}/infer", json=body)
    return r.status_code, time.perf_counter() - t0


def _bad(url: str) -> int:
    """A request the model refuses (wrong width): a failure of version 1."""
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    return httpx.post(f"{url}/v2/models/batched/versions/1/infer", json=body).status_code


@pytest.mark.slow
def test_statistics_count_what_was_sent_over_two_workers(triton_registry: Path) -> None:
    with running_server(triton_registry, "--poll-seconds", "0", "--workers", "2") as srv:
        client = triton.InferenceServerClient(srv.url.removeprefix("http://"))
        started_ms = time.time() * 1e3
        rows_by_request = [1, 3, 2, 1, 5, 1, 4, 2] * 4
        with ThreadPoolExecutor(4) as pool:  # concurrent: some requests share a batch
            answers = list(pool.map(lambda n: _infer(srv.url, "1", n), rows_by_request))
            bad = list(pool.map(lambda _: _bad(srv.url), range(5)))
        v2 = [_infer(srv.url, "2", 2) for _ in range(3)]
        finished_ms = time.time() * 1e3
        assert [s for s, _ in answers] == [200] * len(answers)
        assert bad == [400] * 5 and [s for s, _ in v2] == [200] * 3
        client_s = sum(t for _, t in answers)

        def stats(version: str) -> dict[str, Any]:
            found = client.get_inference_statistics("batched", version)["model_stats"]
            assert len(found) == 1 and found[0]["version"] == version
            return dict(found[0])

        def counted() -> bool:  # the other worker publishes its counts once a second
            s = stats("1")["inference_stats"]
            return bool(s["success"].get("count") == len(answers) and s["fail"].get("count") == 5)

        wait_for(counted, timeout=15)
        assert scrape(srv.url).value("mlserve_workers") == 2
        url = srv.url + "/v2/models/batched/versions/1/stats"
        for i in range(8):  # whichever worker answers (a new connection each), the same sums
            one = stats("1") if i == 0 else httpx.get(url).json()["model_stats"][0]
            inf = one["inference_stats"]
            assert int(inf["success"]["count"]) == len(answers)
            assert int(inf["fail"]["count"]) == 5
            assert int(one["inference_count"]) == sum(rows_by_request)
            # Each request ran in exactly one batch; a batch holds at most MAX_BATCH rows.
            executions = int(one["execution_count"])
            assert -(-sum(rows_by_request) // MAX_BATCH) <= executions <= len(answers)
            success_ns = int(inf["success"]["ns"])
            queue_ns = int(inf["queue"]["ns"])
            infer_ns = int(inf["compute_infer"]["ns"])
            assert success_ns > 0 and infer_ns > 0 and queue_ns >= 0
            assert queue_ns + infer_ns <= success_ns
            # The server's time is inside the time the client waited for each answer.
            assert success_ns <= client_s * 1e9
            for stage in ("queue", "compute_input", "compute_infer", "compute_output"):
                assert int(inf[stage]["count"]) == len(answers)
            assert started_ms - 1 <= int(one["last_inference"]) <= finished_ms + 1

        two = stats("2")
        assert int(two["inference_stats"]["success"]["count"]) == 3
        assert int(two["inference_count"]) == 6
        assert int(two["inference_stats"]["fail"]["count"]) == 0

        # The model (its ready versions) and the server (every model) give the same entries.
        by_model = client.get_inference_statistics("batched")["model_stats"]
        assert [(s["name"], s["version"]) for s in by_model] == [("batched", "1"), ("batched", "2")]
        everything = client.get_inference_statistics()["model_stats"]
        assert [(s["name"], s["version"]) for s in everything] == [
            ("batched", "1"),
            ("batched", "2"),
            ("echo", "1"),
        ]
        echo = everything[2]
        assert int(echo["inference_count"]) == 0 and int(echo["last_inference"]) == 0

        with pytest.raises(InferenceServerException) as err:
            client.get_inference_statistics("batched", "9")
        assert err.value.status() == "404"
        with pytest.raises(InferenceServerException) as err:
            client.get_inference_statistics("nope")
        assert err.value.status() == "404"
