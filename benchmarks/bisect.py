"""The serving path commit by commit: each commit's own server beside the raw ASGI floor.

    python -m benchmarks.bisect --commits 489e3ac,69fb637,HEAD,HEAD+fast-lane=off \\
        --rounds 3 --duration 3 --out benchmarks/results/bisect.json

Each commit is checked out in a throwaway ``git worktree`` (detached, under the temporary
directory; the checkout this script runs from is not touched), its Cython extensions are
built in place with its own ``setup.py`` (a build is reused by commits whose build inputs are
byte for byte the same), and its registry is made by its own ``benchmarks/serve.py``
``make_registry`` (its own demo training and reference profile), keeping only ``lr``: the
logistic regression on 20 features, one plain version with its reference profile. Each commit
is served by its own ``mlserve serve`` (1 worker, monitoring on) with ``PYTHONPATH`` on the
worktree's ``src``; ``REV+flag=value`` adds ``--flag value`` (``HEAD+fast-lane=off``). A
commit that cannot be built, given its registry or started is left out, and the output and
the JSON file say why.

The floor is ``benchmarks/floors.py``'s ``raw_app`` (unchanged across these commits) on
the same uvicorn. wrk (one thread) posts one V2 JSON row of 20 FP32 values. In every round each
system is measured right after a floor run, and the order of systems rotates between rounds.
For each run: req/s, p50/p99, and the server's CPU per request: utime + stime of the server
process and its descendants (``/proc/<pid>/stat``) over the run, divided by the requests wrk
completed. CPU per request moves much less than throughput when other jobs share the machine.

``--protocol MODULE:CLASS`` serves nothing: in each commit's tree it feeds whole requests to
the floor app behind uvicorn's own httptools protocol and behind that commit's protocol class
(in process, on uvloop, rounds alternating), and reports the CPU per request the class adds.
Extensions are built without reading ``pyproject.toml`` (see ``BUILD``).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from benchmarks.serve import LUA, free_port, wait_ready

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
N_FEATURES = 20
BUILD_INPUTS = ("*.pyx", "*.pxd", "*.pyi")
# The commit's own setup.py supplies the extensions (sources, flags, Cython directives); they
# are built in place without reading pyproject.toml, whose PEP 639 license string needs a
# newer setuptools than the one that builds here (the metadata plays no part in the build).
BUILD = """
import runpy, sys, setuptools
found = {}
setuptools.setup = lambda **kw: found.update(kw)
runpy.run_path("setup.py")
dist = setuptools.Distribution({
    "ext_modules": found["ext_modules"], "package_dir": {"": "src"},
    "script_args": ["build_ext", "--inplace", "--build-temp", sys.argv[1]],
})
dist.parse_command_line()
dist.run_commands()
"""

# --protocol: the floor app behind uvicorn's own httptools protocol and behind a commit's
# protocol class, fed whole requests in process on uvloop (writes kept in memory), rounds
# alternating: the CPU that the protocol class alone adds to each request.
PROTOCOL = """
import asyncio, importlib, json, sys, time
import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from benchmarks.floors import raw_app

name, body_path, requests, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
module, cls = name.split(":")
classes = {"uvicorn": HttpToolsProtocol, "commit": getattr(importlib.import_module(module), cls)}
body = open(body_path, "rb").read()
data = (b"POST /v2/models/lr/infer HTTP/1.1\\r\\nhost: 127.0.0.1\\r\\n"
        b"content-type: application/json\\r\\ncontent-length: %d\\r\\n\\r\\n" % len(body)) + body

class Transport:
    def __init__(self): self.last = b""; self.closing = False
    def write(self, b): self.last = b
    def is_closing(self): return self.closing
    def close(self): self.closing = True
    def get_extra_info(self, n, d=None):
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(n, d)
    def pause_reading(self): pass
    def resume_reading(self): pass

async def measure(protocol_class, n):
    config = Config(app=raw_app(), http="httptools", loop="none", access_log=False,
                    lifespan="off", proxy_headers=False)
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    async def one():
        protocol.data_received(data)
        while not protocol.cycle.response_complete:
            await asyncio.sleep(0)
    for _ in range(2000):
        await one()
    assert b'"outputs"' in transport.last, transport.last[:300]
    start = time.process_time()
    for _ in range(n):
        await one()
    return (time.process_time() - start) / n * 1e6

