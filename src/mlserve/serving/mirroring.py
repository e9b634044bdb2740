"""Mirroring: an unpinned request's inputs offered to its model's shadow versions after
the answer was sent (``routing/shadow.py`` runs and compares them), one mirror per model."""

from __future__ import annotations

from ..monitoring.snapshot import HistogramState, ShadowSection, ShadowState
from ..registry.store import ModelStore
from ..routing.shadow import ShadowMirror
from .endpoint import Endpoint, InferResult


class Shadows:
    """Each model's ``ShadowMirror``, made on first use and remade when its queue is
    resized by a routing change."""

    def __init__(self, store: ModelStore[Endpoint]) -> None:
        self.store = store
        self._mirrors: dict[str, ShadowMirror] = {}

    def offer(self, result: InferResult) -> None:
        """Offer an unpinned request to the model's shadows (after its answer was sent)."""
        endpoint = result.endpoint
        split = self.store.split(endpoint.model)
        shadows = [e for e in split.shadows if e is not endpoint]
        if not shadows:
            return
        size = split.shadow_queue
        mirror = self._mirrors.get(endpoint.model)
        if mirror is None or mirror.max_queue != size:  # new, or resized by a routing change
            if mirror is not None:
                mirror.stop()
            mirror = self._mirrors[endpoint.model] = ShadowMirror(size, mirror)
        mirror.offer(
            shadows, split.shadow_sample, result.feeds, result.names, result.outputs, result.trace
        )

    def snapshot_section(self) -> ShadowSection:
        """The monitoring hub's source for the shadow comparisons."""
        return ShadowSection(
            {
                key: ShadowState(
                    c.requests,
                    c.errors,
                    c.dropped,
                    dict(c.rows),
                    dict(c.disagree),
                    {k: HistogramState(list(h.counts), h.sum) for k, h in list(c.diff.items())},
                    HistogramState(list(c.infer.counts), c.infer.sum),
                )
                for mirror in list(self._mirrors.values())
                for key, c in list(mirror.comparisons.items())
            }
        )

    def stop(self) -> None:
        for mirror in self._mirrors.values():
            mirror.stop()
