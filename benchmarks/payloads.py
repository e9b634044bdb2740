"""What payload logging costs a request: off, on, and on with a full queue.

The ASGI app is called in a loop (no network, as ``benchmarks/inprocess.py``) on the demo
logistic regression with ``[payloads] sample = 1.0`` (every request logged), alternating
over rounds between three servers: ``off`` (no payload directory), ``on`` (a queue of
10,000: every record written by the writer thread, which competes for the GIL) and
``full`` (a queue of one: nearly every record dropped and counted). A full queue must cost
no more than logging off, whatever the writer does::

    python -m benchmarks.payloads --rounds 9 --requests 3000

Prints per-request medians (µs) with ratios to ``off``, and what each server logged and
dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mlserve.config import ServerSettings
from mlserve.demo import build_demo
from mlserve.http.app import create_app

from .inprocess import per_request_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        demo = build_demo(Path(tmp) / "demo")
        registry = Path(tmp) / "registry"
        target = registry / "lr" / "1"
        target.mkdir(parents=True)
        for file in ("model.onnx", "lineage.json", "samples.npz", "reference.json"):
            if (demo / "credit-risk" / "1" / file).exists():
                shutil.copy(demo / "credit-risk" / "1" / file, target / file)
        (registry / "lr" / "model.toml").write_text("[payloads]\nsample = 1.0\n")
        variants = {"off": {}, "on": {"payload_queue": 10_000}, "full": {"payload_queue": 1}}
        apps = {}
        for name, extra in variants.items():
            settings: dict[str, Any] = {"registry": registry, **extra}
            if name != "off":
                settings["payload_dir"] = str(Path(tmp) / f"payloads-{name}")
            app = create_app(ServerSettings(**settings))
            app.store.load_all()
            apps[name] = app
        gc.freeze()  # as the server does once its registry has loaded
        x = np.random.default_rng(0).standard_normal((1, 20)).astype(np.float32)
        body = orjson.dumps(
            {
                "id": "bench",
                "inputs": [
                    {"name": "X", "datatype": "FP32", "shape": [1, 20], "data": x.ravel().tolist()}
                ],
            }
        )
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v2/models/lr/infer",
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }

        async def run() -> dict[str, list[float]]:
            times: dict[str, list[float]] = {name: [] for name in apps}
            for app in apps.values():  # warm up
                await per_request_us(app, scope, body, 500)
            names = list(apps)
            for r in range(args.rounds):
                for name in names[r % 3 :] + names[: r % 3]:  # each goes first in turn
                    await asyncio.sleep(0.3)  # the writer has caught up: it is not measured
                    times[name].append(await per_request_us(apps[name], scope, body, args.requests))
            return times

        times = asyncio.run(run())
        counts = {}
        for name, app in apps.items():
            app.service.close()  # drains the payload queue
            logger = app.service.payloads
            counts[name] = logger.state()["payloads"].get("lr") if logger is not None else None
    base = statistics.median(times["off"])
    print(
        f"per request, medians of {args.rounds} rounds × {args.requests} (min in brackets); "
        "demo logistic regression, every request sampled:"
    )
    for name, values in times.items():
        med = statistics.median(values)
        state = counts[name]
        what = (
            "payload logging off"
            if state is None
            else f"logged {state['logged']}, dropped {state['dropped']} of "
            f"{args.rounds * args.requests + 500}"
        )
        print(f"  {name:<5} {med:7.1f} µs  [{min(values):6.1f}]  ×{med / base:5.2f}   {what}")


if __name__ == "__main__":
    main()
