"""What loading within a deadline costs, and what stops a runaway graph.

    python -m benchmarks.load_costs                 # ~1 minute
    python -m benchmarks.load_costs --rounds 7 --skip-stops

Per model (the demo's credit-risk and iris, a 20 → 3 linear model, a 256→1024→1024→10 MLP),
loads alternating between settings, process time per load, medians of ``--rounds``:
``io_binding`` auto (bound and plain runs timed at warm-up) against off, with the bound and
plain medians and what auto chose; the node-provider profile on against off; and
``load_version`` (its deadline thread) against building and warming up the session inline.
Then what stops a runaway ``Loop`` of 10^12 trips: ``RunOptions.terminate`` set from another
thread (latency), the same against two 3000×3000 ``MatMul``s (it stops at the next operator),
and a probe process (spawned interpreter, session, one run) per load. Prints JSON lines.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from benchmarks.gpu import mlp_model
from mlserve.config import ExecutionConfig, InputPolicy
from mlserve.demo import build_demo
from mlserve.runtime.session import ModelSession, load_version


def loop_model(trips: int) -> onnx.ModelProto:
    """``y = x + trips``, one ``Add`` per trip of a ``Loop``."""
    one = numpy_helper.from_array(np.ones(1, np.float32))
    body = helper.make_graph(
        [
            helper.make_node("Constant", [], ["one"], value=one),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1]),
        ],
    )
    trips_value = numpy_helper.from_array(np.array(trips, np.int64))
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["M"], value=trips_value),
            helper.make_node("Constant", [], ["C"], value=numpy_helper.from_array(np.array(True))),
            helper.make_node("Loop", ["M", "C", "x"], ["y"], body=body),
        ],
        "loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def linear_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((20, 3)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "linear",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 20])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def cpu_ms(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.process_time()
    out = fn()
    return (time.process_time() - start) * 1e3, out


def inline_load(vdir: Path, node_report: str = "auto", binding: str = "auto") -> ModelSession:
    config = ExecutionConfig(io_binding=binding)
    session = ModelSession(
        "m", 1, vdir / "model.onnx", config, InputPolicy(), 1 << 24, node_report=node_report
    )
    session.warm_up(vdir / "samples.npz")
    return session


def _settings(vdir: Path) -> dict[str, Callable[[], Any]]:
    return {
        "binding_auto": lambda: inline_load(vdir, binding="auto"),
        "binding_off": lambda: inline_load(vdir, binding="off"),
        "profile_on": lambda: inline_load(vdir, node_report="on"),
        "profile_off": lambda: inline_load(vdir, node_report="off"),
        "deadline_thread": lambda: load_version(
            "m", 1, vdir, ExecutionConfig(), InputPolicy(), 1 << 24
        ),
        "inline": lambda: inline_load(vdir),
    }


def load_costs(models: dict[str, Path], rounds: int) -> None:
    for name, vdir in models.items():
        times: dict[str, list[float]] = {}
        chosen: list[dict[str, Any]] = []
        settings = _settings(vdir)
        for _ in range(rounds):
            for key, fn in settings.items():
                ms, session = cpu_ms(fn)
                times.setdefault(key, []).append(ms)
                if key == "binding_auto":
                    chosen.append(session.describe()["io_binding"])
        print(
            json.dumps(
                {
                    "model": name,
                    "load_cpu_ms": {k: round(statistics.median(v), 2) for k, v in times.items()},
                    "bound_us": statistics.median(c["bound_us"] for c in chosen),
                    "plain_us": statistics.median(c["plain_us"] for c in chosen),
                    "auto_chose": [c["chosen"] for c in chosen],
                }
            )
        )


def stop_latency(model: bytes, feeds: dict[str, np.ndarray], after_s: float) -> dict[str, Any]:
    """Run ``model`` on a thread, set ``terminate`` after ``after_s``: when did it end?"""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    run_options = ort.RunOptions()
    outcome: dict[str, Any] = {}

    def run() -> None:
        start = time.perf_counter()
        try:
            session.run(None, feeds, run_options)
            outcome["ended"] = "finished"
        except Exception as exc:
            outcome["ended"] = "stopped" if "terminate" in str(exc) else str(exc)[:80]
        outcome["run_s"] = round(time.perf_counter() - start, 4)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    time.sleep(after_s)
    told = time.perf_counter()
    run_options.terminate = True
    worker.join(60)
    outcome["after_told_ms"] = round((time.perf_counter() - told) * 1e3, 2)
    return outcome


def matmul_model(n: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["A", "A"], ["B"]),
            helper.make_node("MatMul", ["B", "B"], ["C"]),
        ],
        "matmul",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("C", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def probe_cost(path: Path, runs: int) -> dict[str, float]:
    code = (
        "import sys, numpy as np, onnxruntime as ort\n"
        "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
        "s.run(None, {'x': np.zeros(1, np.float32)})\n"
    )
    wall, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, str(path)], check=True)
        wall.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return {"wall_s": round(statistics.median(wall), 3), "cpu_s": round(statistics.median(cpu), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--skip-stops", action="store_true", help="load costs only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlserve-load-costs-") as tmp:
        root = Path(tmp)
        demo = build_demo(root / "demo")
        models = {d.name: d / "1" for d in sorted(demo.iterdir()) if (d / "1/model.onnx").exists()}
        for name, build in (("linear", linear_model), ("mlp", None)):
            vdir = root / name / "1"
            vdir.mkdir(parents=True)
            if build is None:
                mlp_model(vdir / "model.onnx")
            else:
                onnx.save(build(), vdir / "model.onnx")
            models[name] = vdir
        load_costs(models, args.rounds)
        if args.skip_stops:
            return
        x = {"x": np.zeros(1, np.float32)}
        runaway = loop_model(10**12).SerializeToString()
        print(json.dumps({"terminate": "Loop 10^12 trips", **stop_latency(runaway, x, 1.0)}))
        a = {"A": np.ones((3000, 3000), np.float32)}
        print(json.dumps({"terminate": "2 MatMul 3000x3000", **stop_latency(
            matmul_model(3000).SerializeToString(), a, 0.3)}))  # fmt: skip
        small = root / "loop5.onnx"
        onnx.save(loop_model(5), small)
        print(json.dumps({"probe_process_per_load": probe_cost(small, 5)}))


if __name__ == "__main__":
    main()
