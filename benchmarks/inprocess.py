"""What monitoring costs per request, in process: monitoring on minus ``--monitoring off``.

Two apps over the same registry (the demo logistic regression ``lr`` with its reference
profile, as in ``benchmarks/serve.py``), one with monitoring on and one off, are called as
ASGI applications with the same whole V2 request, without sockets. Both lanes call the same
core, and a success is recorded (request stats, drift windows) by that core, so the on − off
difference is the same on either lane. The apps take turns every ``CHUNK`` requests, so both
see the same moments of a busy machine; a round's figure is each app's CPU time per request
on the event loop's thread (``time.thread_time``: onnxruntime's idle spinning threads and
the other processes on the machine stay out of it), and on − off is the median of the
rounds' paired differences::

    python -m benchmarks.inprocess --rounds 9
    python -m benchmarks.inprocess --rounds 9 --batch 1000 --encoding binary --requests 400
    python -m benchmarks.inprocess --profile     # cProfile of the monitoring-on app
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mlserve.config import ServerSettings
from mlserve.http.app import create_app

from .serve import make_registry

MODES = ("off", "on")
CHUNK = 100  # requests an app answers before the other takes its turn
CLOCKS = {"thread": time.thread_time, "process": time.process_time, "wall": time.perf_counter}


def request(encoding: str, batch: int, n_features: int) -> tuple[dict[str, Any], bytes]:
    """An ASGI scope and body for ``lr``, as ``benchmarks/serve.py`` sends them."""
    x = np.random.default_rng(batch).standard_normal((batch, n_features)).astype(np.float32)
    tensor: dict[str, Any] = {"name": "X", "datatype": "FP32", "shape": [batch, n_features]}
    headers = [(b"content-type", b"application/json")]
    if encoding == "json":
        body = orjson.dumps({"inputs": [{**tensor, "data": x.ravel().tolist()}]})
    else:
        outputs = [
            {"name": n, "parameters": {"binary_data": True}} for n in ("label", "probabilities")
        ]
        header = orjson.dumps(
            {
                "inputs": [{**tensor, "parameters": {"binary_data_size": x.nbytes}}],
                "outputs": outputs,
            }
        )
        body = header + x.tobytes()
        headers.append((b"inference-header-content-length", b"%d" % len(header)))
    headers.append((b"content-length", b"%d" % len(body)))
    scope = {
        "type": "http", "method": "POST", "headers": headers, "path": "/v2/models/lr/infer",
        "query_string": b"", "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 50000),
    }  # fmt: skip
    return scope, body


class Server:
    """One app (monitoring on or off), called as an ASGI application in process."""

    def __init__(self, registry: Path, monitoring: str) -> None:
        settings = ServerSettings(
            registry=registry, overload_delay_ms=0, poll_seconds=0, monitoring=monitoring
        )
        self.app = create_app(settings)
        self.app.store.load_all()
        self.status = 0

    async def one(self, scope: dict[str, Any], body: bytes) -> None:
        message = {"type": "http.request", "body": body, "more_body": False}

        async def receive() -> dict[str, Any]:
            return message

        async def send(event: dict[str, Any]) -> None:
            if event["type"] == "http.response.start":
                self.status = event["status"]

        await self.app(scope, receive, send)

    async def cpu_us(self, scope: dict[str, Any], body: bytes, n: int, clock: Any) -> float:
        start = clock()
        for _ in range(n):
            await self.one(scope, body)
        return (clock() - start) / n * 1e6

    def close(self) -> None:
        self.app.service.close()


async def run(args: argparse.Namespace) -> dict[str, list[float]]:
    workdir = Path(tempfile.mkdtemp(prefix="inprocess-"))
    registry = make_registry(workdir, 0)
    servers = {mode: Server(registry, mode) for mode in MODES}
    scope, body = request(args.encoding, args.batch, 20)
    clock = CLOCKS[args.clock]
    for server in servers.values():  # warm up, and check the answer is a success
        await server.cpu_us(scope, body, max(100, args.requests // 5), clock)
        assert server.status == 200, server.status
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    chunk = max(1, min(CHUNK, args.requests))
    turns = max(1, args.requests // chunk)
    for _ in range(args.rounds):
        spent = dict.fromkeys(MODES, 0.0)
        for turn in range(turns):
            for mode in MODES if turn % 2 == 0 else MODES[::-1]:
                spent[mode] += await servers[mode].cpu_us(scope, body, chunk, clock)
        for mode in MODES:
            times[mode].append(spent[mode] / turns)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await servers["on"].cpu_us(scope, body, args.requests, clock)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    for server in servers.values():
        server.close()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=2000, help="per app and round")
    parser.add_argument("--batch", type=int, default=1, help="rows per request")
    parser.add_argument("--encoding", choices=["json", "binary"], default="json")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="thread")
    parser.add_argument("--profile", action="store_true", help="cProfile the monitoring-on app")
    args = parser.parse_args(argv)
    times = asyncio.run(run(args))
    diffs = [on - off for on, off in zip(times["on"], times["off"], strict=True)]
    print(
        f"{args.clock} CPU per request, {args.encoding} batch {args.batch}, medians of "
        f"{args.rounds} rounds x {args.requests} requests (apps alternating every {CHUNK}):"
    )
    for mode in MODES:
        values = times[mode]
        print(
            f"  monitoring {mode:<3} {statistics.median(values):9.1f} µs  "
            f"(min {min(values):.1f}, max {max(values):.1f})"
        )
    print(
        f"  on - off       {statistics.median(diffs):9.2f} µs  "
        f"(rounds: {', '.join(f'{d:.2f}' for d in sorted(diffs))})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
