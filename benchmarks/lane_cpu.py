"""CPU per request of each lane, in process, without sockets: the Python work alone.

    python -m benchmarks.lane_cpu                  # floor and both lanes, monitoring on
    python -m benchmarks.lane_cpu --profile fast   # and where the fast lane's time goes
    python -m benchmarks.lane_cpu --lanes floor,floor-own  # the two protocols, same app

``floor`` is the raw ASGI floor app of ``benchmarks/serve.py`` behind uvicorn's own protocol.
mlserve's protocol class (``HttpConnection``, the fast lane, or ``AsgiConnection``, as with
``--fast-lane off``) is fed whole V2 JSON requests through ``data_received`` on a running
uvloop, as uvicorn feeds it, with a transport that keeps what is written instead of sending
it. What it measures is therefore the server's own per-request CPU — parsing, the ASGI cycle
or the fast lane, decoding, routing, the onnxruntime call, monitoring and encoding — without
the loopback syscalls and the load generator, which share the machine's two cores in
``benchmarks/serve.py`` and make its figures noisy. The model is the demo's logistic
regression (``lr``) with its reference profile, as in ``benchmarks/serve.py``. ``--profile``
adds a cProfile breakdown (cProfile inflates every Python call, so read it for proportions).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

import onnxruntime as ort
import orjson
import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from mlserve.config import ServerSettings
from mlserve.http.app import create_app
from mlserve.http.connection import AsgiConnection, HttpConnection

from .floors import raw_app
from .serve import make_registry


class _Transport(asyncio.Transport):
    """Keeps the bytes written; never closes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.last = b""
        self.closing = False

    def write(self, data: Any) -> None:
        self.written += 1
        self.last = bytes(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _request(name: str, n_features: int) -> bytes:
    body = orjson.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": [1, n_features],
                    "datatype": "FP32",
                    "data": [0.5 + i / 10 for i in range(n_features)],
                }
            ]
        }
    )
    head = (
        b"POST /v2/models/lr/infer HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
    )
    return head + body


async def _measure(
    lane: str, requests: int, profile: bool, monitoring: str = "on"
) -> tuple[float, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="lane-cpu-"))
    registry = make_registry(workdir, 0)
    if lane in ("floor", "floor-own"):
        return await _measure_floor(registry, requests, lane == "floor-own")
    settings = ServerSettings(
        registry=registry, overload_delay_ms=0, poll_seconds=0, monitoring=monitoring
    )
    app = create_app(settings)
    app.store.load_all()
    app.service.hub.mark_ready()
    config = Config(
        app=app, http="httptools", loop="none", access_log=False, lifespan="off",
        proxy_headers=False,
    )  # fmt: skip
    config.load()
    protocol_class = HttpConnection if lane == "fast" else AsgiConnection
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = _Transport()
    protocol.connection_made(transport)
    spec = app.store.resolve("lr").session.inputs[0]
    data = _request(spec.name, int(spec.shape[1]))

    async def one() -> None:
        protocol.data_received(data)
        while not protocol.current.done:  # answered from a loop callback or a task
            await asyncio.sleep(0)

    for _ in range(2000):  # warm up
        await one()
    assert b'"outputs"' in transport.last, transport.last[:300]
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    start = time.process_time()
    for _ in range(requests):
        await one()
    cpu = time.process_time() - start
    if profiler is not None:
        profiler.disable()
    app.service.close()
    return cpu / requests * 1e6, profiler


async def _measure_floor(registry: Path, requests: int, own: bool) -> tuple[float, Any]:
    """The raw ASGI floor app (``benchmarks/floors.py``) behind uvicorn's own protocol, or
    (``own``) behind mlserve's ``AsgiConnection``: the two protocols' costs, same app."""
    os.environ["FLOOR_MODELS"] = f"lr={registry / 'lr' / '1' / 'model.onnx'}"
    config = Config(
        app=raw_app(), http="httptools", loop="none", access_log=False, lifespan="off",
        proxy_headers=False,
    )  # fmt: skip
    config.load()
    protocol_class: Any = AsgiConnection if own else HttpToolsProtocol
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = _Transport()
    protocol.connection_made(transport)
    session = ort.InferenceSession(str(registry / "lr" / "1" / "model.onnx"))
    spec = session.get_inputs()[0]
    data = _request(spec.name, int(spec.shape[1]))

    def answered() -> bool:
        return bool(protocol.current.done if own else protocol.cycle.response_complete)

    async def one() -> None:
        protocol.data_received(data)
        while not answered():
            await asyncio.sleep(0)

    for _ in range(2000):
        await one()
    assert b'"outputs"' in transport.last, transport.last[:300]
    start = time.process_time()
    for _ in range(requests):
        await one()
    return (time.process_time() - start) / requests * 1e6, None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--profile", choices=["fast", "asgi"], default=None)
    p.add_argument("--monitoring", choices=["on", "off"], default="on")
    p.add_argument(
        "--lanes",
        default="floor,asgi,fast",
        help="comma-separated, of floor, floor-own (the floor app on mlserve's protocol), "
        "asgi, fast",
    )
    args = p.parse_args(argv)
    lanes = args.lanes.split(",")
    results: dict[str, list[float]] = {lane: [] for lane in lanes}
    for _ in range(args.rounds):  # alternating, medians
        for lane in lanes:
            us, _ = uvloop.run(_measure(lane, args.requests, False, args.monitoring))
            results[lane].append(us)
    for lane, values in results.items():
        values.sort()
        median = values[len(values) // 2]
        print(f"{lane:9s} lane: {median:6.1f} µs CPU per request (rounds {values})")
    if args.profile:
        _, profiler = uvloop.run(_measure(args.profile, args.requests, True, args.monitoring))
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
