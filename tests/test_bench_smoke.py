"""The serving benchmark harness runs end to end (one short configuration), so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