async def main():
    out = {k: [] for k in classes}
    for _ in range(rounds):
        for k, c in classes.items():
            out[k].append(round(await measure(c, requests), 2))
    print("RESULT " + json.dumps(out))

uvloop.run(main())
"""


@dataclass
class Target:
    """One system to measure: a commit's server (with extra flags) or the floor."""

    label: str
    rev: str = ""
    commit: str = ""
    subject: str = ""
    flags: list[str] = field(default_factory=list)
    tree: Path | None = None
    registry: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def parse_target(item: str) -> Target:
    """``REV`` or ``REV+flag=value+...`` → a target whose server gets ``--flag value``."""
    rev, *extras = item.split("+")
    flags: list[str] = []
    for extra in extras:
        name, sep, value = extra.partition("=")
        if not sep or not name:
            raise SystemExit(f"{item!r}: each '+' part must be flag=value, e.g. HEAD+fast-lane=off")
        flags += [f"--{name}", value]
    try:
        commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"{rev!r} is not a commit of {ROOT}: give a hash or a ref") from None
    label = git("rev-parse", "--short", commit) + "".join(f"+{e}" for e in extras)
    return Target(label, rev, commit, git("log", "-1", "--format=%s", commit)[:80], flags)


def worker_env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
    env["PYTHONPATH"] = f"{tree / 'src'}{os.pathsep}{tree}"
    return env


