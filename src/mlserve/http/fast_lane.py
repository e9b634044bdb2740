"""The fast lane: infer requests answered by the connection itself, without the ASGI cycle.

For ``POST /v2/models/{m}[/versions/{v}]/infer`` (a plain path: no query, no escapes) the
connection (``connection.py``) keeps only the headers the infer core reads (``HEADERS``),
builds no ASGI scope, and calls the core (``InferHandler``: the very same head check, run
and accounting as the ASGI lane) in three steps: ``head`` when the request's turn comes,
``run`` once the whole body is in (scheduled with ``call_soon`` after the read that
completed it, so that the loop reads every ready connection before it answers any), and
``finish`` after the one write of the answer. A model that runs inline answers with no task
at all; one that waits (thread pool, batcher) continues in a task from where it stopped. A
body still arriving is collected by the connection (one buffer grown in place, never
joined) under the body timeout, which the connection sweep checks (``timers.py``).
The lanes' answers are identical (``tests/test_fast_lane.py`` compares them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any, Protocol

from ..errors import PayloadTooLarge
from .exchange import Exchange
from .infer import InferHandler, Reply, error_reply

# What InferHandler.head reads (and, with tracing on, the W3C trace context); the fast lane
# keeps no other header.
HEADERS = frozenset(
    {
        b"content-encoding",
        b"content-length",
        b"inference-header-content-length",
        b"mlserve-routing-key",
        b"traceparent",
        b"tracestate",
    }
)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def find_infer(app: Any) -> InferHandler | None:
    """The application's infer core, through uvicorn's wrappers (None: not an mlserve app)."""
    for _ in range(8):
        infer = getattr(app, "infer", None)
        if isinstance(infer, InferHandler):
            return infer
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def too_large(infer: InferHandler) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is over the limit of {infer.max_body} bytes")


class LaneConnection(Protocol):
    """What the fast lane needs of its connection: ``connection.HttpConnection`` is one (it
    hands requests to the lane, so it imports this module, not the other way round)."""

    # A fast answer waiting for the client to read (written by ``answer``).
    blocked: Exchange | None

    @property
    def infer(self) -> InferHandler | None: ...
    @property
    def feeding(self) -> bool: ...  # inside the parser's feed_data
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def tasks(self) -> set[asyncio.Task[None]]: ...
    @property
    def transport(self) -> asyncio.Transport: ...
    @property
    def write_paused(self) -> bool: ...

    def answer(self, ex: Exchange, reply: Reply) -> None: ...
    def resume_reading(self) -> None: ...
    async def drain(self) -> None: ...


def start(conn: LaneConnection, ex: Exchange) -> None:
    """``ex``'s turn: check its head; answer it, or read its body (answered when whole)."""
    infer = conn.infer
    assert infer is not None
    head = infer.head(ex.method, ex.path, ex.headers)
    if isinstance(head, Reply):
        if ex.complete or not conn.feeding:
            conn.answer(ex, head)
        else:  # its body may be in this read: answered once it is (else closed)
            ex.early = head
        return
    ex.request = head
    if ex.complete:
        conn.loop.call_soon(answer, conn, ex)
        return
    ex.body_started = head.start
    if ex.expect_continue and not conn.feeding and not conn.transport.is_closing():
        ex.expect_continue = False  # (in a read: sent at its end if the body is not in it)
        conn.transport.write(CONTINUE)
    conn.resume_reading()


def answer(conn: LaneConnection, ex: Exchange) -> None:
    """Run ``ex`` (its whole body is in) and write the answer, or continue in a task."""
    infer = conn.infer
    assert infer is not None
    if ex.done or ex.disconnected or conn.transport.is_closing():
        return  # answered "close" to an earlier request in this read, or the client left
    if conn.write_paused:  # a client not reading its answers: wait for it (resume_writing)
        conn.blocked = ex
        return
    body = ex.body()
    ex.chunks = []
    ex.buffer = None
    if len(body) > infer.max_body:  # no (or a false) Content-Length: the ASGI lane's rule
        conn.answer(ex, infer.refused(ex.request, too_large(infer)))
        return
    run = infer.run(ex.request, body)
    try:
        waiting = run.send(None)
    except StopIteration as done:  # answered without waiting: no task
        reply: Reply = done.value
        conn.answer(ex, reply)
        infer.finish(reply)
        return
    except BaseException as exc:  # a bug below the core's own error handling
        conn.answer(ex, error_reply(exc))
        return
    task = conn.loop.create_task(_resume(conn, ex, run, waiting, infer))
    task.add_done_callback(conn.tasks.discard)
    conn.tasks.add(task)


class _Continue:
    """Awaits the rest of a coroutine already started by hand (its first wait pending)."""

    __slots__ = ("coro", "waiting")

    def __init__(self, coro: Coroutine[Any, Any, Reply], waiting: Any) -> None:
        self.coro = coro
        self.waiting = waiting

    def __await__(self) -> Generator[Any, Any, Reply]:
        coro, value = self.coro, self.waiting
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # cancellation, or an error thrown in: pass it on
                try:
                    value = coro.throw(exc)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]


async def _resume(
    conn: LaneConnection,
    ex: Exchange,
    run: Coroutine[Any, Any, Reply],
    waiting: Any,
    infer: InferHandler,
) -> None:
    try:
        reply = await _Continue(run, waiting)
    except Exception as exc:  # a bug below the core's own error handling
        reply = error_reply(exc)
    if conn.write_paused and not ex.disconnected:
        await conn.drain()
    conn.answer(ex, reply)
    infer.finish(reply)
