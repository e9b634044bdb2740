"""An append-only, hash-chained audit log of administrative changes (JSON lines).

Each entry records the time, the actor (a short hash of the credential, never the
credential), the action, the model and the state before and after. Each line carries
the SHA-256 of the previous line, so editing, removing or reordering lines breaks the
chain from that point; ``verify`` names the first line that does not fit. Lines are
flushed and fsynced before the change they describe is reported as done.
"""

from __future__ import annotations

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
        self, actor: str, action: str, model: str, before: Any, after: Any
    ) -> dict[str, Any]:
        with self._lock:
            entry = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "actor": actor,
                "action": action,
                "model": model,
                "before": before,
                "after": after,
                "prev": self._last_hash(),
            }
            line = json.dumps(entry, sort_keys=True, separators=(",", ":"))
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            return entry

    def _last_hash(self) -> str:
        if not self.path.exists():
            return GENESIS
        last = b""
        with self.path.open("rb") as fh:
            for raw in fh:
                if raw.strip():
                    last = raw.rstrip(b"\n")
        return hashlib.sha256(last).hexdigest() if last else GENESIS


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
