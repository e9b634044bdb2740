"""Latency of one JSON inference at concurrency 1: mlserve over HTTP vs onnxruntime in-process.

Starts ``mlserve serve`` on the demo registry (built in a temporary directory unless
``--registry`` is given), sends sequential requests over one keep-alive connection,
and times the same input through an in-process onnxruntime session. Prints medians
per run, the median over runs, and the ratio.

    python -m benchmarks.latency --runs 5 --requests 2000
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson

from benchmarks.serve import free_port, wait_ready


def http_median_us(port: int, path: str, body: bytes, n: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"content-type": "application/json"}
    for _ in range(200):  # warm the connection and the server
        conn.request("POST", path, body, headers)
        conn.getresponse().read()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        conn.request("POST", path, body, headers)
        resp = conn.getresponse()
        resp.read()
        times.append(time.perf_counter() - start)
        assert resp.status == 200
    conn.close()
    return statistics.median(times) * 1e6


def ort_median_us(model: Path, x: np.ndarray, n: int) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    for _ in range(200):
        sess.run(None, {"X": x})
    times = []
    for _ in range(n):
        start = time.perf_counter()
        sess.run(None, {"X": x})
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path)
    parser.add_argument("--model", default="credit-risk")
    parser.add_argument("--version", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    registry = args.registry
    if registry is None:
        from mlserve.demo import build_demo

        registry = build_demo(Path(tmp.name) / "demo")
    model_file = registry / args.model / str(args.version) / "model.onnx"
    n_features = ort.InferenceSession(str(model_file)).get_inputs()[0].shape[1]
    x = np.random.default_rng(0).standard_normal((1, n_features)).astype(np.float32)
    body = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "datatype": "FP32",
                    "shape": [1, n_features],
                    "data": x.ravel().tolist(),
                }
            ]
        }
    )
    path = f"/v2/models/{args.model}/versions/{args.version}/infer"

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlserve",
            "serve",
            "--registry",
            str(registry),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
    )
    try:
        wait_ready(port, proc, "mlserve")
        served, local = [], []
        for run in range(args.runs):
            served.append(http_median_us(port, path, body, args.requests))
            local.append(ort_median_us(model_file, x, args.requests))
            print(
                f"run {run + 1}: mlserve HTTP {served[-1]:.1f} µs, "
                f"onnxruntime in-process {local[-1]:.1f} µs"
            )
    finally:
        proc.terminate()
        proc.wait(30)
        tmp.cleanup()
    s, o = statistics.median(served), statistics.median(local)
    print(
        f"median over {args.runs} runs of {args.requests} requests: "
        f"mlserve {s:.1f} µs, onnxruntime {o:.1f} µs, ratio {s / o:.1f}x, "
        f"server+HTTP overhead {s - o:.1f} µs ({args.model} v{args.version}, JSON, batch 1)"
    )


if __name__ == "__main__":
    main()