def build_key(tree: Path) -> str:
    """Digest of everything the extension build reads: setup.py and the Cython sources."""
    digest = hashlib.sha256((tree / "setup.py").read_bytes())
    for pattern in BUILD_INPUTS:
        for path in sorted((tree / "src").rglob(pattern)):
            digest.update(str(path.relative_to(tree)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def build(tree: Path, cache: dict[str, Path], workdir: Path) -> str:
    """Build the commit's extensions in place, or copy a byte-identical build's."""
    key = build_key(tree)
    built = cache.get(key)
    if built is None:
        run = subprocess.run(
            [sys.executable, "-c", BUILD, str(workdir / f"build-{key[:12]}")],
            cwd=tree, capture_output=True, text=True,
        )  # fmt: skip
        if run.returncode != 0:
            raise SystemExit(f"{tree.name}: building its extensions failed:\n{run.stderr[-2000:]}")
        cache[key] = tree
        how = "built"
    else:
        for so in (built / "src").rglob("*.so"):
            shutil.copy2(so, tree / so.relative_to(built))
        how = f"copied from {built.name}"
    # Every .pyx must import compiled from this worktree, or the shims would fall back to
    # their pure-Python twins and the commit would be measured slower than it is.
    modules = [
        ".".join(p.relative_to(tree / "src").with_suffix("").parts)
        for p in sorted((tree / "src").rglob("*.pyx"))
    ]
    check = (
        "import importlib, mlserve, sys\n"
        f"root = {str(tree / 'src')!r}\n"
        "assert mlserve.__file__.startswith(root), mlserve.__file__\n"
        f"for name in {modules!r}:\n"
        "    f = importlib.import_module(name).__file__\n"
        "    assert f.startswith(root) and f.endswith('.so'), (name, f)\n"
    )
    imported = subprocess.run(
        [sys.executable, "-c", check],
        cwd=tree,
        env=worker_env(tree),
        capture_output=True,
        text=True,
    )
    if imported.returncode != 0:
        raise SystemExit(
            f"{tree.name}: the compiled extensions do not import from the worktree "
            f"({imported.stderr[-400:]}); check the build output of setup.py there"
        )
    return how


def make_registry(tree: Path, workdir: Path) -> Path:
    """The commit's own ``benchmarks/serve.py`` registry, reduced to ``lr``."""
    code = (
        "import sys; from pathlib import Path; from benchmarks.serve import make_registry\n"
        "print(make_registry(Path(sys.argv[1]), 1000))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(workdir)],
        cwd=tree, env=worker_env(tree), check=True, capture_output=True, text=True,
    )  # fmt: skip
    registry = Path(out.stdout.strip().splitlines()[-1])
    for model in registry.iterdir():
        if model.name != "lr":
            shutil.rmtree(model)
    if not (registry / "lr" / "1" / "reference.json").is_file():
        raise SystemExit(f"{tree.name}: its make_registry wrote no lr/1/reference.json")
    shutil.rmtree(workdir / "demo", ignore_errors=True)
    return registry


def body_file(workdir: Path) -> Path:
    """The request of ``benchmarks/serve.py``: V2 JSON, one row of 20 FP32 values."""
    x = np.random.default_rng(1).standard_normal((1, N_FEATURES)).astype(np.float32)
    tensor = {"name": "X", "datatype": "FP32", "shape": [1, N_FEATURES], "data": x.ravel().tolist()}
    path = workdir / "body.json"
    path.write_bytes(orjson.dumps({"inputs": [tensor]}))
    return path


def start(target: Target, cmd: list[str], env: dict[str, str], cwd: Path, logdir: Path) -> None:
    port = free_port()
    log = (logdir / f"{target.label}.log").open("wb")
    target.proc = subprocess.Popen(
        [*cmd, "--port", str(port)], env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
    )
    target.url = f"http://127.0.0.1:{port}/v2/models/lr/infer"
    wait_ready(port, target.proc, target.label)


def check_server(target: Target, body: bytes) -> list[float]:
    """One infer answered 200 with the model's outputs, and monitoring counting features."""
    port = int(target.url.split(":")[2].split("/")[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v2/models/lr/infer", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    answer = resp.read()
    if resp.status != 200:
        raise SystemExit(f"{target.label}: infer answered {resp.status}: {answer[:300]!r}")
    outputs = {o["name"]: o["data"] for o in orjson.loads(answer)["outputs"]}
    conn.request("GET", "/metrics")
    metrics = conn.getresponse().read().decode()
    conn.close()
    if target.commit and "mlserve_feature_bin_total{" not in metrics:
        raise SystemExit(
            f"{target.label}: /metrics has no mlserve_feature_bin_total sample after a "
            "request: monitoring is off or the reference profile was not loaded (see its log)"
        )
    return [float(v) for v in outputs.get("probabilities", [])]


def stop(target: Target) -> None:
    if target.proc is not None and target.proc.poll() is None:
        target.proc.terminate()
        try:
            target.proc.wait(30)
        except subprocess.TimeoutExpired:
            target.proc.kill()
            target.proc.wait()


def why(exc: BaseException) -> str:
    """One line saying why a commit was left out."""
    if isinstance(exc, subprocess.CalledProcessError):
        tail = (exc.stderr or b"")[-600:]
        text = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        return f"{' '.join(map(str, exc.cmd))[:120]} exited {exc.returncode}: {text.strip()}"
    return str(exc)


def tree_cpu_ticks(pid: int) -> int:
    """utime + stime of a process and its live descendants, in clock ticks."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def run_wrk(target: Target, script: Path, concurrency: int, duration: int) -> dict[str, Any]:
    assert target.proc is not None
    before = tree_cpu_ticks(target.proc.pid)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--timeout", "10s",
         "-s", str(script), target.url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    cpu_s = (tree_cpu_ticks(target.proc.pid) - before) / CLK_TCK
    res: dict[str, Any] = json.loads(
        next(x for x in out.splitlines() if x.startswith("RESULT "))[len("RESULT ") :]
    )
    requests = max(res["requests"], 1)
    return {
        "rps": round(res["requests"] / (res["duration_us"] / 1e6), 1),
        "cpu_us": round(cpu_s / requests * 1e6, 2),
        "p50_us": res["p50_us"],
        "p99_us": res["p99_us"],
        "requests": res["requests"],
        "errors": res["errors"] + res["non2xx"],
    }


def summarise(targets: list[Target], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for t in targets:
        own = [r for r in runs if r["system"] == t.label]
        floors = [r["floor"] for r in own]
        med = statistics.median
        rows.append(
            {
                "system": t.label,
                "subject": t.subject,
                "rps": round(med(r["rps"] for r in own)),
                "floor_rps": round(med(f["rps"] for f in floors)),
                "x_floor": round(
                    med(r["rps"] / f["rps"] for r, f in zip(own, floors, strict=True)), 3
                ),
                "cpu_us": round(med(r["cpu_us"] for r in own), 1),
                "floor_cpu_us": round(med(f["cpu_us"] for f in floors), 1),
                "cpu_x_floor": round(
                    med(r["cpu_us"] / f["cpu_us"] for r, f in zip(own, floors, strict=True)), 3
                ),
                "p99_us": med(r["p99_us"] for r in own),
                "floor_p99_us": med(f["p99_us"] for f in floors),
                "errors": sum(r["errors"] for r in own) + sum(f["errors"] for f in floors),
                "rounds": len(own),
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"\n{'system':<24}{'req/s':>8}{'floor':>8}{'×floor':>8}{'CPU µs':>8}{'floor':>8}"
        f"{'CPU×':>7}{'p99 µs':>9}{'err':>5}  subject"
    )
    for r in rows:
        print(
            f"{r['system']:<24}{r['rps']:>8}{r['floor_rps']:>8}{r['x_floor']:>8.2f}"
            f"{r['cpu_us']:>8.1f}{r['floor_cpu_us']:>8.1f}{r['cpu_x_floor']:>7.2f}"
            f"{r['p99_us']:>9.0f}{r['errors']:>5}  {r['subject'][:50]}"
        )


def machine_info() -> dict[str, Any]:
    import onnxruntime
    import starlette
    import uvicorn

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "uvicorn": uvicorn.__version__,
        "starlette": starlette.__version__,
        "numpy": np.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the serving path commit by commit (see docstring)")
    p.add_argument(
        "--commits",
        required=True,
        help="comma-separated revisions, each optionally REV+flag=value (adds --flag value)",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=3, help="whole seconds per wrk run")
    p.add_argument("--warmup", type=int, default=1, help="seconds of wrk before measuring")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--out", type=Path, help="write the results here (JSON)")
    p.add_argument("--keep", action="store_true", help="keep the worktrees and logs")
    p.add_argument(
        "--protocol",
        metavar="MODULE:CLASS",
        help="instead of serving: the CPU per request that this protocol class (as of each "
        "commit) adds to the floor app over uvicorn's own, in process",
    )
    p.add_argument("--requests", type=int, default=20_000, help="per --protocol measurement")
    args = p.parse_args(argv)
    if shutil.which("wrk") is None and not args.protocol:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    targets = [parse_target(item) for item in args.commits.split(",") if item]
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="mlserve-bisect-"))
    floor = Target("floor-asgi")
    started: list[Target] = []
    trees: dict[str, Path] = {}
    registries: dict[str, Path] = {}
    runs: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    try:
        cache: dict[str, Path] = {}
        for i, t in enumerate(targets):
            try:
                if t.commit not in trees:
                    tree = workdir / t.commit[:10]
                    git("worktree", "add", "--detach", str(tree), t.commit)
                    trees[t.commit] = tree
                    how = build(tree, cache, workdir)
                    registries[t.commit] = make_registry(tree, workdir / f"reg-{t.commit[:10]}")
                    print(f"{t.label}: worktree ready, extensions {how}", flush=True)
                t.tree = trees[t.commit]
                # A copy each: a server keeps its routing state and audit log beside its registry.
                t.registry = workdir / f"registry-{i}"
                shutil.copytree(registries[t.commit], t.registry)
            except (SystemExit, subprocess.CalledProcessError, KeyError) as exc:
                failed[t.label] = why(exc)
                print(f"{t.label}: left out: {failed[t.label]}", flush=True)
        targets = [t for t in targets if t.label not in failed]
        if not targets:
            raise SystemExit("no commit could be prepared (reasons above)")
        body = body_file(workdir)
        if args.protocol:
            protocol = measure_protocols(targets, registries, args, body)
            return write(args, argv, targets, failed, workdir, load_before, {"protocol": protocol})
        script = workdir / "wrk.lua"
        script.write_text(LUA.format(body=body, content_type="application/json", extra_header=""))
        floor_env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
        # The floor as committed (benchmarks/floors.py is the same at every measured commit).
        floor_tree = trees[targets[-1].commit]
        floor_env["PYTHONPATH"] = str(floor_tree)
        floor_env["FLOOR_MODELS"] = (
            f"lr={registries[targets[-1].commit] / 'lr' / '1' / 'model.onnx'}"
        )
        started.append(floor)
        start(
            floor,
            [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.floors:raw_app",
             "--loop", "uvloop", "--http", "httptools", "--no-access-log",
             "--log-level", "warning"],
            floor_env, floor_tree, workdir,
        )  # fmt: skip
        answers = {}
        for t in targets:
            assert t.tree is not None and t.registry is not None
            started.append(t)
            try:
                start(
                    t,
                    [sys.executable, "-m", "mlserve", "serve", "--registry", str(t.registry),
                     "--workers", "1", "--log-level", "warning", "--monitoring", "on", *t.flags],
                    worker_env(t.tree), t.tree, workdir,
                )  # fmt: skip
                answers[t.label] = check_server(t, body.read_bytes())
            except (SystemExit, OSError) as exc:
                log = (workdir / f"{t.label}.log").read_text(errors="replace")
                failed[t.label] = f"{why(exc)}; its log ends: {log[-600:]}"
                print(f"{t.label}: left out: {failed[t.label]}", flush=True)
                stop(t)
        targets = [t for t in targets if t.label not in failed]
        check_server(floor, body.read_bytes())
        print("probabilities answered:", json.dumps(answers), flush=True)
        for t in [floor, *targets]:
            run_wrk(t, script, args.concurrency, args.warmup)
        for rnd in range(args.rounds):
            shift = rnd % len(targets)
            for t in targets[shift:] + targets[:shift]:
                f = run_wrk(floor, script, args.concurrency, args.duration)
                m = run_wrk(t, script, args.concurrency, args.duration)
                runs.append({"round": rnd + 1, "system": t.label, **m, "floor": f})
                print(
                    f"round {rnd + 1} {t.label}: {m['rps']:.0f} req/s, {m['cpu_us']:.1f} µs "
                    f"CPU/req | floor {f['rps']:.0f} req/s, {f['cpu_us']:.1f} µs "
                    f"| {m['rps'] / f['rps']:.2f}× errors {m['errors']}/{f['errors']}",
                    flush=True,
                )
    finally:
        for t in started:
            stop(t)
        if not args.keep:
            for tree in trees.values():
                git("worktree", "remove", "--force", str(tree))
            git("worktree", "prune")
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")
    rows = summarise(targets, runs)
    print_table(rows)
    return write(args, argv, targets, failed, workdir, load_before, {"summary": rows, "runs": runs})


def measure_protocols(
    targets: list[Target], registries: dict[str, Path], args: argparse.Namespace, body: Path
) -> dict[str, Any]:
    """``PROTOCOL`` in each commit's tree: uvicorn's protocol against the commit's class."""
    results: dict[str, Any] = {}
    for t in targets:
        assert t.tree is not None
        env = worker_env(t.tree)
        env["FLOOR_MODELS"] = f"lr={registries[t.commit] / 'lr' / '1' / 'model.onnx'}"
        run = subprocess.run(
            [sys.executable, "-c", PROTOCOL, args.protocol, str(body), str(args.requests),
             str(args.rounds)],
            cwd=t.tree, env=env, capture_output=True, text=True,
        )  # fmt: skip
        if run.returncode != 0:
            results[t.label] = {"error": run.stderr.strip().splitlines()[-1][:300]}
            print(f"{t.label}: {results[t.label]['error']}", flush=True)
            continue
        out = json.loads(next(x for x in run.stdout.splitlines() if x.startswith("RESULT "))[7:])
        med = {k: statistics.median(v) for k, v in out.items()}
        results[t.label] = {"rounds_us": out, "added_us": round(med["commit"] - med["uvicorn"], 2)}
        print(
            f"{t.label}: uvicorn's protocol {med['uvicorn']:.1f} µs, {args.protocol} "
            f"{med['commit']:.1f} µs per request: +{med['commit'] - med['uvicorn']:.1f} µs",
            flush=True,
        )
    return results


def compact_json(result: dict[str, Any]) -> str:
    """One line per top-level key, and per item of a top-level list (the runs)."""
    lines = []
    for key, value in result.items():
        if isinstance(value, list):
            items = ",\n".join("  " + json.dumps(x, ensure_ascii=False) for x in value)
            text = f"[\n{items}\n ]"
        else:
            text = json.dumps(value, ensure_ascii=False)
        lines.append(f" {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def write(
    args: argparse.Namespace,
    argv: list[str] | None,
    targets: list[Target],
    failed: dict[str, str],
    workdir: Path,
    load_before: tuple[float, float, float],
    results: dict[str, Any],
) -> int:
    """Print why any commit was left out, and write the JSON file if asked."""
    load_after = os.getloadavg()
    # Reasons name files in the throwaway directory: keep only their place in the commit.
    failed = {k: v.replace(f"{workdir}/", "") for k, v in failed.items()}
    for label, reason in failed.items():
        print(f"left out {label}: {reason}")
    if args.out:
        result = {
            "command": " ".join(
                ["python", "-m", "benchmarks.bisect", *(argv if argv is not None else sys.argv[1:])]
            ),
            "machine": machine_info(),
            "load_average": {"before": load_before, "after": load_after},
            "commits": {t.label: t.commit for t in targets},
            "left_out": failed,
            **results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(compact_json(result))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
