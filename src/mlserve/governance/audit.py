"""An append-only, hash-chained audit log of administrative changes (JSON lines).

Each entry records the time, the actor (a short hash of the credential, never the
credential), the action, the model and the state before and after. Each line carries
the SHA-256 of the previous line, so editing, removing or reordering lines breaks the
chain from that point; ``verify`` names the first line that does not fit. Lines cut from
the end leave a shorter chain that still verifies: compare the last hash with one kept
elsewhere (``mlserve audit verify`` prints it) to detect that. Lines are
flushed and fsynced before the change they describe is reported as done (for routing
changes, before the change is even made: see ``ModelStore.update_routing``); a line that
could not be written whole (a full disk) is cut off again, never left half.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def actor_id(token: str) -> str:
    """A stable, non-reversible name for a credential."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:12]


class AuditLog:
    """Appends entries to ``path``; safe across threads of one process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(
        self, actor: str, action: str, model: str, before: Any, after: Any, cause: str = ""
    ) -> dict[str, Any]:
        # The file lock orders appends across worker processes, the thread lock within
        # one; the last line is read under both, so the chain never forks.
        with self._lock, self.path.open("a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                entry = {
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "actor": actor,
                    "action": action,
                    "model": model,
                    "before": before,
                    "after": after,
                    "prev": last_hash(fh),
                }
                if cause:  # why it happened, when the action alone does not say
                    entry["cause"] = cause
                line = json.dumps(entry, sort_keys=True, separators=(",", ":"))
                end = fh.seek(0, os.SEEK_END)
                try:
                    # Unbuffered (O_APPEND): nothing is left in a buffer to be written again
                    # at close() after a failure, past the cut below.
                    data = memoryview(line.encode() + b"\n")
                    while data:
                        data = data[os.write(fh.fileno(), data) :]
                    os.fsync(fh.fileno())
                except BaseException:
                    # A full disk may have taken part of the line: cut it off, so the chain
                    # stays verifiable and the next entry starts on a line of its own.
                    _truncate(fh, end)
                    raise
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
            return entry


def _truncate(fh: Any, size: int) -> None:
    """Best effort: cut the file back to ``size``."""
    try:
        os.ftruncate(fh.fileno(), size)
        os.fsync(fh.fileno())
    except OSError:
        pass


def last_hash(fh: Any) -> str:
    """SHA-256 of the file's last non-empty line (read from the end), or the genesis hash."""
    pos = fh.seek(0, os.SEEK_END)
    chunk = b""
    while pos > 0:
        step = min(4096, pos)
        pos -= step
        fh.seek(pos)
        chunk = fh.read(step) + chunk
        lines = [x for x in chunk.split(b"\n") if x.strip()]
        if len(lines) >= 2 or (lines and pos == 0):
            return hashlib.sha256(lines[-1]).hexdigest()
    return GENESIS


def verify(path: Path) -> tuple[int, str | None]:
    """(lines checked, None) when the chain holds, else (line number, what is wrong)."""
    expected = GENESIS
    count = 0
    with Path(path).open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            line = raw.rstrip(b"\n")
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                return number, f"line {number} is not JSON"
            if not isinstance(entry, dict) or entry.get("prev") != expected:
                return (
                    number,
                    f"line {number} does not follow line {number - 1} (edited, removed "
                    "or reordered)",
                )
            expected = hashlib.sha256(line).hexdigest()
            count += 1
    return count, None


def latest(path: Path, limit: int, max_bytes: int = 1 << 20) -> list[dict[str, Any]]:
    """The newest ``limit`` entries, oldest first, without their chain hashes (``prev``).

    Reads only the end of the file (at most ``max_bytes``); lines that are not JSON objects
    are skipped. An absent log has no entries.
    """
    pos, chunk = 0, b""
    try:
        with Path(path).open("rb") as fh:
            end = pos = fh.seek(0, os.SEEK_END)
            start = max(0, end - max_bytes)
            while pos > start and chunk.count(b"\n") <= limit:
                step = min(65536, pos - start)
                pos -= step
                fh.seek(pos)
                chunk = fh.read(step) + chunk
    except FileNotFoundError:
        return []
    lines = chunk.split(b"\n")
    if pos > 0:
        lines = lines[1:]  # the first piece may be the tail of a longer line
    entries: list[dict[str, Any]] = []
    for raw in reversed(lines):
        if len(entries) == limit:
            break
        try:
            entry = json.loads(raw) if raw.strip() else None
        except ValueError:
            continue
        if isinstance(entry, dict):
            entry.pop("prev", None)
            entries.append(entry)
    entries.reverse()
    return entries
