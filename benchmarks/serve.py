"""Serving benchmark: mlserve beside its floors, measured side by side in one run.

    python -m benchmarks.serve                       # the default matrix (about 10 minutes)
    python -m benchmarks.serve --duration 3 --rounds 3 --concurrency 1,8,64 --batch 1,256 \\
        --encodings json,binary --models lr,gbm --workers 1

Systems, each started by the harness on a free loopback port and driven by wrk (a
C load generator, one thread) with a Lua script: ``floor-asgi`` (a bare ASGI
callable doing the same V2 JSON + onnxruntime work, ``benchmarks/floors.py``),
``floor-starlette`` (the same as a Starlette endpoint), ``mlserve`` (monitoring on: metrics,
drift windows, data quality), ``mlserve-off`` (``--monitoring off``), ``mlserve-asgi``
(monitoring on, ``--fast-lane off``: every request through the ASGI cycle), and any other
Open Inference Protocol server
given with ``--url NAME=URL_TEMPLATE`` (``{model}`` is replaced by the model name).
``onnxruntime`` is the in-process floor: one session call, no HTTP.

Models: the demo ``credit-risk`` versions as ``lr`` (logistic regression) and ``gbm``
(gradient boosting, 100 trees), ``gbm-batched`` (the same with dynamic batching;
mlserve only), ``lr-shadowed`` (``gbm`` shadowing every request) and ``lr-payloads`` (every
request sampled for the payload log into a queue of 16, so nearly all are dropped).
Systems alternate within each configuration, over several rounds; the table reports
medians and ratios to ``floor-asgi`` from the same run. Results (with machine and
versions) go to a JSON file and a PNG chart.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
FLOOR_SYSTEMS = ("floor-asgi", "floor-starlette")
BATCHING_TOML = "[batching]\nmax_batch_size = 64\nmax_delay_us = {delay}\n"
PAYLOAD_QUEUE = 16

LUA = """
wrk.method = "POST"
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "{content_type}"
{extra_header}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {{"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


@dataclass
class Measurement:
    system: str
    model: str
    encoding: str
    batch: int
    concurrency: int
    round: int
    rps: float
    p50_us: float
    p90_us: float
    p99_us: float
    errors: int


@dataclass
class System:
    name: str
    url: str  # template with {model}
    proc: subprocess.Popen[bytes] | None = None
    encodings: tuple[str, ...] = ("json", "binary")
    models: tuple[str, ...] = ("lr", "gbm", "gbm-batched", "lr-shadowed", "lr-payloads")
    log: Path | None = field(default=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/v2/health/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{name} not ready after {timeout}s")


def make_registry(workdir: Path, delay_us: int) -> Path:
    from mlserve.demo import build_demo

    demo = build_demo(workdir / "demo")
    registry = workdir / "registry"
    for name, version in (("lr", 1), ("gbm", 2), ("gbm-batched", 2)):
        target = registry / name / "1"
        target.mkdir(parents=True)
        for file in ("model.onnx", "lineage.json", "samples.npz", "reference.json"):
            if (demo / "credit-risk" / str(version) / file).exists():
                shutil.copy(demo / "credit-risk" / str(version) / file, target / file)
    (registry / "gbm-batched" / "model.toml").write_text(BATCHING_TOML.format(delay=delay_us))
    # lr answered by version 1 while version 2 (the gradient-boosted model) shadows every
    # request: its p99 against plain lr shows what a shadow costs the caller.
    for version, source in ((1, 1), (2, 2)):
        target = registry / "lr-shadowed" / str(version)
        target.mkdir(parents=True)
        shutil.copy(demo / "credit-risk" / str(source) / "model.onnx", target / "model.onnx")
    (registry / "lr-shadowed" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n[routing]\nstable = 1\nshadows = [2]\n'
    )
    # lr with every request sampled for the payload log, into a queue of PAYLOAD_QUEUE: under
    # load nearly all are dropped and counted; its p99 against plain lr shows what that costs.
    target = registry / "lr-payloads" / "1"
    target.mkdir(parents=True)
    shutil.copy(demo / "credit-risk" / "1" / "model.onnx", target / "model.onnx")
    (registry / "lr-payloads" / "model.toml").write_text("[payloads]\nsample = 1.0\n")
    return registry


def start_systems(names: list[str], registry: Path, workers: int, logdir: Path) -> list[System]:
    systems = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
    env["PYTHONPATH"] = str(ROOT)
    env["FLOOR_MODELS"] = ",".join(
        f"{m}={registry / m / '1' / 'model.onnx'}" for m in ("lr", "gbm")
    )
    for name in names:
        port = free_port()
        if name in ("mlserve", "mlserve-off", "mlserve-asgi"):
            cmd = [
                sys.executable, "-m", "mlserve", "serve", "--registry", str(registry),
                "--port", str(port), "--workers", str(workers), "--log-level", "warning",
                "--monitoring", "off" if name == "mlserve-off" else "on",
                "--payload-dir", str(logdir / f"payloads-{name}"),
                "--payload-queue", str(PAYLOAD_QUEUE),
                "--fast-lane", "off" if name == "mlserve-asgi" else "on",
            ]  # fmt: skip
            system = System(name, f"http://127.0.0.1:{port}/v2/models/{{model}}/infer")
        elif name in FLOOR_SYSTEMS:
            factory = "raw_app" if name == "floor-asgi" else "starlette_app"
            cmd = [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                f"benchmarks.floors:{factory}",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ]
            system = System(
                name,
                f"http://127.0.0.1:{port}/v2/models/{{model}}/infer",
                encodings=("json",),
                models=("lr", "gbm"),
            )
        else:
            raise SystemExit(f"unknown system {name!r}")
        system.log = logdir / f"{name}.log"
        system.proc = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=system.log.open("wb"), stderr=subprocess.STDOUT
        )
        systems.append(system)
        wait_ready(port, system.proc, name)
    return systems


def request_body(encoding: str, batch: int, n_features: int, workdir: Path) -> tuple[Path, str]:
    x = np.random.default_rng(batch).standard_normal((batch, n_features)).astype(np.float32)
    path = workdir / f"body-{encoding}-{batch}.bin"
    if encoding == "json":
        body = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "X",
                        "datatype": "FP32",
                        "shape": [batch, n_features],
                        "data": x.ravel().tolist(),
                    }
                ]
            }
        )
        path.write_bytes(body)
        return path, ""
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "datatype": "FP32",
                    "shape": [batch, n_features],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [
                {"name": "label", "parameters": {"binary_data": True}},
                {"name": "probabilities", "parameters": {"binary_data": True}},
            ],
        }
    )
    path.write_bytes(header + x.tobytes())
    return path, f'wrk.headers["Inference-Header-Content-Length"] = "{len(header)}"'


