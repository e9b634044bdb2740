"""Polls the registry directory and feeds changes to the store.

Every ``interval`` seconds the store rescans (``ModelStore.sync``, in a worker thread so
the event loop keeps serving): the models whose watched times moved, and every model every
``full_scan_every``-th scan (registry/changes.py); the store decides what is new, changed,
stable and loadable. One failed scan is logged and the next one runs as usual.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .store import ModelStore

log = logging.getLogger("mlserve.registry")


class RegistryWatcher:
    """A polling loop over ``store.sync``; ``run`` until cancelled."""

    def __init__(
        self,
        store: ModelStore[Any],
        interval: float,
        on_changes: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.store = store
        self.interval = interval
        self.on_changes = on_changes  # told what each scan changed (for the audit log)
        self.scans = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                changes = await asyncio.to_thread(self.store.sync)
                if self.on_changes is not None:  # also with none: routing changes to audit
                    await asyncio.to_thread(self.on_changes, changes)
            except Exception:  # a bug in one scan must not stop the later ones
                log.exception("registry scan failed")
            self.scans += 1
