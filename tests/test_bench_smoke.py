"""The serving benchmark harness runs end to end (one short configuration), so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Slow (the benchmarks, run for real): deselected by -m "not slow".
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_serving_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.serve",
        "--duration",
        "1",
        "--rounds",
        "1",
        "--concurrency",
        "2",
        "--batch",
        "1",
        "--encodings",
        "json,binary",
        "--models",
        "lr",
        "--systems",
        "floor-asgi,mlserve",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    rows = {(r["system"], r["encoding"]): r for r in result["summary"]}
    assert set(rows) == {("floor-asgi", "json"), ("mlserve", "json"), ("mlserve", "binary")}
    for row in rows.values():
        assert row["rps"] > 50 and row["errors"] == 0, row
        assert row["p99_us"] >= row["p50_us"] > 0
    assert rows[("floor-asgi", "json")]["rps_vs_floor"] == 1.0
    assert result["machine"]["onnxruntime"] and result["inprocess"][0]["p50_us"] > 0
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert "rps_vs_floor" in json.dumps(result)


def test_gpu_benchmark_runs_on_the_cpu_provider(tmp_path: Path) -> None:
    """benchmarks/gpu.py (what gpu_check.sh runs) works end to end with the CPU provider;
    asked for CUDA where onnxruntime has none, it says so and exits 1."""
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--seconds", "0.3", "--runs", "20",
           "--batches", "1,8", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(
        [*cmd, "--providers", "CPUExecutionProvider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    cells = {(r["model"], r["batch"]) for r in result["in_process"]}
    assert cells == {(m, b) for m in ("lr", "gbm", "mlp") for b in (1, 8)}
    assert all(r["errors"] == 0 and r["requests_per_s"] > 0 for r in result["served"])
    assert {r["providers"][0] for r in result["served"]} == {"CPUExecutionProvider"}
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        missing = subprocess.run(
            [*cmd, "--providers", "CUDAExecutionProvider", "--batches", "1"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert missing.returncode == 1 and "NOT AVAILABLE: CUDAExecutionProvider" in missing.stdout
