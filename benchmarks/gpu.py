"""The GPU path beside the CPU path, in one run: onnxruntime's CUDA provider against its CPU
provider, in-process and served by mlserve over HTTP.

Models: the demo's logistic regression (``lr``) and gradient-boosted trees (``gbm``; the
ai.onnx.ml tree operators have no CUDA kernels, so onnxruntime places them on the CPU and
this measures the fallback), and a generated MLP (``mlp``, 256 → 1024 → 1024 → 10, float32)
that a GPU should win on at larger batches. For each provider, with IO binding
on and off, it reports the median and p99 latency of ``ModelSession.run`` at each batch size,
then serves every model from a registry whose ``model.toml`` asks for that provider and
drives it over loopback with a small asyncio client (throughput, p50, p99)::

    python -m benchmarks.gpu                       # CUDA and CPU (exit 1 if CUDA is missing)
    python -m benchmarks.gpu --providers CPUExecutionProvider --seconds 1   # CPU only

``benchmarks/gpu_check.sh`` installs the GPU extra and runs this on a GPU machine.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from mlserve.config import ExecutionConfig, InputPolicy
from mlserve.demo import build_demo
from mlserve.runtime.session import ModelSession

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def mlp_model(path: Path, sizes: tuple[int, ...] = (256, 1024, 1024, 10)) -> None:
    """A float32 MLP with ReLU, input ``X`` [N, sizes[0]], output ``Y``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "X"
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        w = (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(
            np.zeros(b, np.float32), f"B{i}")]  # fmt: skip
        nodes += [helper.make_node("MatMul", [prev, f"W{i}"], [f"M{i}"]),
                  helper.make_node("Add", [f"M{i}", f"B{i}"], [f"A{i}"])]  # fmt: skip
        prev = f"A{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"R{i}"]))
            prev = f"R{i}"
    nodes.append(helper.make_node("Identity", [prev], ["Y"]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, sizes[0]])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, sizes[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def registry_for(root: Path, demo: Path, provider: str) -> Path:
    """A registry of lr, gbm and mlp whose model.toml asks for ``provider``."""
    reg = root / provider
    sources = {"lr": demo / "credit-risk" / "1", "gbm": demo / "credit-risk" / "2"}
    for name, src in sources.items():
        (reg / name / "1").mkdir(parents=True)
        (reg / name / "1" / "model.onnx").write_bytes((src / "model.onnx").read_bytes())
    mlp_model(reg / "mlp" / "1" / "model.onnx")
    for name in ("lr", "gbm", "mlp"):
        (reg / name / "model.toml").write_text(
            f'[execution]\nproviders = ["{provider}"]\nmode = "thread"\n'
        )
    return reg


def in_process(model: Path, provider: str, binding: str, batch: int, runs: int) -> dict[str, Any]:
    session = ModelSession(
        "m", 1, model, ExecutionConfig(providers=(provider,), io_binding=binding),
        InputPolicy(max_rows=1 << 20), 1 << 40,
    )  # fmt: skip
    spec = session.inputs[0]
    x = np.random.default_rng(1).normal(size=(batch, spec.shape[1])).astype(np.float32)
    feeds = {spec.name: x}
    for _ in range(10):
        session.run(feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(feeds)
        times.append(time.perf_counter() - start)
    return {
        "provider_in_use": session.providers[0],
        "io_binding": session.io_device,
        "median_us": statistics.median(times) * 1e6,
        "p99_us": float(np.percentile(times, 99)) * 1e6,
        "rows_per_s": batch / statistics.median(times),
    }


async def drive(url: str, body: bytes, seconds: float, concurrency: int) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            r = await client.post(url, content=body, headers={"content-type": "application/json"})
            latencies.append(time.perf_counter() - start)
            errors += r.status_code != 200

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        await asyncio.gather(*(one(client) for _ in range(concurrency)))
    return {
        "requests_per_s": len(latencies) / seconds,
        "p50_us": float(np.percentile(latencies, 50)) * 1e6,
        "p99_us": float(np.percentile(latencies, 99)) * 1e6,
        "errors": errors,
    }


def served(registry: Path, batches: list[int], seconds: float, conc: int) -> list[dict[str, Any]]:
    import httpx

    from benchmarks.serve import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "mlserve", "serve", "--registry", str(registry),
           "--port", str(port), "--log-level", "warning", "--monitoring", "on"]  # fmt: skip
    proc = subprocess.Popen(cmd)
    rows = []
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(base + "/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        for name in ("lr", "gbm", "mlp"):
            meta = httpx.get(f"{base}/v2/models/{name}").json()
            width = meta["inputs"][0]["shape"][1]
            providers = meta["parameters"]["versions"]["1"]["providers"]
            for batch in batches:
                x = np.random.default_rng(2).normal(size=(batch, width)).astype(np.float32)
                body = json.dumps({"inputs": [{"name": meta["inputs"][0]["name"],
                                   "datatype": "FP32", "shape": [batch, width],
                                   "data": x.ravel().tolist()}]}).encode()  # fmt: skip
                found = asyncio.run(drive(f"{base}/v2/models/{name}/infer", body, seconds, conc))
                rows.append({"model": name, "batch": batch, "providers": providers, **found})
    finally:
        proc.terminate()
        proc.wait(60)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", default=f"{CUDA},{CPU}")
    parser.add_argument("--batches", default="1,64,1024")
    parser.add_argument("--runs", type=int, default=300, help="in-process runs per cell")
    parser.add_argument("--seconds", type=float, default=5.0, help="HTTP load per cell")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args()
    providers = args.providers.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    available = ort.get_available_providers()
    print(f"onnxruntime {ort.__version__}, available providers: {', '.join(available)}")
    missing = [p for p in providers if p not in available]
    if missing:
        print(f"NOT AVAILABLE: {', '.join(missing)} (mlserve would fall back to CPU)")
    result: dict[str, Any] = {
        "onnxruntime": ort.__version__,
        "available": available,
        "machine": platform.platform(),
        "in_process": [],
        "served": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        demo = build_demo(Path(tmp) / "demo")
        print("\nin-process ModelSession.run: median / p99 µs (rows/s)")
        for provider in [p for p in providers if p in available]:
            reg = registry_for(Path(tmp), demo, provider)
            bindings = ["off", "on"]  # on the CPU provider too: what binding costs there
            for name in ("lr", "gbm", "mlp"):
                for binding in bindings:
                    for batch in batches:
                        model = reg / name / "1" / "model.onnx"
                        row = in_process(model, provider, binding, batch, args.runs)
                        row.update(model=name, provider=provider, batch=batch)
                        result["in_process"].append(row)
                        print(f"  {provider:22} io_binding={binding:3} {name:4} batch {batch:5}: "
                              f"{row['median_us']:9.1f} / {row['p99_us']:9.1f} "
                              f"({row['rows_per_s']:,.0f})")  # fmt: skip
        print(f"\nserved by mlserve, concurrency {args.concurrency}: req/s, p50 / p99 µs")
        for provider in [p for p in providers if p in available]:
            reg = Path(tmp) / provider
            for row in served(reg, batches[:2], args.seconds, args.concurrency):
                row["provider"] = provider
                result["served"].append(row)
                print(
                    f"  {provider:22} {row['model']:4} batch {row['batch']:5}: "
                    f"{row['requests_per_s']:8.0f} req/s, {row['p50_us']:8.0f} / "
                    f"{row['p99_us']:8.0f}  errors {row['errors']}  ({row['providers'][0]})"
                )
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    # onnxruntime-gpu lists CUDA even where it cannot start (no driver, missing CUDA/cuDNN
    # libraries) and then runs on the CPU: judge by the provider the sessions really used.
    unused = sorted(
        {r["provider"] for r in result["in_process"] if r["provider_in_use"] != r["provider"]}
    )
    if unused:
        print(f"NOT USED: {', '.join(unused)} fell back to {CPU} (figures above are CPU's)")
    return 1 if missing or unused else 0


if __name__ == "__main__":
    sys.exit(main())