def run_wrk(
    url: str,
    body: Path,
    extra: str,
    encoding: str,
    concurrency: int,
    duration: float,
    workdir: Path,
) -> dict[str, Any]:
    content_type = "application/json" if encoding == "json" else "application/octet-stream"
    script = workdir / f"wrk-{body.stem}.lua"
    script.write_text(LUA.format(body=body, content_type=content_type, extra_header=extra))
    cmd = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    return result


def inprocess(
    registry: Path, model: str, batch: int, n_features: int, seconds: float = 1.0
) -> Measurement:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    model_file = registry / model / "1" / "model.onnx"
    sess = ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(batch).standard_normal((batch, n_features)).astype(np.float32)
    for _ in range(50):
        sess.run(None, {"X": x})
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        sess.run(None, {"X": x})
        times.append(time.perf_counter() - start)
    q = np.percentile(times, [50, 90, 99]) * 1e6
    return Measurement(
        "onnxruntime",
        "",
        "in-process",
        batch,
        1,
        0,
        1 / statistics.median(times),
        float(q[0]),
        float(q[1]),
        float(q[2]),
        0,
    )


def machine_info() -> dict[str, Any]:
    import onnxruntime
    import starlette
    import uvicorn

    import mlserve

    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "mlserve": mlserve.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "uvicorn": uvicorn.__version__,
        "starlette": starlette.__version__,
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0] if (wrk.stdout or wrk.stderr) else "",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def summarise(measurements: list[Measurement]) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.model, m.encoding, m.batch, m.concurrency, m.system), []).append(m)
    rows = []
    for (model, encoding, batch, conc, system), ms in groups.items():
        rows.append(
            {
                "model": model,
                "encoding": encoding,
                "batch": batch,
                "concurrency": conc,
                "system": system,
                "rps": statistics.median(m.rps for m in ms),
                "p50_us": statistics.median(m.p50_us for m in ms),
                "p99_us": statistics.median(m.p99_us for m in ms),
                "errors": sum(m.errors for m in ms),
                "rounds": len(ms),
            }
        )
    floors = {
        (r["model"], r["batch"], r["concurrency"]): r for r in rows if r["system"] == "floor-asgi"
    }
    for r in rows:
        floor = floors.get(
            (
                r["model"]
                .replace("-batched", "")
                .replace("-shadowed", "")
                .replace("-payloads", ""),
                r["batch"],
                r["concurrency"],
            )
        )
        r["rps_vs_floor"] = r["rps"] / floor["rps"] if floor else None
        r["p99_vs_floor"] = r["p99_us"] / floor["p99_us"] if floor else None
    return rows


