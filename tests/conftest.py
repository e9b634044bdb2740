"""Shared fixtures: registries made of real ONNX models, and real servers on loopback ports."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from .support.waiting import NOT_YET, wait_for  # wait_for re-exported: the one way to wait

ROOT = Path(__file__).resolve().parents[1]
PROM = ROOT / "deploy" / "prometheus"

# V2 datatype → ONNX element type, for models that echo every datatype.
ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slow: starts real servers many times, or Prometheus, Chromium, haproxy, fresh venvs; "
        'deselect with -m "not slow" for a fast local run (CI runs everything)',
    )


# Slow modules whose files belong to other work (their own ``pytestmark`` would say it;
# until then they are marked here): Chromium, and a whole walkthrough against real servers.
SLOW_ELSEWHERE = {"test_docs.py", "test_walkthrough.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW_ELSEWHERE:
            item.add_marker(pytest.mark.slow)


def _save(model: onnx.ModelProto, path: Path) -> bytes:
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    path.write_bytes(data)
    return data


def echo_model() -> onnx.ModelProto:
    """Inputs ``in_<DT>`` of every V2 datatype, outputs ``out_<DT>`` = Identity."""
    nodes, inputs, outputs = [], [], []
    for dt, et in ONNX_TYPES.items():
        inputs.append(helper.make_tensor_value_info(f"in_{dt}", et, ["N", 3]))
        outputs.append(helper.make_tensor_value_info(f"out_{dt}", et, ["N", 3]))
        nodes.append(helper.make_node("Identity", [f"in_{dt}"], [f"out_{dt}"]))
    graph = helper.make_graph(nodes, "echo", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def linear_model(n_features: int = 20, seed: int = 0) -> onnx.ModelProto:
    """``y = X @ W + b`` and ``label = argmax``: a small real FP32 model with 2 outputs."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n_features, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["XW"]),
            helper.make_node("Add", ["XW", "B"], ["scores"]),
            helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0),
        ],
        "linear",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", n_features])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        ],
        initializer=[
            helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.ravel()),
            helper.make_tensor("B", TensorProto.FLOAT, b.shape, b),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def write_version(
    root: Path, model: str, version: int, proto: onnx.ModelProto, *, lineage: bool = True
) -> Path:
    vdir = root / model / str(version)
    data = _save(proto, vdir / "model.onnx")
    if lineage:
        (vdir / "lineage.json").write_text(
            json.dumps({"model_sha256": hashlib.sha256(data).hexdigest(), "parent_version": None})
        )
    return vdir


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with good models beside broken ones.

    - ``linear``: versions 1 and 2 good (different weights), policy all.
    - ``echo``: every V2 datatype.
    - ``mixed``: version 1 good, 2 corrupt bytes, 3 an empty directory, 4 sha256 mismatch;
      policy all.
    - ``latest2``: versions 1–3 with policy latest(2): 2 and 3 load.
    - ``badconfig``: a model.toml with an unknown key.
    - ``strict``: max_rows 4 and allow_nan false; ``lenient``: allow_nan true.
    """
    root = tmp_path_factory.mktemp("registry")
    write_version(root, "linear", 1, linear_model(seed=1))
    write_version(root, "linear", 2, linear_model(seed=2))
    (root / "linear" / "model.toml").write_text('[versions]\npolicy = "all"\n')
    write_version(root, "echo", 1, echo_model())
    write_version(root, "mixed", 1, linear_model(seed=3))
    (root / "mixed" / "2").mkdir(parents=True)
    (root / "mixed" / "2" / "model.onnx").write_bytes(b"\x08\x07garbage, not a protobuf")
    (root / "mixed" / "3").mkdir()
    vdir = write_version(root, "mixed", 4, linear_model(seed=4))
    (vdir / "lineage.json").write_text(json.dumps({"model_sha256": "0" * 64}))
    (root / "mixed" / "model.toml").write_text('[versions]\npolicy = "all"\n')
    for v in (1, 2, 3):
        write_version(root, "latest2", v, linear_model(seed=10 + v))
    (root / "latest2" / "model.toml").write_text('[versions]\npolicy = "latest"\nlatest = 2\n')
    write_version(root, "badconfig", 1, linear_model())
    (root / "badconfig" / "model.toml").write_text("[inputs]\nmax_rowz = 3\n")
    write_version(root, "strict", 1, linear_model(n_features=4))
    (root / "strict" / "model.toml").write_text("[inputs]\nmax_rows = 4\nallow_nan = false\n")
    write_version(root, "lenient", 1, linear_model(n_features=4))
    (root / "lenient" / "model.toml").write_text("[inputs]\nallow_nan = true\n")
    (root / ".tmp-publish").mkdir()  # hidden: a publisher's temporary directory, ignored
    return root


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m mlserve serve`` in a subprocess on a free loopback port."""

    def __init__(
        self,
        registry: Path,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = registry.parent / f"server-{self.port}.log"
        cmd = [
            sys.executable,
            "-m",
            "mlserve",
            "serve",
            "--registry",
            str(registry),
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            *args,
        ]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
        full_env.update(env or {})
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=full_env)

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            return httpx.get(self.url + "/v2/health/ready", timeout=1).status_code == 200

        wait_for(ready, timeout, what=f"{self.url} to be ready", detail=self.log, ignore=NOT_YET)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@contextlib.contextmanager
