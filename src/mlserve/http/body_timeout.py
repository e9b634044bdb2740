"""The ASGI lane's request-body timeout: a body that has not fully arrived in time gets 408.

``BodyDeadlines`` times the body reads of the ASGI lane (the infer handler's, and Starlette
routes' through ``guard``) with one sweep a tick and turns an expired one into
``RequestTimeout``. The fast lane's body timeout is swept in ``timers.py`` (with this
``timeout`` and the same ``late`` error).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from ..errors import RequestTimeout

Receive = Callable[[], Awaitable[dict[str, Any]]]


# One sweep a tick over the requests that are waiting for body bytes, instead of a timer per
# request: entering a read costs a dict insert and leaving it a dict pop (no
# ``asyncio.wait_for``, no timer handle), so the infer hot path stays lean. The deadline counts
# from the request's start (its head complete), so a body dribbled one byte at a time is cut
# off as surely as one that never comes. An expired read is cancelled; the reader turns that
# cancellation, and only that one, into ``RequestTimeout``.
class BodyDeadlines:
    """Reads in progress (task → start, ``perf_counter`` seconds) and their sweeper."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.reading: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        # Precision: a tick a twentieth of the timeout, between 20 ms and 1 s.
        self.tick = min(max(timeout / 20, 0.02), 1.0)

    def start(self) -> None:
        """Start sweeping on the running loop (the application's lifespan does this)."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            self.sweep(perf_counter())

    def sweep(self, now: float) -> int:
        """Cancel the reads that started ``timeout`` or more before ``now``; how many."""
        limit = now - self.timeout
        late = [task for task, start in self.reading.items() if start <= limit]
        for task in late:
            del self.reading[task]
            self._expired.add(task)
            task.cancel()
        return len(late)

    def expired(self, task: asyncio.Task[Any]) -> RequestTimeout | None:
        """After a ``CancelledError`` in a read: the error to answer when this timeout caused
        it (the cancellation is then absorbed), else ``None`` (a real cancellation)."""
        if task not in self._expired:
            return None
        self._expired.discard(task)
        task.uncancel()
        return self.late()

    def late(self) -> RequestTimeout:
        """The error for a body that did not arrive in time (both lanes answer it)."""
        return RequestTimeout(
            f"the request body did not arrive within {self.timeout:g} s (--body-timeout-seconds)"
        )

    def guard(self, receive: Receive, start: float) -> Receive:
        """``receive`` for a route that reads its body through a framework (Starlette): timed
        until the body is complete, then passed through (later messages, such as a
        disconnect awaited by an event stream, are not timed)."""
        complete = False

        async def timed_receive() -> dict[str, Any]:
            nonlocal complete
            if complete:
                return await receive()
            task = asyncio.current_task()
            assert task is not None
            self.reading[task] = start
            try:
                message = await receive()
            except asyncio.CancelledError:
                error = self.expired(task)
                if error is None:
                    raise
                raise error from None
            finally:
                self.reading.pop(task, None)
            if not message.get("more_body", False):
                complete = True
            return message

        return timed_receive
