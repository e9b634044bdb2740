"""Load shedding: past its capacity the server refuses the excess with 503 ``overloaded`` and
``Retry-After``, keeps the admitted requests fast, and recovers the moment load drops."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from .conftest import linear_model, running_server, write_version
from .support.metrics import parse

# Slow: every test here drives a real server with wrk (-m "not slow" skips them).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed"),
]

BODY = (
    b'{"inputs":[{"name":"X","datatype":"FP32","shape":[1,20],"data":['
    + b",".join(b"0.5" for _ in range(20))
    + b"]}]}"
)
LUA = """
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def test_excess_load_is_refused_with_retry_after_and_service_recovers(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    write_version(registry, "linear", 1, linear_model())
    script = tmp_path / "load.lua"
    script.write_text(LUA.format(body=BODY.decode()))
    # A 2 ms bound makes the closed loop of 256 connections (each request queued behind the
    # others, ~20 ms a round on these machines) overload the server for sure.
    with running_server(registry, "--overload-delay-ms", "2") as server:
        url = f"{server.url}/v2/models/linear/infer"
        probes: list[httpx.Response] = []
        stop = threading.Event()

        def probe() -> None:  # one client among the crowd, seeing what any client sees
            with httpx.Client(timeout=10) as c:
                while not stop.is_set():
                    probes.append(c.post(url, content=BODY))
                    time.sleep(0.01)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            wrk = subprocess.run(
                ["wrk", "-t1", "-c256", "-d3s", "--timeout", "10s", "-s", str(script), url],
                capture_output=True,
                text=True,
                check=True,
            )
        finally:
            stop.set()
            prober.join()
        assert "Non-2xx or 3xx responses" in wrk.stdout, wrk.stdout  # some were refused
        assert "Socket errors" not in wrk.stdout, wrk.stdout  # none dropped or timed out
        statuses = {r.status_code for r in probes}
        assert statuses <= {200, 503}, statuses
        refused = [r for r in probes if r.status_code == 503]
        admitted = [r for r in probes if r.status_code == 200]
        assert refused and admitted, statuses
        for r in refused:
            assert r.headers["retry-after"] == "1"
            assert r.json()["code"] == "overloaded"
            assert "event loop" in r.json()["error"]
        expected = None
        for r in admitted:  # admitted answers are whole and right
            out = {o["name"]: o for o in r.json()["outputs"]}
            if expected is None:
                expected = out
            assert out == expected
        with httpx.Client(base_url=server.url, timeout=10) as c:
            time.sleep(0.2)  # the next 10 ms check sees an idle loop
            ok = c.post("/v2/models/linear/infer", content=BODY)
            assert ok.status_code == 200, ok.text  # recovered as soon as load dropped
            metrics = c.get("/metrics").text
        shed = parse(metrics).value("mlserve_overload_rejections_total")
        assert shed >= len(refused)
        rejected = parse(metrics).value(
            "mlserve_requests_total", model="linear", version="1", role="stable", outcome="rejected"
        )
        assert rejected == shed  # every refusal is the version's rejected request too
        assert 0 <= parse(metrics).value("mlserve_event_loop_delay_seconds") < 1
        assert np.isfinite(shed)


def test_shedding_off_admits_everything(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    write_version(registry, "linear", 1, linear_model())
    script = tmp_path / "load.lua"
    script.write_text(LUA.format(body=BODY.decode()))
    with running_server(registry, "--overload-delay-ms", "0") as server:
        url = f"{server.url}/v2/models/linear/infer"
        wrk = subprocess.run(
            ["wrk", "-t1", "-c256", "-d2s", "--timeout", "10s", "-s", str(script), url],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "Non-2xx or 3xx responses" not in wrk.stdout, wrk.stdout
        assert "Socket errors" not in wrk.stdout, wrk.stdout
        metrics = httpx.get(f"{server.url}/metrics").text
        assert parse(metrics).value("mlserve_overload_rejections_total") == 0
