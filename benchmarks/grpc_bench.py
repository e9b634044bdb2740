"""gRPC against HTTP on the same server, driven by one Python load generator.

    python -m benchmarks.grpc_bench                  # batch 1 and 1,000 rows × 20 features
    python -m benchmarks.grpc_bench --duration 2 --rounds 1 --concurrency 8   # a smoke run

One mlserve process (monitoring on, ``--grpc-port``) serves a 20-feature FP32 linear model.
wrk cannot speak gRPC, so every encoding is driven by the same asyncio load generator in
this process, with each request encoded once up front so that the client's cost per
request is about equal: ``http-json`` (V2 JSON), ``http-binary`` (Triton's binary tensor
extension) over keep-alive HTTP/1.1 connections of asyncio streams, one per concurrent
caller, and ``grpc`` (``ModelInfer`` with ``raw_input_contents``, serialised bytes sent as
they are) over one ``grpc.aio`` channel; ``grpc-floor`` sends the same message to a bare
``grpc.aio`` server on uvloop that answers each call with its request's bytes (this module
with ``--serve-floor PORT``): what grpc.aio costs before any of mlserve's work. The
encodings alternate within each round; the
server's CPU per request (from /proc) is the figure that a busy machine disturbs least.
Results go to ``benchmarks/results/grpc_bench.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import orjson
from onnx import TensorProto, helper

from mlserve.grpc import _protocol as pb

ROOT = Path(__file__).resolve().parent.parent
ENCODINGS = ("http-json", "http-binary", "grpc", "grpc-floor")
N_FEATURES = 20
METHOD = "/inference.GRPCInferenceService/ModelInfer"


def linear_model(n_features: int = N_FEATURES) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def requests_for(batch: int, port: int) -> dict[str, bytes]:
    """Each encoding's request, encoded once (HTTP: the whole request with its head)."""
    x = np.random.default_rng(1).standard_normal((batch, N_FEATURES)).astype(np.float32)
    path = b"/v2/models/linear/infer"
    json_body = orjson.dumps(
        {"inputs": [{"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.tolist()}]}
    )
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    binary_body = header + x.tobytes()

    def http(body: bytes, extra: bytes = b"") -> bytes:
        return (
            b"POST %s HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n%s\r\n" % (path, port, len(body), extra)
        ) + body

    message = pb.ModelInferRequest(model_name="linear", raw_input_contents=[x.tobytes()])
    message.inputs.add(name="X", datatype="FP32", shape=list(x.shape))
    return {
        "http-json": http(json_body),
        "http-binary": http(binary_body, b"inference-header-content-length: %d\r\n" % len(header)),
        "grpc": message.SerializeToString(),
    }


async def _http_caller(port: int, request: bytes, until: float, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode("latin-1"))
            length = int(head.lower().split(b"\r\ncontent-length: ", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
    finally:
        writer.close()


async def _grpc_caller(call: Any, request: bytes, until: float, latencies: list[float]) -> None:
    while time.perf_counter() < until:
        start = time.perf_counter()
        await call(request)
        latencies.append(time.perf_counter() - start)


async def drive(encoding: str, request: bytes, args: argparse.Namespace) -> list[float]:
    """``args.concurrency`` callers for ``args.duration`` seconds; the latencies."""
    latencies: list[float] = []
    until = time.perf_counter() + args.duration
    if encoding.startswith("grpc"):
        port = args.floor_port if encoding == "grpc-floor" else args.grpc_port
        options = [("grpc.max_receive_message_length", -1)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as ch:
            call = ch.unary_unary(METHOD)  # bytes in, bytes out: no client-side codec
            await call(request)  # connect before the clock starts
            until = time.perf_counter() + args.duration
            await asyncio.gather(
                *(_grpc_caller(call, request, until, latencies) for _ in range(args.concurrency))
            )
    else:
        await asyncio.gather(
            *(_http_caller(args.port, request, until, latencies) for _ in range(args.concurrency))
        )
    return latencies


def serve_floor(port: int) -> None:
    """A bare grpc.aio server on uvloop whose ModelInfer echoes the request's bytes."""
    import uvloop

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    async def run() -> None:
        handler = grpc.method_handlers_generic_handler(
            "inference.GRPCInferenceService",
            {"ModelInfer": grpc.unary_unary_rpc_method_handler(echo)},
        )
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", -1)])
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(run())


def server_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check_answers(requests: dict[str, bytes], args: argparse.Namespace, rows: int) -> None:
    """Each encoding gets the same scores before anything is timed."""
    import http.client

    found = {}
    for encoding in ("http-json", "http-binary"):
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
        head, body = requests[encoding].split(b"\r\n\r\n", 1)
        headers = dict(
            line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line
        )
        conn.request("POST", "/v2/models/linear/infer", body, headers)
        response = conn.getresponse()
        answer = response.read()
        if encoding == "http-json":
            doc = orjson.loads(answer)
            scores = next(o for o in doc["outputs"] if o["name"] == "scores")
            found[encoding] = np.asarray(scores["data"], dtype=np.float32)
        else:
            offset = int(response.getheader("inference-header-content-length"))
            outputs = orjson.loads(answer[:offset])["outputs"]
            names = [o["name"] for o in outputs]
            sizes = [o["parameters"]["binary_data_size"] for o in outputs]
            at = offset + sum(sizes[: names.index("scores")])
            blob = answer[at : at + sizes[names.index("scores")]]
            found[encoding] = np.frombuffer(blob, dtype=np.float32)
    with grpc.insecure_channel(f"127.0.0.1:{args.grpc_port}") as ch:
        raw = ch.unary_unary(METHOD)(requests["grpc"], timeout=30)
    message = pb.ModelInferResponse.FromString(raw)
    names = [o.name for o in message.outputs]
    found["grpc"] = np.frombuffer(
        message.raw_output_contents[names.index("scores")], dtype=np.float32
    )
    for encoding, scores in found.items():
        if scores.size != rows * 3 or not np.array_equal(scores.ravel(), found["grpc"].ravel()):
            raise SystemExit(f"{encoding} answered other scores than gRPC")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,16", help="callers, comma-separated")
    parser.add_argument("--batch", default="1,1000", help="rows per request, comma-separated")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "grpc_bench.json"))
    parser.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_floor:
        serve_floor(args.serve_floor)
        return 0
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    workdir = Path(tempfile.mkdtemp(prefix="grpc-bench-"))
    registry = workdir / "registry"
    (registry / "linear" / "1").mkdir(parents=True)
    onnx.save(linear_model(), registry / "linear" / "1" / "model.onnx")
    args.port, args.grpc_port, args.floor_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
    log = (workdir / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlserve", "serve", "--registry", str(registry), "--port",
         str(args.port), "--grpc-port", str(args.grpc_port), "--poll-seconds", "0",
         "--log-level", "warning", "--max-body-bytes", str(256 * 1024 * 1024)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    floor = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.grpc_bench", "--serve-floor", str(args.floor_port)],
        cwd=ROOT,
    )
    pids = {"grpc-floor": floor.pid}
    rows: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with grpc.insecure_channel(f"127.0.0.1:{args.grpc_port}") as ch:
                    ready = pb.ServerReadyResponse.FromString(
                        ch.unary_unary("/inference.GRPCInferenceService/ServerReady")(
                            b"", timeout=1
                        )
                    ).ready
                if ready:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit((workdir / "server.log").read_text())
            time.sleep(0.1)
        batches = [int(b) for b in args.batch.split(",")]
        callers = [int(c) for c in args.concurrency.split(",")]
        for batch in batches:
            requests = requests_for(batch, args.port)
            check_answers(requests, args, batch)
            for concurrency in callers:
                args.concurrency = concurrency
                for round_ in range(args.rounds):
                    for encoding in ENCODINGS:
                        pid = pids.get(encoding, server.pid)
                        message = requests["grpc" if encoding == "grpc-floor" else encoding]
                        cpu0, client0 = server_cpu_s(pid), time.process_time()
                        latencies = asyncio.run(drive(encoding, message, args))
                        cpu = server_cpu_s(pid) - cpu0
                        client = time.process_time() - client0
                        n = len(latencies)
                        latencies.sort()
                        rows.append(
                            {
                                "encoding": encoding,
                                "batch": batch,
                                "concurrency": concurrency,
                                "round": round_,
                                "requests": n,
                                "rps": n / args.duration,
                                "p50_ms": latencies[n // 2] * 1e3,
                                "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1e3,
                                "server_cpu_us": cpu / n * 1e6,
                                "client_cpu_us": client / n * 1e6,
                                "request_bytes": len(message),
                            }
                        )
                        r = rows[-1]
                        print(
                            f"batch {batch:>5} c {concurrency:>3} {encoding:<12} "
                            f"{r['rps']:>8.0f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                            f"p99 {r['p99_ms']:7.2f} ms  server CPU {r['server_cpu_us']:7.1f} "
                            f"us/req  client CPU {r['client_cpu_us']:6.1f} us/req",
                            flush=True,
                        )
    finally:
        floor.terminate()
        floor.wait(60)
        server.terminate()
        server.wait(60)
        log.close()
    print("\nmedians over rounds (server CPU per request is the steadiest figure):")
    keys = sorted({(r["batch"], r["concurrency"], r["encoding"]) for r in rows})
    summary = []
    for batch, concurrency, encoding in keys:
        mine = [r for r in rows if (r["batch"], r["concurrency"], r["encoding"]) == (
            batch, concurrency, encoding)]  # fmt: skip
        entry = {
            "batch": batch,
            "concurrency": concurrency,
            "encoding": encoding,
            **{
                k: statistics.median(r[k] for r in mine)
                for k in ("rps", "p50_ms", "p99_ms", "server_cpu_us", "client_cpu_us")
            },
        }
        summary.append(entry)
        print(
            f"batch {batch:>5} c {concurrency:>3} {encoding:<12} {entry['rps']:>8.0f} req/s  "
            f"p50 {entry['p50_ms']:7.2f} ms  server CPU {entry['server_cpu_us']:7.1f} us/req"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"argv": sys.argv[1:], "cpus": os.cpu_count(), "rows": rows, "summary": summary},
            indent=1,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
