"""Per-request cost of the application itself: the ASGI app called in a loop, no network.

Compares the raw ASGI floor (``benchmarks/floors.py``), mlserve with monitoring off and
mlserve with monitoring on, on the demo logistic regression, alternating over rounds::

    python -m benchmarks.inprocess --rounds 15 --requests 3000

This isolates the Python mlserve adds per request from uvicorn and the kernel's network
stack (on a live server the difference is larger: caches are colder between requests).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mlserve.config import ServerSettings
from mlserve.demo import build_demo
from mlserve.http.app import create_app


async def per_request_us(app: Any, scope: dict[str, Any], body: bytes, n: int) -> float:
    message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(_: dict[str, Any]) -> None:
        return None

    start = time.perf_counter()
    for _ in range(n):
        await app(scope, receive, send)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        registry = build_demo(Path(tmp) / "demo")
        model = registry / "credit-risk" / "1" / "model.onnx"
        os.environ["FLOOR_MODELS"] = f"credit-risk={model}"
        from benchmarks.floors import raw_app

        apps = {"floor-asgi": raw_app()}
        for mode in ("off", "on"):
            app = create_app(ServerSettings(registry=registry, monitoring=mode))
            app.store.load_all()
            apps[f"mlserve-{mode}"] = app
        x = np.random.default_rng(0).standard_normal((1, 20)).astype(np.float32)
        body = orjson.dumps(
            {
                "inputs": [
                    {"name": "X", "datatype": "FP32", "shape": [1, 20], "data": x.ravel().tolist()}
                ]
            }
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        paths = {"floor-asgi": "/v2/models/credit-risk/infer"}
        scopes = {
            name: {"type": "http", "method": "POST", "headers": headers,
                   "path": paths.get(name, "/v2/models/credit-risk/versions/1/infer")}
            for name in apps
        }  # fmt: skip

        async def run() -> dict[str, list[float]]:
            times: dict[str, list[float]] = {name: [] for name in apps}
            for name, app in apps.items():  # warm up
                await per_request_us(app, scopes[name], body, 1000)
            for _ in range(args.rounds):
                for name, app in apps.items():
                    times[name].append(await per_request_us(app, scopes[name], body, args.requests))
            return times

        times = asyncio.run(run())
    floor = statistics.median(times["floor-asgi"])
    print(f"per request, medians of {args.rounds} rounds × {args.requests} (min in brackets):")
    for name, values in times.items():
        med = statistics.median(values)
        print(
            f"  {name:<12} {med:7.1f} µs  [{min(values):6.1f}]  +{med - floor:5.1f} µs "
            "over the floor"
        )


if __name__ == "__main__":
    main()