def running_server(
    registry: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    server = ServerProcess(registry, *args, env=env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server(registry: Path) -> Iterator[ServerProcess]:
    with running_server(registry) as srv:
        yield srv


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def matmul_model(fixed: int | None) -> onnx.ModelProto:
    """A CPU-heavy model: two n×n MatMuls, n fixed or taken from an INT64 ``size`` input."""
    value = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])]
    initializers = []
    if fixed is None:
        inputs.append(helper.make_tensor_value_info("size", TensorProto.INT64, [2]))
    else:
        initializers.append(helper.make_tensor("size", TensorProto.INT64, [2], [fixed, fixed]))
    graph = helper.make_graph(
        [
            helper.make_node("ConstantOfShape", ["size"], ["ones"], value=value),
            helper.make_node("Mul", ["ones", "x"], ["a"]),  # depends on x: no constant folding
            helper.make_node("MatMul", ["a", "a"], ["b"]),
            helper.make_node("MatMul", ["b", "a"], ["c"]),
            helper.make_node("ReduceSum", ["c"], ["y"], keepdims=0),
        ],
        "matmul",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        initializer=initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def slow_batch_model(n: int, n_features: int = 4) -> onnx.ModelProto:
    """``y = X @ W`` with a free batch dimension, plus an n×n MatMul per call (cost, no rows)."""
    w = np.arange(n_features * 2, dtype=np.float32).reshape(n_features, 2)
    value = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["xw"]),
            helper.make_node("ReduceSum", ["X"], ["s"], keepdims=0),
            helper.make_node("ConstantOfShape", ["size"], ["ones"], value=value),
            helper.make_node("Mul", ["ones", "s"], ["a"]),
            helper.make_node("MatMul", ["a", "a"], ["b"]),
            helper.make_node("ReduceSum", ["b"], ["heavy"], keepdims=0),
            helper.make_node("Mul", ["heavy", "zero"], ["nothing"]),
            helper.make_node("Add", ["xw", "nothing"], ["y"]),
        ],
        "slow_batch",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", n_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        initializer=[
            helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.ravel()),
            helper.make_tensor("size", TensorProto.INT64, [2], [n, n]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def gather_model(size: int = 10) -> onnx.ModelProto:
    """``y = table[idx]``: valid requests pass validation; an index ≥ ``size`` fails inside
    onnxruntime."""
    table = np.arange(size, dtype=np.float32) * 1.5
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["y"], axis=0)],
        "gather",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
        initializer=[helper.make_tensor("table", TensorProto.FLOAT, [size], table)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# ------------------------------------------------------------------ a real Prometheus


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        r = httpx.get(self.url + "/api/v1/query", params=params, timeout=10)
        doc = r.json()
        assert r.status_code == 200 and doc["status"] == "success", f"{expr}: {doc}"
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def values(
        self, expr: str, *labels: str, at: float | None = None
    ) -> dict[tuple[str, ...], float]:
        return {
            tuple(s["metric"][k] for k in labels): float(s["value"][1])
            for s in self.query(expr, at)
        }

    def evaluations(self) -> dict[str, float]:
        """Each rule group's last evaluation, in seconds since the epoch."""
        doc = httpx.get(self.url + "/api/v1/rules", timeout=10).json()
        assert doc["status"] == "success"
        out = {}
        for group in doc["data"]["groups"]:
            # RFC 3339 with nanoseconds: keep microseconds for fromisoformat.
            stamp = re.sub(r"(\.\d{6})\d*", r"\1", group["lastEvaluation"]).replace("Z", "+00:00")
            out[group["name"]] = datetime.fromisoformat(stamp).timestamp()
        return out

    def alerts(self) -> list[dict[str, Any]]:
        doc = httpx.get(self.url + "/api/v1/alerts", timeout=10).json()
        assert doc["status"] == "success"
        alerts: list[dict[str, Any]] = doc["data"]["alerts"]
        return alerts

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def prometheus(
    workdir: Path, *server_ports: int, scrape_s: float = 2, port: int | None = None
) -> Iterator[Prometheus]:
    """Debian's Prometheus configured from ``deploy/prometheus``, scraping each server as a
    pod would be (one pod per port), with the shipped rules and every ``for:`` cut to 0s.

    Debian builds Prometheus without Kubernetes discovery: file discovery carries the pod's
    annotations from ``deploy/kubernetes/mlserve.yaml`` so the example's relabelling finds
    each server's port and path. ``port``: listen there (default: a free port).
    """
    binary = shutil.which("prometheus")
    assert binary is not None, "prometheus not found: install Debian's 'prometheus' package"
    rules = yaml.safe_load((PROM / "rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "0s"
    (workdir / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    annotations = next(
        d
        for d in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "mlserve.yaml").read_text())
        if d and d["kind"] == "Deployment"
    )["spec"]["template"]["metadata"]["annotations"]
    meta = {
        "__meta_kubernetes_pod_annotation_" + re.sub(r"\W", "_", k): v
        for k, v in annotations.items()
    }
    meta["__meta_kubernetes_pod_label_app_kubernetes_io_name"] = "mlserve"
    meta["__meta_kubernetes_namespace"] = "test"
    # Each pod's address as Kubernetes discovery gives it (a container port); the
    # annotation's port replaces it.
    targets = [
        {
            "targets": ["127.0.0.1:9"],
            "labels": {
                **meta,
                "__meta_kubernetes_pod_annotation_prometheus_io_port": str(server_port),
                "__meta_kubernetes_pod_name": f"mlserve-{i}",
            },
        }
        for i, server_port in enumerate(server_ports)
    ]
    (workdir / "targets.json").write_text(json.dumps(targets))
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": f"{scrape_s}s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(workdir / "rules.yml")]
    job = config["scrape_configs"][0]
    del job["kubernetes_sd_configs"]
    job["file_sd_configs"] = [{"files": [str(workdir / "targets.json")]}]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = port or free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log_path)
    try:

        def ready() -> bool:
            assert proc.poll() is None, f"prometheus exited:\n{prom.log()}"
            return httpx.get(prom.url + "/-/ready", timeout=1).status_code == 200

        wait_for(ready, 30, what="Prometheus to start", detail=prom.log, ignore=(httpx.HTTPError,))
        yield prom
    finally:
        stop_process(proc, 30)
