"""One request on a connection and the state of its answer, shared by both lanes."""

from __future__ import annotations

import asyncio
import http
from typing import Any


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINE = {status: _status_line(status) for status in range(100, 600)}


class Exchange:
    """One request on a connection and the state of its answer."""

    __slots__ = (
        "asgi_done",
        "body_started",
        "buffer",
        "chunks",
        "complete",
        "disconnected",
        "done",
        "early",
        "expect_continue",
        "fast",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "query",
        "raw_path",
        "request",
        "size",
        "started",
        "waiter",
    )

    def __init__(
        self,
        method: str,
        path: str,
        raw_path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        http_version: str,
        keep_alive: bool,
        expect_continue: bool,
        fast: bool,
    ) -> None:
        self.method = method
        self.path = path
        self.raw_path = raw_path
        self.query = query
        self.headers = headers
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.fast = fast
        self.chunks: list[bytes] = []  # body bytes not yet taken (ASGI) or not yet joined
        self.size = 0  # body bytes received
        # A fast-lane body in several reads, grown in place: each read copies only its own
        # bytes, and a large buffer grows by remapping its pages, not by copying them (a
        # buffer sized up front would be zeroed whole on the loop, a join copied whole).
        self.buffer: bytearray | None = None
        self.complete = False  # the whole request (body included) has arrived
        self.started = False  # the answer's head was written
        self.done = False  # the answer was written whole
        self.disconnected = False
        self.request: Any = None  # the infer core's checked head (fast lane)
        self.body_started: float | None = None  # a fast-lane body's timer (the sweep's)
        self.waiter: asyncio.Event | None = None  # an ASGI reader waiting for body bytes
        self.asgi_done = False  # the ASGI reader had the last body message
        # A fast-lane answer given at the head while its body was in the same read: written
        # once the body is in, or with "connection: close" if the read ended without it.
        self.early: Any = None

    def body(self) -> bytes | bytearray:
        """The whole body, without a copy for the fast lane."""
        if self.buffer is not None:
            return self.buffer
        chunks = self.chunks
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    def wake(self) -> None:
        if self.waiter is not None:
            self.waiter.set()
