"""A fleet for tests: mlserve replicas sharing one state directory behind Debian's haproxy.

Used by ``tests/test_fleet.py`` (routing state, SIGKILL, fleet-wide guardrails) and
``tests/test_fleet_drift.py`` (the drift rules on the replicas' summed windows).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .conftest import ServerProcess, free_port, stop_process
from .support.waiting import NOT_YET, wait_for


@dataclass
class Fleet:
    """Replicas of one registry on fixed ports, sharing ``state`` (``--state-dir``)."""

    registry: Path
    state: Path
    ports: list[int]
    token: str = "fleet-token"
    poll_s: float = 1.0
    lb: str = ""
    prom_port: int = 0
    replicas: list[ServerProcess] = field(default_factory=list)

    def start(self, i: int, wait: bool = True) -> ServerProcess:
        """(Re)start replica ``i`` on its port, with the fleet's shared state directory;
        ``wait``: until it is ready (else the caller waits with ``wait_ready``)."""
        server = ServerProcess(
            self.registry,
            "--state-dir",
            str(self.state),
            "--poll-seconds",
            str(self.poll_s),
            env={"MLSERVE_ADMIN_TOKEN": self.token},
            port=self.ports[i],
        )
        if i < len(self.replicas):
            self.replicas[i] = server
        else:
            self.replicas.append(server)
        if wait:
            server.wait_ready()
        return server

    def stop(self) -> None:
        for r in self.replicas:
            r.stop()

    def logs(self) -> str:
        return "\n".join(r.log()[-3000:] for r in self.replicas)


@contextlib.contextmanager
def haproxy(workdir: Path, ports: list[int]) -> Iterator[str]:
    """Debian's haproxy on a free loopback port, round robin over ``ports``; the answering
    replica is named (r0, r1, ...) in an ``x-replica`` response header."""
    binary = shutil.which("haproxy")
    assert binary is not None, "haproxy not found: install Debian's 'haproxy' package"
    port = free_port()
    servers = "\n".join(
        f"    server r{i} 127.0.0.1:{p} check inter 200ms fall 2 rise 1"
        for i, p in enumerate(ports)
    )
    config = workdir / "haproxy.cfg"
    config.write_text(
        "global\n    maxconn 256\n"
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n"
        "    timeout server 30s\n    retries 2\n    option redispatch\n"
        f"frontend fleet\n    bind 127.0.0.1:{port}\n    default_backend mlserve\n"
        "backend mlserve\n    balance roundrobin\n"
        "    option httpchk GET /v2/health/ready\n    http-check expect status 200\n"
        "    http-response set-header x-replica %s\n"
        f"{servers}\n"
    )
    check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    log_path = workdir / "haproxy.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def every_replica_up() -> bool:
            assert proc.poll() is None, log_path.read_text()
            seen = {
                httpx.get(url + "/v2/health/ready", timeout=2).headers.get("x-replica")
                for _ in range(4 * len(ports))
            }
            return seen == {f"r{i}" for i in range(len(ports))}

        wait_for(
            every_replica_up,
            30,
            what="haproxy to reach every replica",
            detail=log_path.read_text,
            interval=0.25,
            ignore=NOT_YET,
        )
        yield url
    finally:
        stop_process(proc, 10)
