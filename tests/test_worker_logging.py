"""mlserve's own log with several worker processes, and a port already in use.

Real server processes: ``--workers 2`` must log like one worker (level, logger name, each
record once per worker that emits it, with that worker's pid), and a busy port is named
whatever the number of workers.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import free_port, linear_model, running_server, wait_for, write_version

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>mlserve[\w.]*) "
    r"\[(?P<pid>\d+)\]: (?P<message>.*)$"
)


@pytest.fixture()
def small_registry(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    write_version(root, "lin", 1, linear_model())
    broken = root / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    return root


@pytest.mark.slow
def test_two_workers_log_each_record_once_per_worker_with_level_logger_and_pid(
    small_registry: Path,
) -> None:
    with running_server(small_registry, "--workers", "2", "--log-level", "info") as server:
        # ready answers from one worker; the other may still be loading
        wait_for(lambda: server.log().count("loaded lin v1 on ") >= 2, timeout=60)
    log = server.log_path.read_text()
    parsed = [m for m in map(LINE.match, log.splitlines()) if m]
    loaded = [m for m in parsed if re.search(r"\bloaded lin v1 on ", m["message"])]
    assert {m["level"] for m in loaded} == {"INFO"}, log
    assert {m["logger"] for m in loaded} == {"mlserve.runtime"}
    pids = [m["pid"] for m in loaded]
    assert len(pids) == 2 and len(set(pids)) == 2, log  # once in each worker
    # a warning-or-worse record (the broken version) also once per worker, formatted
    failed = [m for m in parsed if "broken version 1 failed to load" in m["message"]]
    assert sorted(m["pid"] for m in failed) == sorted(pids), log
    assert {m["level"] for m in failed} == {"ERROR"}
    bare = [ln for ln in log.splitlines() if ln.startswith("model broken")]
    assert bare == [], "records without timestamp, level and logger"


def test_one_worker_keeps_its_format_without_pid(small_registry: Path) -> None:
    with running_server(small_registry, "--log-level", "info") as server:
        pass
    lines = [ln for ln in server.log_path.read_text().splitlines() if "loaded lin v1 on " in ln]
    assert len(lines) == 1 and " INFO mlserve.runtime: loaded lin v1" in lines[0], lines


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_named(small_registry: Path, workers: str) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        out = subprocess.run(
            [sys.executable, "-m", "mlserve", "serve", "--registry", str(small_registry),
             "--port", str(port), "--workers", workers],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert out.returncode == 3, out.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in out.stderr
    assert "--port" in out.stderr
    assert "loaded" not in out.stderr  # refused before any model loads
