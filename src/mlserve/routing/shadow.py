"""Shadow traffic: mirrored copies of served requests, run after the answer, compared.

The caller never waits for a shadow and its answer is never changed by one: after a
response is sent, its inputs and outputs are offered to a bounded queue (sampled at
``shadow_sample``); a full queue drops the copy and counts it. One consumer task per
server runs each copy on every shadow version (through that version's own runner,
inline or on a thread as decided at load) and compares outputs with the primary's:
predicted classes (integer outputs) agree or not per row, and scores (float outputs)
by absolute difference. A shadow's errors are counted, never surfaced.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..execution.base import Runner
from ..monitoring.hub import EndpointStats
from ..monitoring.request_stats import ERROR, LATENCY_BUCKETS, SHADOW_DIFF_BUCKETS, Histogram

log = logging.getLogger("mlserve.routing")


class ShadowTarget(Protocol):
    """What a shadow run needs of a shadow version: its names, its runner (as decided at
    load) and its stats (None: monitoring off). The serving layer's ``Endpoint`` is one."""

    @property
    def model(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def runner(self) -> Runner: ...
    @property
    def stats(self) -> EndpointStats | None: ...


@dataclass
class Comparison:
    """What one shadow version has shown against the primary, per output."""

    requests: int = 0
    errors: int = 0
    dropped: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # rows compared, by output
    disagree: dict[str, int] = field(default_factory=dict)  # class outputs: rows that differ
    diff: dict[str, Histogram] = field(default_factory=dict)  # float outputs: |Δ| per value
    infer: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))


@dataclass(eq=False)
class _Copy:
    shadows: Sequence[ShadowTarget]
    feeds: dict[str, np.ndarray]
    names: Sequence[str]
    outputs: Sequence[np.ndarray]
    trace: Any = None  # the request's span (tracing on): each shadow run is a child of it


class ShadowMirror:
    """The bounded queue of mirrored requests and its consumer."""

    def __init__(self, max_queue: int = 256, previous: ShadowMirror | None = None) -> None:
        self.max_queue = max_queue
        self._queue: asyncio.Queue[_Copy] | None = None
        self._task: asyncio.Task[None] | None = None
        # "model/version" of the shadow → comparison; carried over when the queue is resized.
        self.comparisons: dict[str, Comparison] = previous.comparisons if previous else {}

    def comparison(self, endpoint: ShadowTarget) -> Comparison:
        key = f"{endpoint.model}/{endpoint.version}"
        found = self.comparisons.get(key)
        if found is None:
            found = self.comparisons[key] = Comparison()
        return found

    def offer(
        self,
        shadows: Sequence[ShadowTarget],
        sample: float,
        feeds: dict[str, np.ndarray],
        names: Sequence[str],
        outputs: Sequence[np.ndarray],
        trace: Any = None,
    ) -> None:
        """Queue a copy for the shadows (sampled); drop and count it when the queue is full."""
        if sample < 1.0 and random.random() >= sample:
            return
        if self._queue is None:
            self._queue = asyncio.Queue(self.max_queue)
            self._task = asyncio.get_running_loop().create_task(self._consume())
        try:
            self._queue.put_nowait(_Copy(shadows, feeds, names, outputs, trace))
        except asyncio.QueueFull:
            for endpoint in shadows:
                self.comparison(endpoint).dropped += 1

    async def _consume(self) -> None:
        assert self._queue is not None
        while True:
            copy = await self._queue.get()
            for endpoint in copy.shadows:
                try:
                    await self._run(endpoint, copy)
                except Exception:  # never let one odd copy stop the consumer
                    self.comparison(endpoint).errors += 1
                    log.warning(
                        "shadow comparison failed for %s/%s",
                        endpoint.model,
                        endpoint.version,
                        exc_info=True,
                    )

    async def _run(self, endpoint: ShadowTarget, copy: _Copy) -> None:
        result = self.comparison(endpoint)
        result.requests += 1
        stats = endpoint.stats.roles["shadow"] if endpoint.stats is not None else None
        trace = None
        if copy.trace is not None:
            trace = copy.trace.shadow(endpoint.model, endpoint.version)
        try:
            outputs, queue_s, infer_s = await endpoint.runner.run(copy.feeds, copy.names, trace)
        except Exception as exc:  # the shadow's failure is its own, never the caller's
            if trace is not None:
                trace.end(error=exc)
            result.errors += 1
            if stats is not None:
                stats.failure(ERROR)
            log.debug("shadow %s/%s failed: %s", endpoint.model, endpoint.version, exc)
            return
        if trace is not None:
            trace.end()
        result.infer.observe(infer_s)
        if stats is not None:
            stats.success(queue_s + infer_s, queue_s, infer_s, len(next(iter(copy.feeds.values()))))
        for name, primary, shadow in zip(copy.names, copy.outputs, outputs, strict=False):
            if primary.shape != shadow.shape or primary.ndim == 0:
                continue
            if primary.dtype.kind != shadow.dtype.kind:  # a changed output type: not comparable
                continue
            result.rows[name] = result.rows.get(name, 0) + len(primary)
            if primary.dtype.kind in "iub":  # predicted classes: rows that differ
                differ = (primary != shadow).reshape(len(primary), -1).any(axis=1)
                result.disagree[name] = result.disagree.get(name, 0) + int(differ.sum())
            elif primary.dtype.kind == "f":
                hist = result.diff.get(name)
                if hist is None:
                    hist = result.diff[name] = Histogram(SHADOW_DIFF_BUCKETS)
                hist.observe_many(np.abs(primary.astype(np.float64) - shadow).ravel())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
