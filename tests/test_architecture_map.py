"""The documentation kept true: the module map and the links between pages.

``docs/architecture.md`` maps the package module by module (its ``| module | owns |`` table):
every module it names must exist under ``src/mlserve``, and every Python module there (bar
``__init__.py``) must be named, so that a module added, moved or removed without its row fails
here. And every relative link in ``README.md`` and ``docs/*.md`` must reach a file that exists,
and, for a link into a markdown page, a heading that page has.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mlserve"
MAP = ROOT / "docs" / "architecture.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def map_rows() -> list[str]:
    """The first cell of each row of the map's ``| module | owns |`` table(s)."""
    cells: list[str] = []
    in_map = False
    for line in MAP.read_text(encoding="utf-8").splitlines():
        if re.match(r"^\| *module *\| *owns *\|", line):
            in_map = True
            continue
        if not line.startswith("|"):
            in_map = False
            continue
        if in_map and not re.match(r"^\|[-| :]+\|$", line):
            cells.append(line.split("|")[1])
    return cells


def named_paths() -> list[str]:
    """Paths relative to ``src/mlserve`` named in the map's first column, in order.

    A cell may name several, comma-separated: a bare name after a path with a directory is in
    that directory (``monitoring/profile.py``, ``binning.py``), one with no directory before it
    is at the top (``cli.py``, ``__main__.py``). A name may end in ``/`` (a directory) or hold
    ``*`` (a glob that must match)."""
    paths: list[str] = []
    for cell in map_rows():
        names = re.findall(r"`([^`]+)`", cell)
        assert names, f"a map row names no module: {cell!r}"
        folder = ""
        for name in names:
            if "/" in name.rstrip("/"):
                folder = name.rstrip("/").rsplit("/", 1)[0] + "/"
                paths.append(name)
            else:
                paths.append(folder + name)
    return paths


def matches(path: str) -> list[Path]:
    if "*" in path:
        return sorted(PACKAGE.glob(path))
    target = PACKAGE / path
    return [target] if target.exists() else []


def test_the_map_parses() -> None:
    paths = named_paths()
    assert len(map_rows()) > 50, "the module table of docs/architecture.md was not found"
    assert "serving/pipeline.py" in paths and "monitoring/binning.py" in paths
    assert "__main__.py" in paths and "http/static/" in paths


def test_the_layer_order_is_the_enforced_one() -> None:
    """The layer order the map's page writes is ``[tool.importlinter]``'s, top to bottom."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (layers,) = [
        c["layers"] for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "layers"
    ]
    text = MAP.read_text(encoding="utf-8")
    paragraph = text[text.index("**Layers.**") :].split("\n\n", 1)[0]
    chain = paragraph[paragraph.index("`__main__`") : paragraph.index("`errors`") + len("`errors`")]
    written = [step.strip().strip("`") for step in chain.replace("\n", " ").split("→")]
    assert written == [" | ".join(part.strip() for part in layer.split("|")) for layer in layers]


def test_every_module_named_exists() -> None:
    missing = [p for p in named_paths() if not matches(p)]
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"
    for path in named_paths():
        if path.endswith("/"):
            assert (PACKAGE / path).is_dir(), f"{path} is not a directory"


def test_every_module_is_named() -> None:
    covered: set[Path] = set()
    for path in named_paths():
        for hit in matches(path):
            covered.update(hit.rglob("*") if hit.is_dir() else [hit])
    modules = sorted(
        p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" and "__pycache__" not in p.parts
    )
    unnamed = [str(p.relative_to(PACKAGE)) for p in modules if p not in covered]
    assert not unnamed, (
        f"modules missing from the map in docs/architecture.md (add a row each): {unnamed}"
    )


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to
    hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and (m := re.match(r"^#{1,6} +(.*?) *#*$", line)):
            base = slug(m[1])
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[str]:
    """The targets of markdown links and images on the page, outside code blocks and spans."""
    text = re.sub(r"^```.*?^```$", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)(?: \"[^\"]*\")?\)", text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target} (no such heading in {dest.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"
