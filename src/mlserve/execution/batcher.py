"""Dynamic batching for one loaded version.

Concurrent requests queue here; a batch is cut when the queued rows reach
``max_batch_size`` or the oldest request has waited ``max_delay_us``. One session run
serves the batch and each caller gets exactly its own rows back. Requests are
validated before they queue, so a bad request never enters a batch; if the
runtime still fails on a batch, each request is rerun alone so only the culprit
fails. A full queue answers 503; a request past ``timeout_ms`` in the queue, 504; a
batch run past ``[execution] run_timeout_s`` is stopped and its requests answered 504
(not rerun alone: each would run as long).
Batches run inline on the event loop for fast models, else on the thread pool,
one at a time per version (requests arriving meanwhile form the next batch).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..config import BatchingConfig
from ..errors import MLServeError, Overloaded, QueueTimeout, RunTimeout, ServerNotReady
from ..monitoring.request_stats import BATCH_BUCKETS, Histogram
from ..runtime.session import ModelSession
from .base import Outputs

if TYPE_CHECKING:
    from ..tracing.spans import RequestTrace


@dataclass(eq=False)
class _Item:
    feeds: dict[str, np.ndarray]
    rows: int
    output_names: Sequence[str] | None
    future: asyncio.Future[tuple[Outputs, float, float]]
    enqueued: float
    expiry: asyncio.TimerHandle | None = field(default=None)
    trace: RequestTrace | None = field(default=None)


class Batcher:
    """Gathers requests for one version and runs them together."""

    kind = "batch"

    def __init__(self, session: ModelSession, config: BatchingConfig, executor: Executor) -> None:
        self.session = session
        self.max_batch = config.max_batch_size
        self.delay = config.max_delay_us / 1e6
        self.max_queue = config.max_queue
        self.timeout = config.timeout_ms / 1e3
        self.inline = session.inline
        self._executor = executor
        self._index = {name: i for i, name in enumerate(session.output_names)}
        self._queue: deque[_Item] = deque()
        self._rows = 0
        self._timer: asyncio.Handle | None = None
        self._busy = False
        self._traced = False  # a traced request has come: batches make spans
        self.batches = 0  # batches run, for tests and metrics
        self.sizes = Histogram(BATCH_BUCKETS)  # rows per batch, exported as mlserve_batch_size

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def run(
        self,
        feeds: dict[str, np.ndarray],
        output_names: Sequence[str] | None,
        trace: RequestTrace | None = None,
    ) -> tuple[Outputs, float, float]:
        rows = _rows(feeds)
        if rows is None:  # inputs disagree on the first dimension: not batchable, run alone
            start = time.perf_counter()
            outputs = self.session.run(feeds, output_names)
            return outputs, 0.0, time.perf_counter() - start
        if len(self._queue) >= self.max_queue:
            raise Overloaded(f"batch queue is full ({self.max_queue} requests); retry later")
        loop = asyncio.get_running_loop()
        item = _Item(feeds, rows, output_names, loop.create_future(), time.perf_counter())
        if trace is not None:
            item.trace = trace
            self._traced = True
        if self.timeout:
            item.expiry = loop.call_later(self.timeout, self._expire, item)
        self._queue.append(item)
        self._rows += rows
        if not self._busy:
            if self._rows >= self.max_batch:
                self._cancel_timer()
                self._flush()
            elif self._timer is None:
                self._timer = loop.call_later(self.delay, self._flush)
        return await item.future

    # ------------------------------------------------------------------ internals
    def _expire(self, item: _Item) -> None:
        if not item.future.done():
            item.future.set_exception(
                QueueTimeout(f"request waited over {self.timeout * 1e3:g} ms in the batch queue")
            )

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        rows = 0
        while self._queue:
            item = self._queue[0]
            if batch and rows + item.rows > self.max_batch:
                break
            self._queue.popleft()
            self._rows -= item.rows
            if item.expiry is not None:
                item.expiry.cancel()
            if item.future.done():  # expired or the caller went away
                continue
            batch.append(item)
            rows += item.rows
        return batch

    def _flush(self) -> None:
        self._timer = None
        if self._busy:
            return
        batch = self._take()
        if not batch:
            return
        self.batches += 1
        self.sizes.observe(sum(it.rows for it in batch))
        started = time.perf_counter()
        if self.inline:
            self._deliver(batch, started, self._compute(batch))
            self._reschedule()
            return
        self._busy = True
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._executor, self._compute, batch)

        def finished(fut: asyncio.Future[list[Outputs | BaseException]]) -> None:
            self._busy = False
            results = fut.result() if not fut.cancelled() else []
            self._deliver(batch, started, results)
            self._reschedule()

        done.add_done_callback(finished)

    def _compute(self, batch: list[_Item]) -> list[Outputs | BaseException]:
        """Run the batch once; on failure rerun each request alone. Thread-safe, no asyncio."""
        if len(batch) == 1:
            return [self._one(batch[0])]
        names = batch[0].feeds.keys()
        try:
            feeds = {n: np.concatenate([it.feeds[n] for it in batch]) for n in names}
            outputs = self.session.run_bounded(feeds)
        except (RunTimeout, ServerNotReady) as exc:
            return [exc] * len(batch)
        except (MLServeError, ValueError):  # ValueError: free non-batch dimensions differ
            return [self._one(it) for it in batch]
        total = sum(it.rows for it in batch)
        if any(o.ndim == 0 or o.shape[0] != total for o in outputs):
            return [self._one(it) for it in batch]  # the model does not keep rows apart
        results: list[Outputs | BaseException] = []
        offset = 0
        for it in batch:
            end = offset + it.rows
            if it.output_names:
                results.append([outputs[self._index[n]][offset:end] for n in it.output_names])
            else:
                results.append([o[offset:end] for o in outputs])
            offset = end
        return results

    def _one(self, item: _Item) -> Outputs | BaseException:
        try:
            return self.session.run_bounded(item.feeds, item.output_names)
        except MLServeError as exc:
            return exc

    def _deliver(
        self, batch: list[_Item], started: float, results: list[Outputs | BaseException]
    ) -> None:
        infer_s = time.perf_counter() - started
        for item, result in zip(batch, results, strict=False):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result((result, started - item.enqueued, infer_s))
        for item in batch[len(results) :]:
            if not item.future.done():
                item.future.set_exception(Overloaded("the batch was cancelled; retry"))
        if self._traced:
            self._trace(batch, started, results)

    def _trace(
        self, batch: list[_Item], started: float, results: list[Outputs | BaseException]
    ) -> None:
        """The batch's spans, when requests in it are traced."""
        traces = [it.trace for it in batch if it.trace is not None]
        if not traces:
            return
        traces[0].tracing.batch(
            traces,
            self.session.model,
            str(self.session.version),
            len(batch),
            sum(it.rows for it in batch),
            [it.enqueued for it in batch if it.trace is not None],
            started,
            [r for r in results if isinstance(r, BaseException)],
        )

    def _reschedule(self) -> None:
        if not self._queue or self._timer is not None:
            return
        waited = time.perf_counter() - self._queue[0].enqueued
        loop = asyncio.get_running_loop()
        if self._rows >= self.max_batch or waited >= self.delay:
            self._timer = loop.call_soon(self._flush)
        else:
            self._timer = loop.call_later(self.delay - waited, self._flush)


def _rows(feeds: dict[str, np.ndarray]) -> int | None:
    rows = None
    for array in feeds.values():
        if rows is None:
            rows = array.shape[0]
        elif array.shape[0] != rows:
            return None
    return rows
