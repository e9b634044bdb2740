"""The package's layers, as ``lint-imports`` checks them ([tool.importlinter] in pyproject.toml).

The real package keeps every contract; and a copy of it with one change that breaks a
contract (an upward import, a lazy one inside a function, a cycle inside a package, a module
placed in no layer, a web framework below the transports) fails, naming the contract: the
contracts bite, whatever hides the import at run time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mlserve"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # the test extra installs it

LAYERS = "mlserve layers: each imports only the layers below it"
ACYCLIC = "no import cycles between the modules of any mlserve package"
TRANSPORT_FREE = "the serving core knows no transport: below http and grpc, no web or RPC framework"


def lint_imports(cwd: Path, pythonpath: Path) -> tuple[int, str]:
    """``lint-imports`` on the package found first on ``pythonpath``, with the contracts of
    ``cwd/pyproject.toml``: its exit status and its report, on one line (the report wraps
    long lines; some versions colour it)."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "NO_COLOR": "1", "COLUMNS": "200"}
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    return result.returncode, " ".join(report.split())


def test_the_package_keeps_its_layers() -> None:
    status, report = lint_imports(ROOT, ROOT / "src")
    assert status == 0, report
    assert "BROKEN" not in report
    assert f"{LAYERS} KEPT" in report


@pytest.mark.parametrize(
    ("module", "added", "contract", "named"),
    [
        # An upward import: the runtime reaching the HTTP transport.
        (
            "runtime/tensors.py",
            "from ..http import errors as _upward  # noqa: F401\n",
            LAYERS,
            "mlserve.runtime.tensors -> mlserve.http.errors",
        ),
        # The same hidden in a function (a lazy import): still an import.
        (
            "config.py",
            "\n\ndef _lazy() -> None:\n    from .registry import layout  # noqa: F401\n",
            LAYERS,
            "mlserve.config -> mlserve.registry.layout",
        ),
        # A cycle inside one package: the runner protocol importing the runners.
        (
            "execution/base.py",
            "from . import runners as _cycle  # noqa: F401\n",
            ACYCLIC,
            "No cycles are allowed in mlserve.execution",
        ),
        # A new top-level module placed in no layer (the contract is exhaustive).
        (
            "stray.py",
            '"""A module added without a place in the layers."""\n',
            LAYERS,
            "mlserve.stray",
        ),
        # A web framework below the transports.
        (
            "serving/pipeline.py",
            "import starlette as _web  # noqa: F401\n",
            TRANSPORT_FREE,
            "mlserve.serving.pipeline -> starlette",
        ),
    ],
)
def test_a_broken_contract_fails_the_build(
    tmp_path: Path, module: str, added: str, contract: str, named: str
) -> None:
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "mlserve", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = src / "mlserve" / module
    before = target.read_text(encoding="utf-8") if target.exists() else ""
    target.write_text(before + added, encoding="utf-8")

    status, report = lint_imports(tmp_path, src)

    assert status == 1, report
    assert f"{contract} BROKEN" in report
    assert named in report
