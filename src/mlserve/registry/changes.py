"""Which models of the registry may have changed since the last scan.

Before each scan the store asks ``ChangeDetector.plan``: a full scan (the first, and every
``full_every``-th), or just the models to rescan. Between full scans a model is watched
through a few entries: its directory, its ``model.toml`` and ``routing.json``, and the
directory and files of each version it has loaded or failed (with the external data files
its model named at load, in a subdirectory of the version too). That is a handful of
``stat`` calls per model, whatever the number of its version directories. A directory's
times change when an entry is added, removed or renamed in it (publishing renames a
version into place); a file rewritten in place changes its own times.

What a ``stat`` cannot show is covered twice. An entry whose times are not older than the
scan that recorded them by ``racy_ns`` keeps its model rescanned until they are: a second
change within the same timestamp tick would leave them unchanged (git's "racy clean"
rule). And the periodic full scan catches what no time shows: timestamps from another
clock (NFS), a filesystem that does not update a directory's times, versions not watched.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .layout import model_entries

# What one stat says of an entry: times (ns), size, identity; None when it is absent.
Signature = tuple[int, int, int, int, int] | None

# Two seconds cover filesystems that keep times in whole seconds (and FAT's two).
DEFAULT_RACY_NS = 2_000_000_000


@dataclass(frozen=True)
class ScanPlan:
    """What the next scan reads: everything (``full``), or the ``dirty`` models (name →
    directory) and the removal of the ``removed`` ones."""

    full: bool
    dirty: dict[str, Path] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Watch:
    entries: tuple[tuple[str, Signature], ...]
    # Rescan at the next scan whatever the entries say (racy times, or the store asked).
    again: bool


class ChangeDetector:
    """Plans each registry scan; the store reports what it scanned with ``watch``.

    Counters (never reset): ``stats`` (entries looked at), ``listings`` (directories
    listed), ``full_scans``, ``quick_scans`` and ``rescans`` (models a quick scan gave the
    store to read again).
    """

    def __init__(
        self,
        root: Path,
        single_model: str = "",
        full_every: int = 30,
        racy_ns: int = DEFAULT_RACY_NS,
    ) -> None:
        if full_every < 1:
            raise ValueError(f"full_every must be >= 1, got {full_every}")
        self.root = root
        self.single_model = single_model
        self.full_every = full_every
        self.racy_ns = racy_ns
        # The model directories as last listed (None: the next scan is full).
        self._names: dict[str, Path] | None = None
        self._root = _Watch((), True)
        self._watches: dict[str, _Watch] = {}
        self._since_full = 0
        # When the current scan started: times at or after this, less racy_ns, are racy.
        self._epoch = 0
        self.stats = 0
        self.listings = 0
        self.full_scans = 0
        self.quick_scans = 0
        self.rescans = 0

    def plan(self) -> ScanPlan:
        """What the next scan reads. ``OSError`` when the registry directory cannot be
        listed (the scan after it is full)."""
        self._epoch = time.time_ns()
        if self._names is None or self._since_full + 1 >= self.full_every:
            self._names = None  # kept so until the full scan is done
            self._since_full = 0
            self.full_scans += 1
            return ScanPlan(full=True)
        self._since_full += 1
        self.quick_scans += 1
        removed: set[str] = set()
        if self.single_model:
            names = {self.single_model: self.root}
        else:
            if self._changed(self._root):
                try:
                    listing = model_entries(self.root)
                except OSError:
                    self._names = None
                    raise
                self.listings += 1
                removed = set(self._names) - set(listing)
                for name in removed:
                    self._watches.pop(name, None)
                self._names = listing
                self._root = self._watch([self.root], again=False)
            names = self._names
        dirty = {
            name: path
            for name, path in names.items()
            if name not in self._watches or self._changed(self._watches[name])
        }
        self.rescans += len(dirty)
        return ScanPlan(False, dirty, frozenset(removed))

    def watch(self, model: str, entries: Iterable[Path], again: bool = False) -> None:
        """After ``model`` was scanned: the entries that say when it changes (its
        directory first). ``again``: rescan it at the next scan anyway (a version not yet
        stable, a failure to retry)."""
        self._watches[model] = self._watch(entries, again)

    def full_done(self, models: dict[str, Path]) -> None:
        """A full scan found ``models`` (name → directory); each was given to ``watch``."""
        self._root = self._watch([self.root], again=False)
        self._names = dict(models)
        for name in [n for n in self._watches if n not in models]:
            del self._watches[name]

    def forget(self, model: str) -> None:
        """``model`` was read outside a scan (or unloaded): rescan it at the next scan."""
        self._watches.pop(model, None)

    def _watch(self, entries: Iterable[Path], again: bool) -> _Watch:
        signed = tuple((str(p), self._stat(str(p))) for p in entries)
        # Racy: changed so recently that another change in the same tick would not show.
        threshold = self._epoch - self.racy_ns
        racy = any(sig is not None and max(sig[0], sig[1]) >= threshold for _, sig in signed)
        return _Watch(signed, again or racy)

    def _changed(self, watch: _Watch) -> bool:
        if watch.again:
            return True
        return any(self._stat(path) != sig for path, sig in watch.entries)

    def _stat(self, path: str) -> Signature:
        self.stats += 1
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev)
