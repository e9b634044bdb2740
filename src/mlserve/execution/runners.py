"""Runners: the one object per loaded version that the request path awaits.

The kind is chosen once, at load (``choose_runner``): a batcher when batching is on
and the model has a batch dimension everywhere, else inline on the event loop for
fast models, else a thread. Each ``run`` returns the outputs and the seconds spent
queued and running, for ``Server-Timing``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING

import numpy as np

from ..config import BatchingConfig
from ..errors import Overloaded
from ..runtime.session import ModelSession
from .base import Outputs, Runner
from .batcher import Batcher

if TYPE_CHECKING:
    from ..tracing.spans import RequestTrace


class InlineRunner:
    """Calls onnxruntime directly on the event loop: for models of a few microseconds. No
    run deadline: a runaway inline run holds the loop (untrusted graphs: ``mode = thread``)."""

    kind = "inline"

    def __init__(self, session: ModelSession) -> None:
        self._run = session.run

    async def run(
        self,
        feeds: dict[str, np.ndarray],
        output_names: Sequence[str] | None,
        trace: RequestTrace | None = None,
    ) -> tuple[Outputs, float, float]:
        if trace is not None:
            return await trace.around(self, feeds, output_names)
        start = time.perf_counter()
        outputs = self._run(feeds, output_names)
        return outputs, 0.0, time.perf_counter() - start


class ThreadRunner:
    """Runs on the inference thread pool; at most ``max_queue`` requests wait or run, each
    run stopped at ``[execution] run_timeout_s`` (504 ``run_timeout``)."""

    kind = "thread"

    def __init__(self, session: ModelSession, executor: Executor, max_queue: int) -> None:
        self._run = session.run_bounded  # a runaway run must not keep its thread for good
        self._executor = executor
        self._max_queue = max_queue
        self.pending = 0

    def _timed(
        self, feeds: dict[str, np.ndarray], output_names: Sequence[str] | None
    ) -> tuple[Outputs, float, float]:
        start = time.perf_counter()
        outputs = self._run(feeds, output_names)
        return outputs, start, time.perf_counter() - start

    async def run(
        self,
        feeds: dict[str, np.ndarray],
        output_names: Sequence[str] | None,
        trace: RequestTrace | None = None,
    ) -> tuple[Outputs, float, float]:
        if trace is not None:
            return await trace.around(self, feeds, output_names)
        if self.pending >= self._max_queue:
            raise Overloaded(f"too many requests waiting ({self.pending}); retry later")
        self.pending += 1
        queued = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()
            outputs, started, infer_s = await loop.run_in_executor(
                self._executor, self._timed, feeds, output_names
            )
        finally:
            self.pending -= 1
        return outputs, started - queued, infer_s


def batching_blocker(session: ModelSession) -> str | None:
    """Why this model cannot be batched (no free first dimension somewhere), or ``None``."""
    for spec in (*session.inputs, *session.outputs):
        if not spec.shape or spec.shape[0] != -1:
            return f"{spec.name!r} has no free batch dimension (shape {spec.shape_text()})"
    return None


def choose_runner(session: ModelSession, batching: BatchingConfig, executor: Executor) -> Runner:
    """Decide once, at load, how this version is called."""
    if batching.max_batch_size > 1:
        blocker = batching_blocker(session)
        if blocker is None:
            return Batcher(session, batching, executor)
        session.notes.append(f"batching disabled: {blocker}")
    if session.inline:
        return InlineRunner(session)
    return ThreadRunner(session, executor, batching.max_queue)
