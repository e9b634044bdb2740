"""The fast lane: infer requests answered from the HTTP protocol, without the ASGI cycle.

uvicorn hands every request to the application as an ASGI cycle: a task, a ``receive`` and
two ``send`` calls that check and copy every header. For ``POST
/v2/models/{m}[/versions/{v}]/infer`` whose whole request (head and body) arrives in one
read — nearly every request of a client that keeps its connection open — this protocol
calls the infer core (``InferHandler``: the very same head check, run and accounting as the
ASGI lane) and writes the answer in one ``transport.write``. The answer is computed in a
callback scheduled when the request is complete (``call_soon``), not inside the parser's own
callback: the loop then reads every ready connection before it answers any, as it does for
the ASGI lane's tasks; answering inside the read callback was measured 10–20 % slower at 64
connections than the ASGI lane itself (benchmarks/RESULTS.md). A model that runs inline
answers with no task at all; one that waits (thread pool, batcher) continues in a task from
where it stopped.

Everything else takes the ASGI lane, unchanged: other routes; a body still arriving when the
read ends (its wait needs the body timeout's task); ``Expect: 100-continue``; a request
pipelined behind one in flight; a server over its concurrency limit. The lanes' answers are
identical (``tests/test_fast_lane.py`` compares them response for response).
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from ..errors import PayloadTooLarge
from .head_timeout import TimedHeadProtocol
from .infer import INFER_PREFIX, INFER_SUFFIX, InferHandler, Reply, error_reply

_CONNECTION_CLOSE = b"connection: close\r\n"


class FastLaneProtocol(TimedHeadProtocol):
    """``TimedHeadProtocol`` that answers whole infer requests itself (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._infer = _find_infer(self.app)
        self._in_head_complete = False
        self._held: Any = None  # an infer cycle whose body is still in this read

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if (
            self._in_head_complete
            and app is self.app
            and self._infer is not None
            and not cycle.waiting_for_100_continue
            and not self.flow.write_paused  # a client not reading: the ASGI lane waits
        ):
            scope = cycle.scope
            path = scope["path"]
            if (
                scope["method"] == "POST"
                and path.endswith(INFER_SUFFIX)
                and path.startswith(INFER_PREFIX)
            ):
                self._held = cycle  # answered at message complete if the body is in this read
                return
        super()._start_asgi_task(cycle, app)

    def on_headers_complete(self) -> None:
        self._in_head_complete = True
        try:
            super().on_headers_complete()
        finally:
            self._in_head_complete = False

    def on_message_complete(self) -> None:
        super().on_message_complete()
        cycle = self._held
        if cycle is not None and cycle is self.cycle:
            self._held = None
            self.loop.call_soon(self._answer, cycle)  # after this iteration's reads

    def on_response_complete(self) -> None:
        # Several answers inside one read would each arm uvicorn's keep-alive timer, which
        # cancels only the last one at the next read: cancel the previous one first.
        self._unset_keepalive_if_required()
        super().on_response_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        cycle = self._held
        if cycle is not None:  # its body goes on in later reads: the ASGI lane reads it
            self._held = None
            if not cycle.response_complete and not self.transport.is_closing():
                super()._start_asgi_task(cycle, self.app)

    # ------------------------------------------------------------------ answering
    def _answer(self, cycle: Any) -> None:
        infer = self._infer
        assert infer is not None
        if self.transport.is_closing():  # answered "close" to an earlier request in this read
            return
        scope = cycle.scope
        head = infer.head(scope["method"], scope["path"], scope["headers"])
        if isinstance(head, Reply):
            _write(cycle, head)
            return
        body = bytes(cycle.body)
        if len(body) > infer.max_body:  # no (or a false) Content-Length: the ASGI lane's rule
            _write(cycle, infer.refused(head, _too_large(infer)))
            return
        cycle.body = bytearray()
        run = infer.run(head, body)
        try:
            waiting = run.send(None)
        except StopIteration as done:  # answered without waiting: no task
            reply: Reply = done.value
            _write(cycle, reply)
            infer.finish(reply)
            return
        except BaseException as exc:  # a bug below the core's own error handling
            _write(cycle, error_reply(exc))
            return
        task = self.loop.create_task(_resume(run, waiting, cycle, infer))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)


def _find_infer(app: Any) -> InferHandler | None:
    """The application's infer core, through uvicorn's wrappers (None: not an mlserve app)."""
    for _ in range(8):
        infer = getattr(app, "infer", None)
        if isinstance(infer, InferHandler):
            return infer
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def _too_large(infer: InferHandler) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is over the limit of {infer.max_body} bytes")


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
    run: Coroutine[Any, Any, Reply], waiting: Any, cycle: Any, infer: InferHandler
) -> None:
    try:
        reply = await _Continue(run, waiting)
    except Exception as exc:  # a bug below the core's own error handling
        reply = error_reply(exc)
    if cycle.flow.write_paused and not cycle.disconnected:
        await cycle.flow.drain()
    _write(cycle, reply)
    infer.finish(reply)


def _write(cycle: Any, reply: Reply) -> None:
    """The answer in one write, as uvicorn's ``send`` would frame it; then uvicorn's own
    end-of-response steps (keep-alive or close, the next pipelined request)."""
    if cycle.disconnected:
        return
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    content = [STATUS_LINE[reply.status]]
    for name, value in cycle.default_headers:
        content += (name, b": ", value, b"\r\n")
    said_close = False
    for name, value in reply.headers:
        if name == b"connection":  # only the core's "close" (after a 408)
            cycle.keep_alive = False
            said_close = True
        content += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive and not said_close:
        content.append(_CONNECTION_CLOSE)
    content += (b"\r\n", reply.body)
    cycle.transport.write(b"".join(content))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
