"""Registry scans that cost what changed (registry/changes.py).

Against a real server among many models: a version added, removed, a file replaced by an
atomic rename, a file rewritten in place with the same size and modification time, and
model.toml edited in place are each picked up, while the full scan is kept out of reach
(or, for the last case, within its period). In-process, over real directories: a scan
with nothing changed looks at O(models) entries whatever the number of versions (the
detector's own counters, and the process's directory listings seen by an audit hook), the
full scan comes every N-th scan, and a change within a timestamp tick of the scan that
recorded an entry is never missed (the racy rule).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlserve.config import ServerSettings
from mlserve.registry.changes import ChangeDetector
from mlserve.registry.store import ModelStore

from .conftest import linear_model, running_server, wait_for, write_version

X = {"name": "X", "datatype": "FP32", "shape": [1, 20], "data": [0.25] * 20}
OTHERS = 40  # models beside the one that changes
RACY_S = 2.1  # entries younger than 2 s at a scan are read again at the next (racy rule)

# Directory listings by this process, counted by an audit hook while ``_LISTING[0]`` is on.
_LISTING = [False]
_LISTINGS: list[str] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _LISTING[0] and event in ("os.scandir", "os.listdir"):
        _LISTINGS.append(str(args[0]))


sys.addaudithook(_audit)


def _registry(root: Path, versions: int = 1) -> None:
    for i in range(OTHERS):
        for v in range(1, versions + 1):
            write_version(root, f"m{i:02d}", v, linear_model(n_features=2, seed=i))
    write_version(root, "t", 1, linear_model(seed=1), lineage=False)


def _scores(c: httpx.Client, version: int | None = None) -> list[float]:
    path = "/v2/models/t" + (f"/versions/{version}" if version else "") + "/infer"
    r = c.post(path, json={"inputs": [X]})
    assert r.status_code == 200, r.text
    return list(r.json()["outputs"][0]["data"])


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path`` under a hidden name and rename it over ``path``."""
    tmp = path.with_name("." + path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@pytest.mark.slow
def test_one_model_among_many_changes_and_quick_scans_see_it(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    _registry(root)
    # The full scan out of reach: only the quick scans can see these changes.
    args = ("--poll-seconds", "0.3", "--full-scan-every", "1000000")
    with running_server(root, *args) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
        v1 = _scores(c)

        def versions() -> list[str]:
            return list(c.get("/v2/models/t").json()["versions"])

        # A version added the way a publisher adds it: a hidden directory renamed into place.
        hidden = write_version(root, "t", 7, linear_model(seed=2), lineage=False)
        os.rename(hidden, root / "t" / ".v2")
        start = time.monotonic()
        os.rename(root / "t" / ".v2", root / "t" / "2")
        wait_for(lambda: versions() == ["1", "2"])
        added_s = time.monotonic() - start
        v2 = _scores(c, 2)
        assert v2 != v1
        assert added_s < 10, f"a new version took {added_s:.1f} s to load"

        # A file of a loaded version replaced by an atomic rename: that version reloads.
        _replace(root / "t" / "2" / "model.onnx", linear_model(seed=3).SerializeToString())
        wait_for(lambda: _scores(c, 2) != v2)
        v2b = _scores(c, 2)

        # The same file rewritten in place: same size, and its modification time put back.
        # First past the racy window, so that only the watched times can show it.
        time.sleep(RACY_S)
        path = root / "t" / "2" / "model.onnx"
        before = path.stat()
        data = linear_model(seed=4).SerializeToString()
        assert len(data) == before.st_size
        with path.open("r+b") as fh:
            fh.write(data)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert (path.stat().st_size, path.stat().st_mtime_ns) == (
            before.st_size,
            before.st_mtime_ns,
        )
        wait_for(lambda: _scores(c, 2) != v2b)

        # model.toml edited in place (same inode): its new limit holds.
        toml = root / "t" / "model.toml"
        toml.write_text("")
        inode = toml.stat().st_ino
        two_rows = {**X, "shape": [2, 20], "data": [0.25] * 40}
        assert c.post("/v2/models/t/infer", json={"inputs": [two_rows]}).status_code == 200
        time.sleep(RACY_S)
        with toml.open("w") as fh:
            fh.write("[inputs]\nmax_rows = 1\n")
        assert toml.stat().st_ino == inode

        def refused() -> bool:
            r = c.post("/v2/models/t/infer", json={"inputs": [two_rows]})
            return r.status_code == 400 and "over the limit of 1" in r.text

        wait_for(refused)

        # A version removed: retired; version 1 still serves, the others never moved.
        shutil.rmtree(root / "t" / "2")
        wait_for(lambda: versions() == ["1"])
        assert _scores(c) == v1
        for i in (0, OTHERS - 1):
            meta = c.get(f"/v2/models/m{i:02d}").json()
            assert meta["versions"] == ["1"]


@pytest.mark.slow
def test_a_change_no_time_shows_is_caught_by_the_full_scan_in_its_period(
    tmp_path: Path,
) -> None:
    """The rewrite of the test above, with full scans every 10 scans of 0.2 s: whichever
    scan sees it (here the ctime shows it; on a filesystem with coarse or foreign times only
    the full scan does), the reload comes within the full scan's period plus a load."""
    root = tmp_path / "registry"
    _registry(root)
    args = ("--poll-seconds", "0.2", "--full-scan-every", "10")
    with running_server(root, *args) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
        before_scores = _scores(c)
        time.sleep(RACY_S)
        path = root / "t" / "1" / "model.onnx"
        before = path.stat()
        data = linear_model(seed=5).SerializeToString()
        assert len(data) == before.st_size
        with path.open("r+b") as fh:
            fh.write(data)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        start = time.monotonic()
        wait_for(lambda: _scores(c) != before_scores, timeout=2.0 + 8.0)
        assert time.monotonic() - start < 10.0


def _store(root: Path, **settings: Any) -> ModelStore[Any]:
    store: ModelStore[Any] = ModelStore(
        ServerSettings(registry=root, **settings), prepare=lambda session, config: session
    )
    store.load_all()
    return store


def _quiet_scan(store: ModelStore[Any]) -> tuple[int, list[str], int]:
    """One scan with nothing changed: (entries stat'ed, directories listed, models read)."""
    d = store.changes
    stats, rescans = d.stats, d.rescans
    _LISTINGS.clear()
    _LISTING[0] = True
    try:
        assert store.sync() == []
    finally:
        _LISTING[0] = False
    return d.stats - stats, list(_LISTINGS), d.rescans - rescans


@pytest.mark.parametrize("versions", [2, 10])
@pytest.mark.slow
def test_a_scan_with_nothing_changed_looks_at_each_model_not_each_version(
    tmp_path: Path, versions: int
) -> None:
    root = tmp_path / "registry"
    _registry(root, versions)
    models = OTHERS + 1
    store = _store(root, full_scan_every=1_000_000)
    # Entries written within two seconds of a scan are read again (racy): wait them out.
    time.sleep(RACY_S)
    store.sync()
    stats, listed, rescans = _quiet_scan(store)
    assert rescans == 0 and listed == []
    # The root, and per model its directory, model.toml, routing.json, and its loaded
    # version's directory and files (model.onnx, lineage.json): never the other versions.
    assert stats == 1 + models * 6 - 1  # "t" has no lineage.json
    # The full scan, for comparison, lists the root, every model and every version.
    store.changes.full_every = 1
    _LISTING[0] = True
    _LISTINGS.clear()
    try:
        store.sync()
    finally:
        _LISTING[0] = False
    assert len(_LISTINGS) == 1 + models + OTHERS * versions + 1


def test_the_full_scan_comes_every_nth_scan_and_reads_every_version(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    _registry(root, versions=3)
    store = _store(root, full_scan_every=3)  # the initial load is scan 1, a full one
    kinds = []
    for _ in range(6):  # scans 2..7: full at 4 and 7
        full = store.changes.full_scans
        store.sync()
        kinds.append(store.changes.full_scans > full)
    assert kinds == [False, False, True, False, False, True]


def test_racy_entries_are_read_again_until_their_times_are_old(tmp_path: Path) -> None:
    """A change within one timestamp tick of the scan that recorded an entry would leave
    its times as recorded: such an entry keeps its model rescanned for ``racy_ns``."""
    root = tmp_path / "registry"
    (root / "m").mkdir(parents=True)
    toml = root / "m" / "model.toml"
    toml.write_text("a = 1\n")
    detector = ChangeDetector(root, full_every=1_000_000, racy_ns=300_000_000)

    def scan() -> set[str]:
        plan = detector.plan()
        names = {"m": root / "m"} if plan.full else plan.dirty
        for name, path in names.items():
            detector.watch(name, [path, path / "model.toml"])
        if plan.full:
            detector.full_done({"m": root / "m"})
        return set(names)

    assert scan() == {"m"}  # the first scan is full
    assert scan() == {"m"}  # just written: racy, read again although no time changed
    time.sleep(0.35)
    assert scan() == {"m"}  # the scan that records the entries past the racy window
    assert scan() == set()
    # Rewritten in place with the same size and its modification time put back.
    before = toml.stat()
    toml.write_text("a = 2\n")
    os.utime(toml, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert scan() == {"m"}
    # A second change right after the scan that read the first: still seen.
    toml.write_text("a = 3\n")
    os.utime(toml, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert scan() == {"m"}
    # A model added to the registry: the root directory changed, it is listed and read.
    listings = detector.listings
    (root / "n").mkdir()
    plan = detector.plan()
    assert not plan.full and "n" in plan.dirty and detector.listings == listings + 1
    assert plan.removed == frozenset()
    # And removed: named as such.
    detector.watch("n", [root / "n"])
    (root / "n").rmdir()
    plan = detector.plan()
    assert plan.removed == {"n"} and "n" not in plan.dirty


@pytest.mark.slow
def test_one_model_layout_quick_scans_see_a_replaced_bare_file(tmp_path: Path) -> None:
    """KServe's layout (``--model-name``: the registry is the model's directory, a bare
    model.onnx is version 1): the quick scans watch the bare files too."""
    root = tmp_path / "model"
    root.mkdir()
    (root / "model.onnx").write_bytes(linear_model(seed=1).SerializeToString())
    store = _store(root, model_name="m", full_scan_every=1_000_000)
    first = store.resolve("m")
    time.sleep(RACY_S)
    store.sync()
    assert _quiet_scan(store)[1:] == ([], 0)
    _replace(root / "model.onnx", linear_model(seed=2).SerializeToString())
    for _ in range(3):  # seen, stable, loaded
        store.sync()
    assert store.resolve("m") is not first
    assert store.changes.full_scans == 1
