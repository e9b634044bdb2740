"""``docs/your-own-model.md`` ("Your own model, end to end"), run as written.

The page's blocks are read from it and run in order, as a new user would: files
written where their first line says, shell blocks through bash (the CLI as subprocesses), the
server started as the section says but on a free loopback port (``running_server``), real
HTTP. Each shell block's output must match the text block that follows it on the page, line
for line, where ``…`` stands for anything (within a line, or a whole line for one or more
lines). The values that matter are also asserted here, so that cutting them from the page
cannot hide a regression. The page cannot drift from what is tested.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import running_server, wait_for

PAGE = Path(__file__).resolve().parents[1] / "docs" / "your-own-model.md"
TITLE = "# Your own model, end to end\n"
PAGE_URL = "localhost:8080"

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")
pytest.importorskip("pandas")


def section_blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced block of the page, in order."""
    text = PAGE.read_text(encoding="utf-8")
    assert text.startswith(TITLE), f"{PAGE} does not start with {TITLE!r}"
    fences = re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    return [(m[1], m[2]) for m in fences]


def shown_pattern(shown: str) -> re.Pattern[str]:
    """The page's output as a pattern: ``…`` is any text in a line, or, alone on its line,
    one or more whole lines."""
    lines = []
    for line in shown.rstrip("\n").split("\n"):
        if line.strip() == "…":
            lines.append(r"[^\n]*(?:\n[^\n]*)*?")
        else:
            lines.append(r"[^\n]*".join(re.escape(p) for p in line.rstrip().split("…")))
    return re.compile("\n".join(lines))


def normalised(output: str) -> str:
    return "\n".join(line.rstrip() for line in output.strip("\n").splitlines())


class Walkthrough:
    """A cursor over the page's blocks, running each in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.blocks: Iterator[tuple[str, str]] = iter(section_blocks())
        self.url = f"http://{PAGE_URL}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
        # `mlserve` and `python` as the user's virtual environment has them
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env['PATH']}"

    def take(self, lang: str, marker: str) -> str:
        got, text = next(self.blocks)
        assert got == lang and marker in text, f"expected a {lang} block with {marker!r}: {text}"
        return text

    def local(self, text: str) -> str:
        return text.replace(PAGE_URL, self.url.removeprefix("http://"))

    def write(self, marker: str, lang: str = "python") -> Path:
        """The next ``lang`` block, written to the path its first line names (``# path``)."""
        text = self.take(lang, marker)
        path = self.workdir / text.split("\n", 1)[0].removeprefix("# ").strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.local(text))
        return path

    def run(self, marker: str) -> str:
        """Run the next shell block; check its output against the text block after it."""
        command = self.take("bash", marker)
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", self.local(command)],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
        )
        output = normalised(done.stdout)
        assert done.returncode == 0, f"{command}\nexited {done.returncode}:\n{output}"
        shown = self.take("text", "")
        assert shown_pattern(shown).fullmatch(output), (
            f"{command}\nprinted:\n{output}\n\nthe page shows:\n{shown}"
        )
        return output


def metadata(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v2/models/wine", timeout=10).json()  # type: ignore[no-any-return]


def ready_and_passed(url: str, version: str) -> bool:
    entry = metadata(url)["parameters"]["versions"].get(version, {})
    return entry.get("state") == "ready" and entry.get("gate", {}).get("passed") is True


def all_binned(url: str) -> bool:
    """Every row each version answered is in its drift window (rows are binned in batches)."""
    report = httpx.get(f"{url}/v2/models/wine/monitor", timeout=10).json()
    for entry in report["versions"].values():
        answered = sum(role["rows"] for role in entry["requests"].values())
        inputs = entry["drift"]["sections"]["inputs"]["features"][0]
        if inputs["window_count"] != answered:
            return False
    return True


def first_snapshot(url: str) -> dict[str, Any]:
    with httpx.stream(
        "GET", f"{url}/v2/monitor/stream?interval=0.5&max_seconds=5", timeout=10
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                return json.loads(line.removeprefix("data:"))  # type: ignore[no-any-return]
    raise AssertionError("the stream sent no snapshot")


def test_walkthrough(tmp_path: Path) -> None:
    walk = Walkthrough(tmp_path)

    walk.write("# train.py")
    out = walk.run("python train.py")
    assert "C=1.0: held-out accuracy 1.0000" in out
    assert "C=0.01: held-out accuracy 0.9815" in out

    out = walk.run("--estimator wine-C1.0.joblib")
    assert "published wine v1 at registry/wine/1" in out
    walk.write("[gate]", lang="toml")
    out = walk.run("--version 1")
    assert re.search(r"^min_accuracy +1 +>= 0.9 +pass$", out, re.MULTILINE)
    assert out.splitlines()[-2:] == ["wine v1: PASSED", "wrote registry/wine/1/validation.json"]

    serve = walk.take("bash", "mlserve serve")
    token, command = serve.strip().split(" ", 1)
    assert command == "mlserve serve --registry registry"
    registry = tmp_path / "registry"
    env = {token.split("=")[0]: token.split("=", 1)[1]}
    with running_server(registry, env=env) as server:
        walk.url = server.url

        answer = json.loads(walk.run("wines.json"))
        assert answer["model_version"] == "1"
        assert answer["outputs"][0] == {
            "name": "label",
            "datatype": "INT64",
            "shape": [3],
            "data": [0, 1, 2],
        }

        walk.write("# score.py")
        out = walk.run("python score.py")
        assert out.splitlines()[-1] == "accuracy: 1.0"

        out = walk.run("--version 2")
        assert "published wine v2 at registry/wine/2" in out
        assert re.search(r"^min_accuracy +0.9815 +>= 0.9 +pass$", out, re.MULTILINE)
        assert "wine v2: PASSED" in out
        wait_for(lambda: ready_and_passed(server.url, "2"), timeout=30)
        out = walk.run("grep mlserve-")
        assert "mlserve-model-version: 1" in out.splitlines()
        assert "mlserve-route: stable" in out.splitlines()

        out = walk.run("/promote")
        routing, *lines, promoted = out.splitlines()
        assert json.loads(routing)["serving"] == {
            "stable": 1,
            "canary": 2,
            "canary_weight": 10.0,
            "shadows": [],
        }
        assert "erin: mlserve-route: canary" in lines and "alice: mlserve-route: stable" in lines
        assert json.loads(promoted)["serving"]["stable"] == 2

        walk.write("# send.py")
        walk.write("# drift.py")
        assert walk.run("python send.py") == "sent 178 wines"
        wait_for(lambda: all_binned(server.url), timeout=30)
        out = walk.run("python drift.py")
        assert "v2 inputs        181 rows  alerts []" in out

        assert walk.run("python send.py --stronger") == "sent 178 wines"
        wait_for(lambda: all_binned(server.url), timeout=30)
        out = walk.run("python drift.py")
        assert "v2 inputs        359 rows  alerts ['alcohol']  highest PSI alcohol" in out

        # the dashboard is fed by the stream: the same alert is on it
        page = httpx.get(f"{server.url}/dashboard", timeout=10)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        snapshot = first_snapshot(server.url)
        assert snapshot["endpoints"]["wine/2"]["alerting"]["inputs"] == ["alcohol"]
        assert not snapshot["endpoints"]["wine/1"]["drift_alert"]

    assert next(walk.blocks, None) is None, "a block of the page was not run"
