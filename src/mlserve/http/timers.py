"""Connection timeouts, checked by one sweep a tick instead of a timer per request.

Per server process: the request-head timeout (``MLSERVE_BODY_TIMEOUT_SECONDS``; a head, from
the connection's start or the first byte after an answer, must be whole in time, else the
connection is closed unanswered, like nginx's ``client_header_timeout``), uvicorn's
``timeout_keep_alive`` for idle connections, and the fast lane's body timeout (the infer
core's). The request path only sets an attribute when a timer starts or stops; the sweep
asks each connection to check its own (``HttpConnection.check_timers``).
"""

from __future__ import annotations

import asyncio
import os
from time import perf_counter
from typing import Any

from .fast_lane import find_infer
from .infer import InferHandler


def head_timeout() -> float:
    """The timeout from the environment (the server exports its settings to every worker)."""
    try:
        return float(os.environ.get("MLSERVE_BODY_TIMEOUT_SECONDS", "") or 30.0)
    except ValueError:
        return 30.0


class ServerTimers:
    """The timeouts of one server (``of``: one per uvicorn ``ServerState``) and its sweep."""

    def __init__(self, config: Any) -> None:
        self.head_timeout = head_timeout()
        self.keep_alive = float(config.timeout_keep_alive)
        self.infer: InferHandler | None = find_infer(config.loaded_app)
        shortest = min(self.head_timeout, self.keep_alive)
        if self.infer is not None:
            shortest = min(shortest, self.infer.deadlines.timeout)
        # Precision: a twentieth of the shortest timeout, between 20 ms and 1 s.
        self.tick = min(max(shortest / 20, 0.02), 1.0)
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, config: Any, server_state: Any) -> ServerTimers:
        timers: ServerTimers | None = getattr(server_state, "mlserve_timers", None)
        if timers is None:
            timers = cls(config)
            server_state.mlserve_timers = timers
        return timers

    def start(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        """Sweep ``connections`` on ``loop`` (once; called at each new connection)."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep(connections))

    async def _sweep(self, connections: set[Any]) -> None:
        while True:
            await asyncio.sleep(self.tick)
            now = perf_counter()
            for connection in list(connections):
                check = getattr(connection, "check_timers", None)
                if check is not None:
                    check(now)