def print_table(rows: list[dict[str, Any]], inproc: list[Measurement]) -> None:
    print(
        f"\n{'model':<12}{'enc':<8}{'batch':>6}{'conc':>6}  {'system':<17}{'req/s':>10}"
        f"{'p50 µs':>9}{'p99 µs':>9}{'×floor':>8}{'p99×':>7}{'err':>6}"
    )
    for r in sorted(
        rows, key=lambda r: (r["model"], r["encoding"], r["batch"], r["concurrency"], r["system"])
    ):
        ratio = f"{r['rps_vs_floor']:.2f}" if r["rps_vs_floor"] else "-"
        p99 = f"{r['p99_vs_floor']:.2f}" if r["p99_vs_floor"] else "-"
        print(
            f"{r['model']:<12}{r['encoding']:<8}{r['batch']:>6}{r['concurrency']:>6}  "
            f"{r['system']:<17}{r['rps']:>10.0f}{r['p50_us']:>9.0f}{r['p99_us']:>9.0f}"
            f"{ratio:>8}{p99:>7}{r['errors']:>6}"
        )
    for m in inproc:
        print(
            f"onnxruntime in-process {m.model} batch {m.batch}: {m.p50_us:.1f} µs/call "
            f"({m.rps:.0f} calls/s on one core)"
        )


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subset = [
        r for r in rows if r["encoding"] == "json" and r["batch"] == min(x["batch"] for x in rows)
    ]
    models = sorted({r["model"] for r in subset})
    fig, axes = plt.subplots(2, len(models), figsize=(5 * len(models), 7), squeeze=False)
    for col, model in enumerate(models):
        for system in sorted({r["system"] for r in subset if r["model"] == model}):
            pts = sorted(
                (r["concurrency"], r["rps"], r["p99_us"])
                for r in subset
                if r["model"] == model and r["system"] == system
            )
            xs = [p[0] for p in pts]
            axes[0][col].plot(xs, [p[1] for p in pts], marker="o", label=system)
            axes[1][col].plot(xs, [p[2] / 1000 for p in pts], marker="o", label=system)
        axes[0][col].set_title(f"{model}, JSON, batch {subset[0]['batch']}: throughput")
        axes[0][col].set_ylabel("requests/s")
        axes[1][col].set_title("p99 latency")
        axes[1][col].set_ylabel("ms")
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("connections")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="mlserve serving benchmark (see module docstring)")
    p.add_argument("--systems", default="floor-asgi,floor-starlette,mlserve-off,mlserve")
    p.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="NAME=URL_TEMPLATE",
        help="another V2 server, e.g. other=http://127.0.0.1:9000/v2/models/{model}/infer",
    )
    p.add_argument("--models", default="lr,gbm,gbm-batched")
    p.add_argument("--encodings", default="json,binary")
    p.add_argument("--batch", default="1,256")
    p.add_argument("--concurrency", default="1,8,64")
    p.add_argument("--duration", type=int, default=3, help="whole seconds per measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--batch-delay-us", type=int, default=1000)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/serve.json"))
    p.add_argument("--no-chart", action="store_true")
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")

    models = args.models.split(",")
    encodings = args.encodings.split(",")
    batches = [int(b) for b in args.batch.split(",")]
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        registry = make_registry(workdir, args.batch_delay_us)
        n_features = 20
        base_models = dict.fromkeys(
            m.replace("-batched", "").replace("-shadowed", "").replace("-payloads", "")
            for m in models
        )
        inproc = [inprocess(registry, m, b, n_features) for m in base_models for b in batches]
        systems = start_systems(args.systems.split(","), registry, args.workers, workdir)
        for item in args.url:
            name, url = item.split("=", 1)
            systems.append(System(name, url))
        measurements: list[Measurement] = []
        try:
            for rnd in range(args.rounds):
                for model in models:
                    for encoding in encodings:
                        for batch in batches:
                            body, extra = request_body(encoding, batch, n_features, workdir)
                            for conc in concurrencies:
                                for system in systems:
                                    if (
                                        encoding not in system.encodings
                                        or model not in system.models
                                    ):
                                        continue
                                    res = run_wrk(
                                        system.url.format(model=model),
                                        body,
                                        extra,
                                        encoding,
                                        conc,
                                        args.duration,
                                        workdir,
                                    )
                                    rps = res["requests"] / (res["duration_us"] / 1e6)
                                    m = Measurement(
                                        system.name,
                                        model,
                                        encoding,
                                        batch,
                                        conc,
                                        rnd,
                                        rps,
                                        res["p50_us"],
                                        res["p90_us"],
                                        res["p99_us"],
                                        res["errors"] + res["non2xx"],
                                    )
                                    measurements.append(m)
                                    print(
                                        f"round {rnd + 1} {model} {encoding} batch {batch} "
                                        f"c{conc} {system.name}: {rps:.0f} req/s, p99 "
                                        f"{m.p99_us:.0f} µs, errors {m.errors}",
                                        flush=True,
                                    )
        finally:
            for system in systems:
                if system.proc is not None:
                    system.proc.terminate()
                    system.proc.wait(30)
    rows = summarise(measurements)
    print_table(rows, inproc)
    result = {
        "command": " ".join(
            [
                Path(sys.executable).name,
                "-m",
                "benchmarks.serve",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        ),
        "machine": machine_info(),
        "settings": vars(args) | {"out": str(args.out)},
        "summary": rows,
        "inprocess": [asdict(m) for m in inproc],
        "measurements": [asdict(m) for m in measurements],
    }
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwrote {args.out}")
    if not args.no_chart:
        png = args.out.with_suffix(".png")
        chart(rows, png)
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
