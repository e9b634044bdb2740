"""The ASGI lane: one request handed to the ASGI application as an HTTP cycle (ASGI 3).

``start_cycle`` builds the scope (only here: the fast lane builds none) and runs the
application in a task with ``receive`` (the body as it arrives, then ``http.disconnect``
once the answer is sent or the client has gone or half-closed; ``Expect: 100-continue``
answered at the first read, unless the body is in) and ``send`` (a Content-Length answer as
it is, otherwise chunked; no body for HEAD, 204 or 304; ``connection: close`` when the
request or the server ends the connection, or the answer comes before the body is whole).
An exception before the answer started is answered 500 (JSON); after it, the connection is
closed; the shutdown drain ending while the body arrives is answered 503.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Protocol

from .errors import error_payload
from .exchange import STATUS_LINE, Exchange

log = logging.getLogger("uvicorn.error")

_HEADER_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
_HEADER_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DISCONNECT = {"type": "http.disconnect"}


class CycleConnection(Protocol):
    """What an ASGI cycle needs of its connection: ``connection.HttpConnection`` is one (it
    starts the cycles, so it imports this module, not the other way round)."""

    @property
    def config(self) -> Any: ...  # uvicorn's Config
    @property
    def app(self) -> Any: ...
    @property
    def app_state(self) -> dict[str, Any]: ...
    @property
    def server_state(self) -> Any: ...  # uvicorn's ServerState
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def tasks(self) -> set[asyncio.Task[None]]: ...
    @property
    def transport(self) -> asyncio.Transport: ...
    @property
    def server(self) -> tuple[str, int | None] | None: ...
    @property
    def client(self) -> tuple[str, int | None] | None: ...
    @property
    def scheme(self) -> str: ...
    @property
    def root_path(self) -> str: ...
    @property
    def access_log(self) -> bool: ...
    @property
    def write_paused(self) -> bool: ...
    @property
    def eof(self) -> bool: ...
    @property
    def closing_down(self) -> bool: ...

    def drain_ended(self, ex: Exchange) -> None: ...
    def resume_reading(self) -> None: ...
    async def drain(self) -> None: ...
    def log_access(self, ex: Exchange, status: int) -> None: ...
    def finished(self, ex: Exchange, close: bool) -> None: ...


def start_cycle(conn: CycleConnection, ex: Exchange) -> None:
    """Run the application for ``ex`` in a task (uvicorn's server waits for it at exit)."""
    scope = {
        "type": "http",
        "asgi": {"version": conn.config.asgi_version, "spec_version": "2.3"},
        "http_version": ex.http_version,
        "server": conn.server,
        "client": conn.client,
        "scheme": conn.scheme,
        "method": ex.method,
        "root_path": conn.root_path,
        "path": ex.path,
        "raw_path": ex.raw_path,
        "query_string": ex.query,
        "headers": ex.headers,
        "state": conn.app_state.copy(),
    }
    cycle = Cycle(conn, ex, scope)
    task = conn.loop.create_task(cycle.run(conn.app))
    task.add_done_callback(conn.tasks.discard)
    conn.tasks.add(task)


class Cycle:
    """``receive`` and ``send`` for one request."""

    __slots__ = ("chunked", "conn", "ex", "remaining", "scope")

    def __init__(self, conn: CycleConnection, ex: Exchange, scope: dict[str, Any]) -> None:
        self.conn = conn
        self.ex = ex
        self.scope = scope
        self.chunked = False
        self.remaining = 0  # body bytes a Content-Length answer still owes

    async def run(self, app: Any) -> None:
        ex = self.ex
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            closing = self.conn.closing_down
            if isinstance(exc, asyncio.CancelledError) and closing and not ex.complete:
                self.conn.drain_ended(ex)  # the drain ended with its body still arriving: 503
                raise
            log.error("Exception in ASGI application\n", exc_info=exc)
            if not ex.started:
                await self._send_500(exc)
            else:
                self.conn.transport.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            if result is not None:
                log.error("ASGI callable should return None, but returned %r.", result)
                self.conn.transport.close()
            elif not ex.started and not ex.disconnected:
                log.error("ASGI callable returned without starting response.")
                await self._send_500(None)
            elif not ex.done and not ex.disconnected:
                log.error("ASGI callable returned without completing response.")
                self.conn.transport.close()

    async def _send_500(self, exc: BaseException | None) -> None:
        status, body, _ = error_payload(exc if exc is not None else RuntimeError())
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
        ]
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    async def receive(self) -> dict[str, Any]:
        ex, conn = self.ex, self.conn
        if ex.expect_continue:
            ex.expect_continue = False
            if not (ex.started or ex.complete or conn.transport.is_closing()):
                conn.transport.write(_CONTINUE)
        while not (ex.disconnected or ex.done) and (ex.asgi_done or not (ex.chunks or ex.complete)):
            if ex.asgi_done and conn.eof:
                break  # the client half-closed: its answer is still sent if one comes
            conn.resume_reading()
            if ex.waiter is None:
                ex.waiter = asyncio.Event()
            await ex.waiter.wait()
            ex.waiter.clear()
        if ex.disconnected or ex.done or ex.asgi_done:
            return _DISCONNECT
        chunks = ex.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        ex.chunks = []
        ex.size = 0  # what is buffered (flow control)
        if ex.complete:
            ex.asgi_done = True
        conn.resume_reading()
        return {"type": "http.request", "body": body, "more_body": not ex.complete}

    async def send(self, message: dict[str, Any]) -> None:
        ex, conn = self.ex, self.conn
        if conn.write_paused and not ex.disconnected:
            await conn.drain()
        if ex.disconnected:
            return
        kind = message["type"]
        if not ex.started:
            if kind != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got {kind!r}."
                )
            self._start(message)
        elif not ex.done:
            if kind != "http.response.body":
                raise RuntimeError(f"Expected 'http.response.body', but got {kind!r}.")
            self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(f"Unexpected ASGI message {kind!r} sent, after response completed.")

    def _start(self, message: dict[str, Any]) -> None:
        ex, conn = self.ex, self.conn
        ex.started = True
        ex.expect_continue = False
        if not ex.complete:  # answered before its body is whole: the connection ends
            ex.keep_alive = False
        status = message["status"]
        content = [STATUS_LINE[status]]
        length: int | None = None
        chunked = False
        said_close = False
        for name, value in (*conn.server_state.default_headers, *message.get("headers", ())):
            if _HEADER_NAME.search(name):
                raise RuntimeError("Invalid HTTP header name.")
            if _HEADER_VALUE.search(value):
                raise RuntimeError("Invalid HTTP header value.")
            name = name.lower()
            if name == b"content-length" and length is None and not chunked:
                length = int(value.decode())
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                chunked = True
            elif name == b"connection" and b"close" in [
                token.lower().strip() for token in value.split(b",")
            ]:
                ex.keep_alive = False
                said_close = True
            content += (name, b": ", value, b"\r\n")
        if not ex.keep_alive and not said_close:
            content.append(b"connection: close\r\n")
        if length is None and not chunked and ex.method != "HEAD" and status not in (204, 304):
            chunked = True  # neither a length nor an encoding: chunks
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        self.chunked = chunked
        self.remaining = length or 0
        conn.transport.write(b"".join(content))
        if conn.access_log:
            conn.log_access(ex, status)

    def _body(self, body: bytes, more_body: bool) -> None:
        ex, conn = self.ex, self.conn
        if ex.method == "HEAD":
            self.remaining = 0
        elif self.chunked:
            content = [b"%x\r\n" % len(body), body, b"\r\n"] if body else []
            if not more_body:
                content.append(b"0\r\n\r\n")
            conn.transport.write(b"".join(content))
        else:
            if len(body) > self.remaining:
                raise RuntimeError("Response content longer than Content-Length")
            self.remaining -= len(body)
            if body:
                conn.transport.write(body)
        if not more_body:
            if self.remaining != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            conn.finished(ex, not ex.keep_alive)
