"""Idle CPU of a server over a large registry: what its registry scans cost.

    python -m benchmarks.scan_cost                        # 1,000 models x 10 versions, 40 s
    python -m benchmarks.scan_cost --models 1000 --versions 10 --seconds 60 --loaded 100
    python -m benchmarks.scan_cost --per-scan 5           # CPU of one scan, in process

Builds a registry of ``--models`` models with ``--versions`` version directories each (a
tiny valid ONNX Identity model and its lineage.json in every one). ``--loaded`` models keep
the default policy (``latest``: one session each); the others name a version that does not
exist (``policy = "specific"``), so the server scans their directories and loads nothing:
the figure is the cost of scanning, not of holding sessions. Starts ``mlserve serve`` with
the default scan interval (or ``--poll-seconds``), waits until it is ready and the first
scans have run, then reads the server's CPU time (user + system, its process and any
children, from /proc) over ``--seconds`` of idleness: no request is sent. Reported as CPU
seconds per minute and as a share of one core. ``--per-scan N`` instead times N scans in
this process (``ModelStore.sync``, CPU ms each: quick scans, then full ones). ``--extra``
passes more flags to the server (``--extra=--full-scan-every=1`` reads everything at every
scan). ``--src`` serves from another checkout's ``src``, e.g. a worktree of the commit
before the change detector:

    git worktree add --detach /tmp/before a1ad99f~1
    python -m benchmarks.scan_cost --seconds 60 --src /tmp/before/src
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

from benchmarks.serve import free_port, wait_ready


def tiny_model() -> bytes:
    """Identity over one FP32 column: the smallest model the server loads."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def build_registry(root: Path, models: int, versions: int, loaded: int) -> None:
    data = tiny_model()
    lineage = json.dumps({"model_sha256": hashlib.sha256(data).hexdigest()})
    for m in range(models):
        mdir = root / f"m{m:05d}"
        for v in range(1, versions + 1):
            vdir = mdir / str(v)
            vdir.mkdir(parents=True)
            (vdir / "model.onnx").write_bytes(data)
            (vdir / "lineage.json").write_text(lineage)
        if m >= loaded:  # scanned, never loaded
            (mdir / "model.toml").write_text(
                f'[versions]\npolicy = "specific"\nspecific = [{versions + 1}]\n'
            )


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its living descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        p = pending.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        pending += [int(c) for c in children]
    return total


def per_scan(root: Path, scans: int) -> int:
    """CPU per scan of ``ModelStore.sync`` in this process, once the registry is loaded and
    its entries are older than the racy window: quick scans, then full ones (a store
    without a change detector, from before it, does a full scan every time)."""
    from mlserve.config import ServerSettings
    from mlserve.registry.store import ModelStore

    store: ModelStore[Any] = ModelStore(ServerSettings(registry=root), prepare=lambda s, c: s)
    store.load_all()
    time.sleep(2.5)
    detector = getattr(store, "changes", None)
    kinds = ["quick", "full"] if detector is not None else ["full (every scan)"]
    for kind in kinds:
        if detector is not None:
            detector.full_every = 1 if kind == "full" else 1 << 30
        store.sync()  # the first of its kind re-reads what the last kind left racy
        times = []
        for _ in range(scans):
            t = time.process_time()
            store.sync()
            times.append(time.process_time() - t)
        times.sort()
        print(
            f"{kind} scan: median {times[len(times) // 2] * 1e3:.1f} ms CPU, "
            f"min {times[0] * 1e3:.1f} ms, over {scans} scans"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--versions", type=int, default=10)
    ap.add_argument("--loaded", type=int, default=100, help="models that load a session")
    ap.add_argument("--seconds", type=float, default=40.0, help="idle window measured")
    ap.add_argument("--settle", type=float, default=10.0, help="idle seconds before it")
    ap.add_argument("--poll-seconds", type=float, default=None, help="default: the server's")
    ap.add_argument("--extra", default="", help="more server flags (one string)")
    ap.add_argument(
        "--per-scan",
        type=int,
        default=0,
        help="instead: time this many scans in this process (CPU ms per quick and full scan)",
    )
    ap.add_argument(
        "--src", default="", help="serve from this checkout's src (an earlier commit's worktree)"
    )
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="scan-cost-") as tmp:
        root = Path(tmp) / "registry"
        start = time.perf_counter()
        build_registry(root, args.models, args.versions, args.loaded)
        print(
            f"registry: {args.models} models x {args.versions} versions "
            f"({args.loaded} loading one session) built in {time.perf_counter() - start:.1f} s"
        )
        if args.per_scan:
            return per_scan(root, args.per_scan)
        port = free_port()
        cmd = [sys.executable, "-m", "mlserve", "serve", "--registry", str(root)]
        cmd += ["--port", str(port), "--log-level", "warning", *shlex.split(args.extra)]
        if args.poll_seconds is not None:
            cmd += ["--poll-seconds", str(args.poll_seconds)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
        if args.src:
            env["PYTHONPATH"] = str(Path(args.src).resolve())
        proc: subprocess.Popen[bytes] = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
        try:
            start = time.perf_counter()
            wait_ready(port, proc, "mlserve", timeout=600)
            print(f"ready in {time.perf_counter() - start:.1f} s; settling {args.settle:g} s")
            time.sleep(args.settle)
            cpu0, t0 = tree_cpu_seconds(proc.pid), time.monotonic()
            time.sleep(args.seconds)
            cpu1, t1 = tree_cpu_seconds(proc.pid), time.monotonic()
        finally:
            proc.terminate()
            proc.wait(60)
    per_minute = (cpu1 - cpu0) / (t1 - t0) * 60
    print(
        f"idle CPU over {t1 - t0:.1f} s: {cpu1 - cpu0:.2f} s = {per_minute:.2f} CPU s/min "
        f"= {per_minute / 60:.1%} of one core  (server flags: {args.extra or 'defaults'}; "
        f"source: {args.src or 'this checkout'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
