"""CPU per request of the infer core alone: ``InferHandler.head``, ``run`` and ``finish``.

    python -m benchmarks.core_cpu --requests 10000 --rounds 5

No protocol and no sockets: the same V2 JSON request as ``benchmarks.lane_cpu`` (the demo's
logistic regression with its reference profile, monitoring on), handed to the core that both
lanes call, on uvloop. It isolates what the serving core costs per request from the HTTP
work around it. The median and fastest of the rounds are printed, in µs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import uvloop

from mlserve.config import ServerSettings
from mlserve.http.app import create_app
from mlserve.http.infer import Reply

from .lane_cpu import _request
from .serve import make_registry


async def measure(requests: int, rounds: int) -> list[float]:
    """µs of CPU per request for each round."""
    registry = make_registry(Path(tempfile.mkdtemp(prefix="core-cpu-")), 0)
    settings = ServerSettings(
        registry=registry, overload_delay_ms=0, poll_seconds=0, monitoring="on"
    )
    app = create_app(settings)
    app.store.load_all()
    app.service.hub.mark_ready()
    spec = app.store.resolve("lr").session.inputs[0]
    body = _request(spec.name, int(spec.shape[1])).split(b"\r\n\r\n", 1)[1]
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    core = app.infer

    async def one() -> None:
        head = core.head("POST", "/v2/models/lr/infer", headers)
        assert not isinstance(head, Reply), head.body
        reply = await core.run(head, body)
        core.finish(reply)

    for _ in range(3000):  # warm up
        await one()
    results = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(requests):
            await one()
        results.append((time.process_time() - start) / requests * 1e6)
    app.service.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = sorted(uvloop.run(measure(args.requests, args.rounds)))
    median = results[len(results) // 2]
    print(f"core: {median:.2f} µs CPU per request (fastest round {results[0]:.2f})")


if __name__ == "__main__":
    main()
