"""Soak and overload: mlserve held at 80 % of its measured capacity for minutes, then
pushed to 150 %, then back — on loopback, bounded in time.

    python -m benchmarks.soak --soak-seconds 300 --model lr

Phases, one server process throughout (1 worker, monitoring on, default settings unless
``--overload-delay-ms`` says otherwise):

1. capacity: the most the server answers (req/s) to wrk with 64 connections and no think
   time (as ``benchmarks/serve.py`` measures it), the median of three 5-second runs.
2. soak: an open-loop schedule of 80 % of capacity (``RATE_DELAY``: each free connection
   takes the next send slot) over ``--soak-connections``, for ``--soak-seconds`` in
   segments of ``--segment-seconds``. Each segment: rate, p50/p99, errors, non-2xx, the
   server's resident memory. Memory growth per million requests is (RSS at the end − RSS
   after the first segment) / requests in between.
3. overload: a schedule of 150 % of capacity over ``--overload-connections`` (enough that
   the requests waiting outlast the server's overload delay; with fewer, the clients
   themselves are the queue), first from clients that honour Retry-After (``BACK_OFF``),
   then from clients that retry at once. A probe beside wrk sends one request every 20 ms
   and times each by status: the admitted requests' latency, the refused ones' code and
   Retry-After.
4. recovery: back to 80 % after each overload; non-2xx in that segment, and the probe's in
   its second half.
   With ``--compare-off``, the overload again on a fresh server with shedding off.
5. locust (``--locust-seconds``, 0: skip): ``benchmarks/locustfile.py``'s mixed traffic on
   the demo registry with a fixed user count; requests, failures, rate, percentiles.

wrk times each request from sending it to its answer; a slot that waits for a free
connection is not counted as waiting (the probe's figures are per request). Prints a
summary and writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from .serve import ROOT, free_port, machine_info, make_registry, request_body, wait_ready

LUA = """
wrk.method = "POST"
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
{delay}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {{"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


# An open-loop rate for wrk: whichever connection is free takes the next send slot of a
# schedule of RATE requests a second (LuaJIT's FFI reads the monotonic clock; wrk's delays
# are whole milliseconds, so slots within one millisecond leave together). Slots pass unused
# only while every connection waits for an answer.
RATE_DELAY = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct {{ long tv_sec; long tv_nsec; }} mlserve_timespec;
int clock_gettime(int clk, mlserve_timespec *tp);
]]
local ts = ffi.new("mlserve_timespec")
local interval = 1000 / {rate}
local slot = 0
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
function delay()
  local now = now_ms()
  slot = math.max(now, slot + interval)
  return math.floor(slot - now)
end
"""


# Clients that honour Retry-After: each 503 makes one connection wait 1 s before its next
# request. wrk calls response() and delay() at different moments, with no connection named,
# so a count of back-offs owed stands in for "this connection": the same load in sum.
BACK_OFF = """
local owed = 0
function response(status, headers, body)
  if status == 503 then owed = owed + 1 end
end
local paced_delay = delay
function delay()
  if owed > 0 then
    owed = owed - 1
    return 1000
  end
  return paced_delay()
end
"""


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (the workers), in KiB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, Any]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    out = subprocess.run(
        [*cmd, "-s", str(script), url], capture_output=True, text=True, check=True
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
    result["connections"] = connections
    return result


class Probe(threading.Thread):
    """One request every ``period`` s on its own connection, timed, kept by status."""

    def __init__(self, port: int, path: str, body: bytes, period: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.body, self.period = port, path, body, period
        self.samples: list[tuple[int, float, str, str]] = []  # status, seconds, retry, code
        self.stop = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": "application/json"}
        while not self.stop.is_set():
            start = time.perf_counter()
            try:
                conn.request("POST", self.path, self.body, headers)
                resp = conn.getresponse()
                data = resp.read()
            except OSError:
                self.samples.append((0, time.perf_counter() - start, "", "connection"))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            elapsed = time.perf_counter() - start
            code = json.loads(data).get("code", "") if resp.status != 200 else ""
            self.samples.append((resp.status, elapsed, resp.getheader("retry-after") or "", code))
            self.stop.wait(self.period)
        conn.close()

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"requests": len(self.samples)}
        for status in sorted({s[0] for s in self.samples}):
            times = sorted(s[1] for s in self.samples if s[0] == status)
            out[str(status)] = {
                "count": len(times),
                "p50_ms": round(times[len(times) // 2] * 1e3, 3),
                "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3, 3),
                "max_ms": round(times[-1] * 1e3, 3),
                "retry_after": sorted({s[2] for s in self.samples if s[0] == status}),
                "codes": sorted({s[3] for s in self.samples if s[0] == status}),
            }
        return out


@contextlib.contextmanager
def mlserve_server(
    registry: Path, log_path: Path, *extra: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``mlserve serve`` on a free loopback port, ready; terminated (SIGTERM) at exit."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlserve", "serve", "--registry", str(registry),
             "--port", str(port), "--log-level", "warning", *extra],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_ready(port, server, "mlserve")
            yield server, port
        finally:
            server.terminate()
            server.wait(timeout=60)


def probed(
    port: int, path: str, body: bytes, run: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], Probe]:
    """``run()``'s result, with the summary of a ``Probe`` run beside it under ``"probe"``."""
    probe = Probe(port, path, body)
    probe.start()
    try:
        result = run()
    finally:
        probe.stop.set()
        probe.join()
    result["probe"] = probe.summary()
    return result, probe


