"""A timeout on request heads, on top of the head size limits (``protocol.py``).

uvicorn 0.x times out idle keep-alive connections (``timeout_keep_alive``, 5 s) but not a
connection that never sends a request, nor a request head that arrives a byte at a time
(slowloris): each holds a connection and its buffers for ever. Here a request head (from
the connection's start, or from the first byte of a later request on it) must be complete
within ``MLSERVE_BODY_TIMEOUT_SECONDS``, else the connection is closed (no application has
the request yet; like nginx's ``client_header_timeout``, nothing is answered). As for
bodies (``body_timeout.py``), one sweep a tick checks every connection instead of a timer
per request: the request path only sets an attribute when a head starts and when it ends.

After a response, any byte cancels uvicorn's keep-alive timer, which is armed again only
when another response completes; bytes that start no request (blank lines, which llhttp
skips, or the unread rest of a body the application answered early) would then hold the
connection for ever. So the timer starts at the first byte received after a response, not
only when the parser sees a message begin. While a response is being computed the
connection is left alone (a pipelined head behind it waits for it, through no fault of the
client's); the timer restarts when the response completes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from time import perf_counter
from typing import Any

from .protocol import LimitedHttpToolsProtocol

log = logging.getLogger("mlserve.http")


def head_timeout() -> float:
    """The timeout from the environment (the server exports its settings to every worker)."""
    try:
        return float(os.environ.get("MLSERVE_BODY_TIMEOUT_SECONDS", "") or 30.0)
    except ValueError:
        return 30.0


class TimedHeadProtocol(LimitedHttpToolsProtocol):
    """The limited httptools protocol whose request heads must arrive within the timeout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_started: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_started = perf_counter()
        state: Any = self.server_state
        if getattr(state, "mlserve_head_sweeper", None) is None:
            state.mlserve_head_sweeper = self.loop.create_task(
                _sweep(self.connections, head_timeout())
            )

    def data_received(self, data: bytes) -> None:
        if self.head_started is None and (self.cycle is None or self.cycle.response_complete):
            # No request in flight: these bytes must lead to a complete head in time.
            self.head_started = perf_counter()
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.head_started is None:
            self.head_started = perf_counter()

    def on_headers_complete(self) -> None:
        self.head_started = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.head_started is not None:
            # A head begun while the response was computed: its time starts now.
            self.head_started = perf_counter()

    def head_timed_out(self) -> None:
        self.head_started = None
        if not self.transport.is_closing():
            log.info("closed a connection whose request head did not arrive in time")
            self.transport.close()


async def _sweep(connections: set[Any], timeout: float) -> None:
    tick = min(max(timeout / 20, 0.02), 1.0)
    while True:
        await asyncio.sleep(tick)
        limit = perf_counter() - timeout
        for protocol in list(connections):
            started = getattr(protocol, "head_started", None)
            if started is None or started > limit:
                continue
            cycle = getattr(protocol, "cycle", None)
            if cycle is not None and not cycle.response_complete:
                continue  # a response is being computed; the timer restarts after it
            protocol.head_timed_out()
