"""The registry directory: ``<registry>/<model>/<version>/model.onnx``.

Scanning only: which model and version directories exist, whether a version is
complete, and which names it takes (``names.py``'s rules). Building sessions is the store's
job.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Names (``names.py``) and JSON reading (``jsonfile.py``) live below every layer that takes
# a name or reads a JSON file; they are imported here too, where they were first defined.
from ..jsonfile import MAX_JSON_BYTES as MAX_JSON_BYTES
from ..jsonfile import MAX_JSON_DEPTH as MAX_JSON_DEPTH
from ..jsonfile import json_depth as json_depth
from ..jsonfile import read_json
from ..names import VERSION_RE as _VERSION_RE
from ..names import check_model_name as check_model_name
from ..names import is_valid_model_name
from ..names import parse_version as parse_version

log = logging.getLogger("mlserve.registry")

MODEL_FILE = "model.onnx"
LINEAGE_FILE = "lineage.json"
SAMPLES_FILE = "samples.npz"
# The validation gate's result (governance/gate.py writes it): read again when it changes,
# without reloading the version.
VALIDATION_FILE = "validation.json"
BARE_VERSION_FILES = (
    MODEL_FILE,
    LINEAGE_FILE,
    SAMPLES_FILE,
    "reference.json",
    VALIDATION_FILE,
)
MODEL_LEVEL_FILES = ("model.toml", "routing.json")


@dataclass(frozen=True)
class VersionDir:
    """One ``<model>/<version>/`` directory as found on disk."""

    model: str
    version: int
    path: Path
    # The files that make the version (None: every visible file of its directory). A bare
    # model.onnx beside model.toml and routing.json names its own, so that those changing
    # do not look like a new version.
    files: tuple[str, ...] | None = None
    # The registry directory, resolved: no file of the version may lead out of it.
    registry: Path | None = field(default=None, compare=False)

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    def incomplete_reason(self) -> str | None:
        """Why this version cannot be loaded yet, or ``None`` when it is complete."""
        if self.registry is not None:
            names = self.files if self.files is not None else _entries(self.path)
            escaping = leaving_registry(self.path, names, self.registry)
            if escaping:
                return (
                    f"refused: {', '.join(escaping)} leads out of the registry directory "
                    "(a symlink); nothing outside the registry is read"
                )
        if not self.model_file.is_file():
            return f"incomplete: no {MODEL_FILE} in the version directory"
        expected = self.expected_sha256()
        if expected is not None:
            actual = sha256_file(self.model_file)
            if actual != expected:
                return (
                    f"{MODEL_FILE} sha256 {actual[:12]}… does not match "
                    f"{LINEAGE_FILE} ({expected[:12]}…)"
                )
        return None

    def lineage(self) -> dict[str, object] | None:
        """The parsed ``lineage.json``, or ``None`` when absent."""
        path = self.path / LINEAGE_FILE
        if not path.is_file():
            return None
        try:
            doc = read_json(path)
        except OSError as exc:
            raise ValueError(
                f"{LINEAGE_FILE} cannot be read: {exc.strerror or 'I/O error'}"
            ) from exc
        if not isinstance(doc, dict):
            raise ValueError(f"{LINEAGE_FILE} must hold a JSON object")
        return doc

    def expected_sha256(self) -> str | None:
        lineage = self.lineage()
        if lineage is None:
            return None
        value = lineage.get("model_sha256")
        return value.lower() if isinstance(value, str) else None


@dataclass(frozen=True)
class GateStatus:
    """Whether a version may take traffic under ``require_gate``, and why (not): its
    ``validation.json`` as the gate reader judged it at load (``governance/gate.py`` reads
    it; the store is handed the reader, as it is ``prepare``)."""

    passed: bool
    reason: str
    summary: dict[str, Any] | None = None


@dataclass
class ModelDir:
    """One ``<model>/`` directory and the version directories in it."""

    name: str
    path: Path
    versions: dict[int, VersionDir] = field(default_factory=dict)
    # Model-level files (model.toml, routing.json) that lead out of the registry: refused.
    escaping: tuple[str, ...] = ()
    # Why the model's directory could not be listed (None: it could): only this model fails.
    error: str | None = None


def scan_registry(
    root: Path, single_model: str = "", only: Collection[str] | None = None
) -> dict[str, ModelDir]:
    """Find models and versions under ``root``; odd entries are skipped with a warning.

    Hidden entries (a leading dot) are skipped silently: publishers write there first.
    Symlinks that resolve outside the registry are refused. With ``single_model`` (KServe's
    layout: ``/mnt/models`` holds one model), ``root`` is that model's directory: its
    numbered subdirectories are the versions, or a bare ``model.onnx`` is version 1. With
    ``only``, just those models are scanned (the others' directories are not read); a name
    that is not a model directory of the registry is left out of the answer.
    """
    root_resolved = root.resolve()
    if single_model:
        model = ModelDir(single_model, root, _scan_versions(root, single_model, root_resolved))
        model.escaping = tuple(leaving_registry(root, MODEL_LEVEL_FILES, root_resolved))
        if not model.versions and (root / MODEL_FILE).is_file():
            model.versions[1] = VersionDir(
                single_model, 1, root, files=BARE_VERSION_FILES, registry=root_resolved
            )
        return {single_model: model}
    if only is None:
        entries = model_entries(root, root_resolved)
    else:
        entries = {}
        for name in sorted(only):
            path = root / name
            if not is_valid_model_name(name) or not path.is_dir():
                continue
            if not path.is_symlink() or _inside(path, root_resolved):
                entries[name] = path
    return {name: scan_model(name, path, root_resolved) for name, path in entries.items()}


def model_entries(root: Path, root_resolved: Path | None = None) -> dict[str, Path]:
    """The model directories in ``root`` by name, in name order (one listing of ``root``;
    ``OSError`` when it cannot be read). Odd entries are skipped as ``scan_registry`` says."""
    root_resolved = root.resolve() if root_resolved is None else root_resolved
    found: dict[str, Path] = {}
    for entry in _listing(root):
        if entry.name.startswith(".") or not _is_dir(entry):
            continue
        if not is_valid_model_name(entry.name):
            _warn_once(f"registry: skipping {entry.name!r}: not a valid model name")
            continue
        path = Path(entry.path)
        if entry.is_symlink() and not _inside(path, root_resolved):
            _warn_once(f"registry: skipping {entry.name!r}: it leaves the registry directory")
            continue
        found[entry.name] = path
    return found


def scan_model(name: str, path: Path, root_resolved: Path) -> ModelDir:
    """One model directory and its versions; a directory that cannot be read fails only
    this model (``ModelDir.error``)."""
    try:
        return ModelDir(
            name,
            path,
            _scan_versions(path, name, root_resolved),
            tuple(leaving_registry(path, MODEL_LEVEL_FILES, root_resolved)),
        )
    except OSError as exc:  # this model's directory, not the registry: only it fails
        error = f"the model directory cannot be read: {exc.strerror or 'I/O error'}"
        return ModelDir(name, path, error=error)


def _scan_versions(entry: Path, name: str, root_resolved: Path) -> dict[int, VersionDir]:
    versions: dict[int, VersionDir] = {}
    for sub in _listing(entry):
        if sub.name.startswith(".") or not _is_dir(sub):
            continue
        if _VERSION_RE.fullmatch(sub.name) is None:
            _warn_once(f"registry: skipping {name}/{sub.name}: versions are positive integers")
            continue
        path = Path(sub.path)
        # Only a link can lead out: a plain directory inside one that is inside stays inside
        # (resolving every version directory was most of a scan's cost).
        if sub.is_symlink() and not _inside(path, root_resolved):
            _warn_once(f"registry: skipping {name}/{sub.name}: it leaves the registry directory")
            continue
        versions[int(sub.name)] = VersionDir(name, int(sub.name), path, registry=root_resolved)
    return versions


def _listing(directory: Path) -> list[os.DirEntry[str]]:
    """The entries of ``directory`` in name order (one ``scandir``: no ``stat`` per entry
    where the filesystem gives entry types)."""
    with os.scandir(directory) as it:
        return sorted(it, key=lambda e: e.name)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    """``Path.is_dir`` on a listed entry (a link is followed; a broken one is no directory)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def leaving_registry(directory: Path, names: Iterable[str], root_resolved: Path) -> list[str]:
    """The entries of ``directory`` among ``names`` that resolve outside the registry."""
    out = []
    for name in names:
        path = directory / name
        if path.is_symlink() and not _inside(path, root_resolved):
            out.append(name)
    return out


def _entries(directory: Path) -> list[str]:
    try:
        return sorted(p.name for p in directory.iterdir())
    except OSError:
        return []


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """Odd entries (e.g. ``lost+found`` on a fresh volume) are named once, not every scan."""
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _inside(path: Path, root_resolved: Path) -> bool:
    """Whether ``path`` resolves inside the registry. A link that cannot be resolved (a
    loop: ``Path.resolve`` raises RuntimeError on 3.11; or unreadable) counts as leaving,
    so it refuses only its own entry instead of failing the whole scan."""
    try:
        return path.resolve().is_relative_to(root_resolved)
    except (OSError, RuntimeError):
        return False


def write_atomically(path: Path, text: str) -> None:
    """Write, fsync, rename: readers (and a crash) see the old file or the new, never half."""
    commit_staged(stage_file(path, text), path)


def stage_file(path: Path, text: str) -> Path:
    """Write ``text`` to a hidden temporary file beside ``path`` and fsync it; the caller
    renames it into place with ``commit_staged`` (or removes it). On failure (a full disk)
    nothing is left behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if absent) for the block: the worker
    processes of one server, and servers sharing a registry, take turns."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def remove_stale_staged(path: Path, older_than: float = 600.0) -> int:
    """Remove files staged for ``path`` that a crash left behind (a SIGKILL between
    ``stage_file`` and ``commit_staged``); only those older than ``older_than`` seconds, so
    another process's change in progress is never touched. Returns how many."""
    removed = 0
    cutoff = time.time() - older_than
    for tmp in path.parent.glob(f".{path.name}.*"):
        with contextlib.suppress(OSError):
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
    return removed


def commit_staged(tmp: Path, path: Path) -> None:
    """Rename a staged file over ``path`` and fsync the directory, so the rename itself
    survives a crash; ``tmp`` is removed if the rename fails."""
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_durably(path: Path) -> None:
    """Unlink ``path`` (absent is fine) and fsync its directory."""
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