def locust_phase(seconds: int, users: int, workdir: Path) -> dict[str, Any]:
    """The demo registry under locust's mixed traffic with ``users`` users (no ramp)."""
    from mlserve.demo import build_demo

    registry = build_demo(workdir / "locust-demo")
    with mlserve_server(registry, workdir / "locust-server.log") as (server, port):
        rss_start = rss_kib(server.pid)
        locust = shutil.which("locust") or str(Path(sys.executable).with_name("locust"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
        env["MLSERVE_LOCUST_SHAPE"] = "off"
        run = subprocess.Popen(
            [locust, "-f", str(ROOT / "benchmarks" / "locustfile.py"), "--headless",
             "-H", f"http://127.0.0.1:{port}", "-u", str(users), "-r", str(users),
             "--run-time", f"{seconds}s", "--csv", str(workdir / "locust"), "--only-summary",
             "--exit-code-on-error", "0"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(seconds / 4)  # warmed up: windows and caches filled
        rss_warm = rss_kib(server.pid)
        if run.wait(timeout=seconds + 120) != 0:
            raise SystemExit(f"locust exited with {run.returncode}")
        rss_end = rss_kib(server.pid)
        alive = server.poll() is None
    rows = (workdir / "locust_stats.csv").read_text().splitlines()
    header = rows[0].split(",")
    aggregated = next(r for r in rows if ",Aggregated," in r).split(",")
    total = dict(zip(header, aggregated, strict=False))
    return {
        "users": users,
        "seconds": seconds,
        "requests": int(total["Request Count"]),
        "failures": int(total["Failure Count"]),
        "rate": float(total["Requests/s"]),
        "p50_ms": float(total["50%"]),
        "p99_ms": float(total["99%"]),
        "max_ms": float(total["Max Response Time"]),
        "rss_start_mib": rss_start / 1024,
        "rss_after_quarter_mib": rss_warm / 1024,
        "rss_end_mib": rss_end / 1024,
        "server_alive": alive,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="mlserve soak and overload (see module docstring)")
    p.add_argument("--model", default="lr", help="lr or gbm (demo credit-risk v1/v2)")
    p.add_argument("--soak-seconds", type=int, default=300)
    p.add_argument("--segment-seconds", type=int, default=30)
    p.add_argument("--overload-seconds", type=int, default=30)
    p.add_argument("--recovery-seconds", type=int, default=20)
    p.add_argument("--soak-connections", type=int, default=64)
    p.add_argument(
        "--overload-connections",
        type=int,
        default=2000,
        help="enough that their waiting requests outlast the server's overload delay",
    )
    p.add_argument(
        "--overload-delay-ms", type=float, help="the server's setting (default: its own)"
    )
    p.add_argument(
        "--compare-off",
        action="store_true",
        help="repeat the overload on a server with shedding off (--overload-delay-ms 0)",
    )
    p.add_argument("--locust-seconds", type=int, default=0)
    p.add_argument("--locust-users", type=int, default=32)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/soak.json"))
    args = p.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="mlserve-soak-"))
    result: dict[str, Any] = {"machine": machine_info(), "args": dict(vars(args))}
    result["args"]["out"] = str(args.out)
    try:
        registry = make_registry(workdir, 1000)
        body_path, _ = request_body("json", 1, 20, workdir)
        body = body_path.read_bytes()
        flat = workdir / "flat.lua"
        flat.write_text(LUA.format(body=body_path, delay=""))

        def paced(rate: float, honour_retry_after: bool = False) -> Path:
            script = workdir / f"rate-{rate:.0f}-{int(honour_retry_after)}.lua"
            delay = RATE_DELAY.format(rate=rate)
            if honour_retry_after:
                delay += BACK_OFF
            script.write_text(LUA.format(body=body_path, delay=delay))
            return script

        extra = []
        if args.overload_delay_ms is not None:
            extra = ["--overload-delay-ms", str(args.overload_delay_ms)]
        path = f"/v2/models/{args.model}/infer"
        with mlserve_server(registry, workdir / "server.log", *extra) as (server, port):
            url = f"http://127.0.0.1:{port}{path}"
            wrk(url, flat, 64, 3)  # warm-up
            # Capacity: 64 connections, no think time, as benchmarks/serve.py measures it;
            # the machine's speed wanders, so the median of three runs.
            trials = sorted((wrk(url, flat, 64, 5) for _ in range(3)), key=lambda r: r["rate"])
            capacity = trials[1]
            result["capacity"] = capacity
            result["capacity_trials"] = [t["rate"] for t in trials]
            print(
                f"capacity: {capacity['rate']:,.0f} req/s (median of "
                f"{', '.join(f'{t:,.0f}' for t in result['capacity_trials'])})"
            )
            rate80 = 0.8 * capacity["rate"]
            soak_script = paced(rate80)
            n80 = args.soak_connections
            segments = []
            rss_first = None
            requests_after_first = 0
            for i in range(max(1, args.soak_seconds // args.segment_seconds)):
                seg = wrk(url, soak_script, n80, args.segment_seconds)
                seg["rss_kib"] = rss_kib(server.pid)
                segments.append(seg)
                if rss_first is None:
                    rss_first = seg["rss_kib"]
                else:
                    requests_after_first += seg["requests"]
                print(
                    f"soak {i + 1}: {seg['rate']:,.0f} req/s"
                    f" ({seg['rate'] / capacity['rate']:.0%} of capacity),"
                    f" p50 {seg['p50_us'] / 1e3:.2f} ms, p99 {seg['p99_us'] / 1e3:.2f} ms,"
                    f" errors {seg['errors']}, non-2xx {seg['non2xx']},"
                    f" RSS {seg['rss_kib'] / 1024:.1f} MiB"
                )
            growth = (segments[-1]["rss_kib"] - (rss_first or 0)) * 1024
            result["soak"] = {
                "connections": n80,
                "segments": segments,
                "requests": sum(s["requests"] for s in segments),
                "errors": sum(s["errors"] + s["non2xx"] for s in segments),
                "rss_growth_bytes_per_million": growth / max(1, requests_after_first) * 1e6,
                "p99_ms_median": statistics.median(s["p99_us"] for s in segments) / 1e3,
                "p99_ms_max": max(s["p99_us"] for s in segments) / 1e3,
            }
            print(
                f"soak: {result['soak']['requests']:,} requests, "
                f"{result['soak']['errors']} errors, RSS growth "
                f"{result['soak']['rss_growth_bytes_per_million'] / 1024:.0f} KiB per million"
            )

            n150 = args.overload_connections
            # Clients that honour Retry-After (back off 1 s after a 503), then clients that
            # retry at once; each overload followed by a return to 80 %.
            for honour in (True, False):
                key = "overload" if honour else "overload_retry_at_once"
                script = paced(1.5 * capacity["rate"], honour)
                over, _ = probed(
                    port, path, body, partial(wrk, url, script, n150, args.overload_seconds)
                )
                over["alive"] = server.poll() is None
                over["served_rate"] = over["rate"] * (1 - over["non2xx"] / max(1, over["requests"]))
                result[key] = over
                print(
                    f"{key} ({n150} connections): {over['rate']:,.0f} answers/s, "
                    f"{over['served_rate']:,.0f} of them 200, non-2xx {over['non2xx']} "
                    f"({over['non2xx'] / max(1, over['requests']):.0%}), "
                    f"errors {over['errors']}; probe {over['probe']}"
                )

                rec, probe = probed(
                    port, path, body, partial(wrk, url, soak_script, n80, args.recovery_seconds)
                )
                half = probe.samples[len(probe.samples) // 2 :]
                rec["probe_non200_second_half"] = sum(1 for s in half if s[0] != 200)
                rec["rss_kib"] = rss_kib(server.pid)
                result["recovery" if honour else "recovery_after_retry_at_once"] = rec
                print(
                    f"recovery: {rec['rate']:,.0f} req/s, non-2xx {rec['non2xx']}, "
                    f"errors {rec['errors']}, probe {rec['probe']}"
                )
            result["server_alive"] = server.poll() is None
        result["exit_code"] = server.returncode
        if args.compare_off:
            # The same overload against a fresh server with shedding off: what the admitted
            # requests' latency would be without it.
            off_log = workdir / "server-off.log"
            with mlserve_server(registry, off_log, "--overload-delay-ms", "0") as (server, port):
                url = f"http://127.0.0.1:{port}{path}"
                wrk(url, flat, 64, 3)  # warm-up
                script = paced(1.5 * capacity["rate"], True)
                off, _ = probed(
                    port, path, body, partial(wrk, url, script, n150, args.overload_seconds)
                )
                off["alive"] = server.poll() is None
            result["overload_shedding_off"] = off
            print(
                f"overload, shedding off: {off['rate']:,.0f} answers/s, "
                f"non-2xx {off['non2xx']}, errors {off['errors']}; probe {off['probe']}"
            )
        if args.locust_seconds:
            result["locust"] = locust_phase(args.locust_seconds, args.locust_users, workdir)
            print(f"locust: {result['locust']}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
