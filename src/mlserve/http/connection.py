"""The HTTP/1.1 connection: mlserve's own asyncio protocol on httptools (llhttp).

One ``HttpConnection`` per client connection parses requests, bounds their heads (431 and
414 beyond ``max_header_bytes`` or ``MAX_HEADERS``; 400 for what llhttp cannot read, all as
JSON), answers them in order (pipelining), keeps the connection alive or closes it, and
applies flow control both ways (nothing more is read while requests wait their turn or the
client does not read its answers). Each request goes one of two ways, decided at its head: the
infer routes to the fast lane (``fast_lane.py``: the infer core, no ASGI scope, one write),
everything else to the ASGI application (``asgi.py``). Timeouts (head, keep-alive, a fast-lane
body) are checked by one sweep a tick over the connections (``timers.py``).

uvicorn still runs the server (sockets, workers, signals, lifespan, graceful shutdown): it
constructs this class as ``cls(config=..., server_state=..., app_state=..., _loop=...)`` and
uses only ``server_state`` (connections, tasks, total_requests, default_headers) and
``shutdown()``; no private name of uvicorn's is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from time import perf_counter
from typing import Any, ClassVar
from urllib.parse import unquote

import httptools

from ..errors import (
    HeadersTooLarge,
    HttpVersionNotSupported,
    InvalidHttp,
    MLServeError,
    Overloaded,
    ServerNotReady,
    UriTooLong,
)
from . import fast_lane
from .asgi import start_cycle
from .errors import error_payload
from .exchange import STATUS_LINE, Exchange
from .infer import Reply
from .timers import ServerTimers

log = logging.getLogger("uvicorn.error")  # where uvicorn's own protocol logs: same handlers
access_log = logging.getLogger("uvicorn.access")

DEFAULT_MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 256
_VERSIONS = frozenset(("1.1", "1.0"))
# An ASGI request's body buffered beyond this stops reading until the application reads it.
HIGH_WATER = 64 * 1024
# The error code of each status the connection answers itself (declared in openapi.py).
_CONNECTION_CLOSE = b"connection: close\r\n"


class HeadRefused(Exception):
    """Raised in a parser callback to stop parsing; answered with ``error``."""

    def __init__(self, error: MLServeError) -> None:
        super().__init__(error.message)
        self.error = error


class HttpConnection(asyncio.Protocol):
    """One client connection (see the module doc). ``fast_lane``: whether infer requests are
    answered by the fast lane (``AsgiConnection`` sends everything to the application)."""

    fast_lane: ClassVar[bool] = True

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any] | None = None,
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks
        self.app_state = app_state if app_state is not None else {}
        self.timers = ServerTimers.of(config, server_state)
        self.infer = self.timers.infer if self.fast_lane else None
        self.max_head_bytes: int = config.h11_max_incomplete_event_size or (
            DEFAULT_MAX_HEADER_BYTES
        )
        self.root_path: str = config.root_path or ""
        self.access_log = access_log.hasHandlers()
        self.parser = httptools.HttpRequestParser(self)
        # Answer a request followed by bytes after its "connection: close" (httptools 0.6.3+).
        with contextlib.suppress(AttributeError):
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int | None] | None = None
        self.scheme = "http"
        self.read_paused = False
        self.write_paused = False
        self._writable: asyncio.Event | None = None
        self.blocked: Exchange | None = None  # a fast answer waiting for the client to read
        self.current: Exchange | None = None  # the request being answered (or last answered)
        self.parsing: Exchange | None = None  # the request last parsed
        self.pipeline: deque[Exchange] = deque()  # parsed, waiting for their turn
        self._refusal: MLServeError | None = None  # written after the answers owed
        self._upgrade = False  # what follows is not parsed
        # An upgrade request with a body (llhttp skips it) and that body's framing header.
        self._upgrading: tuple[Exchange, bytes] | None = None
        self._replaying = False  # parsing the head that frames an upgrade request's body
        self._upgraded = False  # an upgrade request's body is read by a parser of its own
        self.feeding = False  # inside parser.feed_data (fast_lane.start reads it)
        self.eof = False  # the client half-closed: close after the answers owed
        self._stalled = False  # an answer was written while the client was not reading
        self.closing_down = False  # uvicorn's shutdown has begun
        self._body_idle = 0  # body bytes read since the parser last made progress
        # The request head being parsed.
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._expect = False
        self._chunked = False  # a fast request's transfer-encoding (the lane keeps none)
        self._fast: bool | None = None  # decided at the first header (the URL is whole)
        self._in_head = True  # a request head is (or may start) arriving
        self._head_bytes = 0  # bytes read while the head is incomplete (bounds buffering)
        self._head_size = 0  # URL and header bytes parsed (exact)
        self._header_count = 0
        # Timers, read by the sweep (timers.py): perf_counter() seconds, None when unarmed.
        self.head_started: float | None = None
        self.idle_since: float | None = None

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.connections.add(self)
        self.transport = transport
        self.server = _address(transport, "sockname")
        self.client = _address(transport, "peername")
        if transport.get_extra_info("sslcontext"):
            self.scheme = "https"
        self.head_started = perf_counter()
        self.timers.start(self.loop, self.connections)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        for ex in (self.current, self.parsing, *self.pipeline):
            if ex is not None and not ex.done:
                ex.disconnected = True
                ex.body_started = None
            if ex is not None:
                ex.wake()
        self.pipeline.clear()
        self.resume_writing()
        self.head_started = self.idle_since = None
        if exc is None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        current = self.current
        if (current is not None and not current.done and current.complete) or self.pipeline:
            # A half-closed client still gets its answers (``_next``); an ASGI reader of
            # disconnects (an event stream) is told it has gone once the body is taken.
            self.eof = True
            if current is not None:
                current.wake()
            return True
        return None  # nothing whole is owed: the transport closes

    def data_received(self, data: bytes) -> None:
        self.idle_since = None
        if self._upgrade:
            return  # bytes after an upgrade request are not HTTP: ignored until it closes
        parsing = self.parsing
        if self.head_started is None and (parsing is None or parsing.done):
            # No request in flight: these bytes must lead to a complete head in time.
            self.head_started = perf_counter()
        if self._in_head:
            self._head_bytes += len(data)
        else:
            self._body_idle += len(data)
        self.feeding = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.feeding = False
            self._refuse_upgrade(data[exc.args[0] :])
            return
        except httptools.HttpParserError as exc:
            self.feeding = False
            cause = exc.__context__
            if self._upgraded:
                self._upgrade = True  # bytes after an upgrade request's body: not parsed
                self.pause_reading()
                return
            if isinstance(cause, HeadRefused):
                self.refuse(cause.error)
            elif str(exc) == "Invalid HTTP version":  # llhttp's words for HTTP/1.2, 3.0, ...
                self.refuse(
                    HttpVersionNotSupported(
                        "the request line's HTTP version is not supported: send HTTP/1.1"
                    )
                )
            else:
                self.refuse(InvalidHttp("invalid HTTP request"))
            return
        self.feeding = False
        current = self.current
        if current is not None and not (current.complete or current.done):
            if current.early is not None:
                # Refused before its body was whole, and the rest did not follow in this
                # read: answered now, then closed (the rest would be taken for a request).
                self.answer(current, current.early)
            elif current.expect_continue and current.request is not None:
                # A fast-lane head whose body did not come with it: the client may wait.
                current.expect_continue = False
                self.transport.write(fast_lane.CONTINUE)
        # A head still incomplete after this read: the parser buffers at most one read
        # beyond the limit before the client is refused.
        limit = self.max_head_bytes
        if self._in_head and self._head_bytes > limit and not self.transport.is_closing():
            if len(self._url) * 2 > self._head_bytes:
                self.refuse(UriTooLong(f"the request URL is over the limit of {limit} bytes"))
            else:
                self.refuse(
                    HeadersTooLarge(f"the request headers are over the limit of {limit} bytes")
                )
        elif self._body_idle > limit and not self._in_head and not self.transport.is_closing():
            # Bytes that bring no body byte: a chunk size line (its extensions) or trailers.
            self.refuse(
                InvalidHttp(
                    f"a chunk size line or the trailers are over the limit of {limit} bytes"
                )
            )

    def pause_writing(self) -> None:
        self.write_paused = True
        if self._writable is not None:
            self._writable.clear()

    def resume_writing(self) -> None:
        if not self.write_paused:
            return
        self.write_paused = False
        if self._writable is not None:
            self._writable.set()
        blocked = self.blocked
        if blocked is not None:
            self.blocked = None
            self.loop.call_soon(fast_lane.answer, self, blocked)
        if self._stalled:
            self._stalled = False
            self.loop.call_soon(self._next)

    # ------------------------------------------------------------------ uvicorn's server
    def shutdown(self) -> None:
        """Graceful shutdown: close an idle connection; answer what was received, the last
        answer saying ``connection: close``. A fast-lane body still arriving when the drain
        ends is answered 503 (``_drain_watch``; the ASGI lane's in ``asgi.py``)."""
        self.closing_down = True
        last = self.parsing
        if last is None or last.done:
            self.transport.close()
        else:
            last.keep_alive = False
            if last.fast and not last.complete:
                task = self.loop.create_task(self._drain_watch(last))
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)

    async def _drain_watch(self, ex: Exchange) -> None:
        """Until ``ex`` is answered; cancelled (uvicorn's drain ended) first: answer 503."""
        try:
            while not (ex.done or ex.disconnected):
                if ex.waiter is None:
                    ex.waiter = asyncio.Event()
                await ex.waiter.wait()
                ex.waiter.clear()
        except asyncio.CancelledError:
            self.drain_ended(ex)
            raise

    def drain_ended(self, ex: Exchange) -> None:
        """The drain ended while ``ex``'s body was arriving: 503, the client may send it again."""
        if ex.done or ex.disconnected or ex.complete:
            return  # answered, gone, or running (its own task answers)
        if ex is self.current and not ex.started:
            self.answer(ex, shutting_down())
        else:
            self.transport.close()

    # ------------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._expect = False
        self._chunked = False
        self._fast = None
        self._head_size = self._header_count = 0
        if self.head_started is None:
            self.head_started = perf_counter()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > self.max_head_bytes:
            raise HeadRefused(
                UriTooLong(f"the request URL is over the limit of {self.max_head_bytes} bytes")
            )
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # Exact, whatever the reads: a head that arrives in one read is counted here.
        count = self._header_count = self._header_count + 1
        size = self._head_size = self._head_size + len(name) + len(value) + 4
        if size > self.max_head_bytes or count > MAX_HEADERS:
            if count > MAX_HEADERS:
                too_many = f"the request has more than {MAX_HEADERS} headers"
                raise HeadRefused(HeadersTooLarge(too_many))
            raise HeadRefused(
                HeadersTooLarge(
                    f"the request headers are over the limit of {self.max_head_bytes} bytes"
                )
            )
        fast = self._fast
        if fast is None:
            fast = self._fast = self._is_fast()
        name = name.lower()
        if fast and name not in fast_lane.HEADERS:
            if name == b"expect":
                self._expect = value.rstrip(b" \t").lower() == b"100-continue"
            elif name == b"transfer-encoding":
                self._chunked = True  # llhttp accepts only chunked as the last coding
            return  # the fast lane reads only the headers the infer core needs
        # llhttp keeps trailing whitespace, which RFC 9110 section 5.5 excludes from values.
        value = value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self.head_started = None
        if self._replaying:
            return  # the head that frames an upgrade request's body: its exchange is parsing
        parser = self.parser
        fast = self._fast
        if fast is None:
            fast = self._is_fast()
        url = self._url
        http_version = parser.get_http_version()
        if http_version not in _VERSIONS:
            # llhttp parses any HTTP/x.y; an HTTP/2.0 request line on a plain connection
            # is not one this server can frame its answer for (RFC 9110 section 15.6.6).
            raise HeadRefused(
                HttpVersionNotSupported(
                    f"HTTP/{http_version} is not supported: send HTTP/1.1 (or HTTP/1.0)"
                )
            )
        if fast:
            method, path, raw_path, query = "POST", url.decode("ascii"), url, b""
        else:
            method = parser.get_method().decode("ascii")
            parsed = httptools.parse_url(url)
            raw_path = parsed.path
            path = raw_path.decode("ascii")
            if "%" in path:
                path = unquote(path)
            query = parsed.query or b""
            if self.root_path:
                path = self.root_path + path
                raw_path = self.root_path.encode("ascii") + raw_path
        ex = Exchange(
            method,
            path,
            raw_path,
            query,
            self._headers,
            http_version,
            http_version != "1.0" and parser.should_keep_alive(),
            self._expect,
            fast,
        )
        if parser.should_upgrade():
            ex.keep_alive = False  # answered as plain HTTP, then closed (_refuse_upgrade)
            framing = _framing(ex, self._chunked)
            if framing is not None:
                self._upgrading = (ex, framing)
        self.parsing = ex
        current = self.current
        if (current is None or current.done) and not self.pipeline and not self._stalled:
            self._start(ex)
        else:  # pipelined: answered after the ones before it; read on once they are
            self.pause_reading()
            self.pipeline.append(ex)

    def on_chunk_header(self) -> None:
        self._body_idle = 0

    def on_body(self, body: bytes) -> None:
        self._body_idle = 0
        ex = self.parsing
        if ex is None or ex.done or ex.early is not None:
            return  # answered (or to be) already: the rest is read and dropped
        size = ex.size + len(body)
        ex.size = size
        if ex.fast:
            buffer = ex.buffer
            if buffer is not None:
                buffer += body
            elif ex.chunks:  # a second read: grow one buffer from here on
                buffer = ex.buffer = bytearray(ex.chunks[0])
                buffer += body
                ex.chunks = []
            else:
                ex.chunks.append(body)
            infer = self.infer
            if ex.request is not None and infer is not None and size > infer.max_body:
                ex.body_started = None
                ex.early = infer.refused(ex.request, fast_lane.too_large(infer))
                ex.request = ex.buffer = None  # answered at the end of the read (413)
                ex.chunks = []
            return
        ex.chunks.append(body)
        if size > HIGH_WATER:
            self.pause_reading()
        ex.wake()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._body_idle = 0
        ex = self.parsing
        if ex is None or ex.done:
            return
        upgrading = self._upgrading
        if upgrading is not None and upgrading[0] is ex:
            return  # llhttp skipped its body: it follows (_refuse_upgrade)
        ex.complete = True
        if not ex.fast:
            ex.wake()
        elif ex is self.current and ex.request is not None:
            ex.body_started = None
            # Answered after this iteration's reads, not inside the parser's callback: the
            # loop then reads every ready connection before it answers any.
            self.loop.call_soon(fast_lane.answer, self, ex)
        elif ex is self.current and ex.early is not None:
            self.answer(ex, ex.early)  # refused at its head, its body now read whole

    # ------------------------------------------------------------------ requests
    def _is_fast(self) -> bool:
        url = self._url
        return (
            self.infer is not None
            and self.parser.get_method() == b"POST"
            and url.startswith(b"/v2/models/")
            and url.endswith(b"/infer")
            and b"%" not in url
            and b"?" not in url
            and b"#" not in url
            and not self.root_path
        )

    def _start(self, ex: Exchange) -> None:
        """Begin answering ``ex`` (its turn has come)."""
        self.current = ex
        limit = self.config.limit_concurrency
        if limit is not None and (len(self.connections) > limit or len(self.tasks) >= limit):
            log.warning("Exceeded concurrency limit.")
            ex.keep_alive = False
            over = Overloaded("the server is over its concurrency limit; retry later")
            self.answer_error(ex, over)
            return
        if ex.fast:
            fast_lane.start(self, ex)
        else:
            start_cycle(self, ex)

    def _start_next(self) -> None:
        if self.pipeline and not self.transport.is_closing():
            current = self.current
            if current is None or current.done:
                self._start(self.pipeline.popleft())

    def answer(self, ex: Exchange, reply: Reply) -> None:
        """Write ``reply`` (an infer core ``Reply``) as ``ex``'s whole answer, in one write."""
        if ex.done or ex.disconnected:
            return
        # An answer before the body is whole (refused early): what the client still sends
        # of it would be read as the next request, so the connection ends here.
        close = not ex.keep_alive or not ex.complete
        content = [STATUS_LINE[reply.status]]
        for name, value in self.server_state.default_headers:
            content += (name, b": ", value, b"\r\n")
        said_close = False
        for name, value in reply.headers:
            if name == b"connection":  # only the core's "close" (after a 408)
                close = said_close = True
            content += (name, b": ", value, b"\r\n")
        if close and not said_close:
            content.append(_CONNECTION_CLOSE)
        content += (b"\r\n", reply.body)
        ex.started = True
        self.transport.write(b"".join(content))
        if self.access_log:
            self.log_access(ex, reply.status)
        self.finished(ex, close)

    def answer_error(self, ex: Exchange, error: MLServeError) -> None:
        """A JSON error answer that the connection gives itself."""
        status, body, extra = error_payload(error)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            *extra,
        ]
        self.answer(ex, Reply(status, headers, body))

    def finished(self, ex: Exchange, close: bool) -> None:
        """After ``ex``'s answer was written whole: keep alive, close, or the next request."""
        ex.done = True
        ex.body_started = None
        ex.wake()
        self.server_state.total_requests += 1
        transport = self.transport
        if close:
            transport.close()
            return
        if transport.is_closing():
            return
        if self.write_paused:
            # The client is not reading its answers: read and start nothing until it does
            # (resume_writing), so that what it sends meanwhile waits in its own buffers.
            self.pause_reading()
            self._stalled = True
            return
        self._next()

    def _next(self) -> None:
        """The connection is free: refuse what was refused, start the next request, or read."""
        if self.transport.is_closing():
            return
        pipeline = self.pipeline
        if self.eof and (not pipeline or not pipeline[0].complete):
            self.transport.close()  # half-closed: nothing more can come whole
            return
        if self._refusal is not None and not pipeline:
            # The answers owed before a refused request are written: refuse it now, without
            # reading on (the parser stopped at its bytes).
            refusal = self._refusal
            self._refusal = None
            self.server_state.total_requests += 1
            self.refuse(refusal)
            return
        if self.head_started is not None:
            # A head begun while the answer was computed: its time starts now.
            self.head_started = perf_counter()
        if pipeline:
            # Reading resumes only once the pipeline is empty: a request read meanwhile
            # would otherwise start before the ones queued ahead of it.
            self.loop.call_soon(self._start_next)
        else:
            self.resume_reading()
            self.idle_since = perf_counter()

    def log_access(self, ex: Exchange, status: int) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else ""
        target = ex.raw_path.decode("latin-1")
        if ex.query:
            target += "?" + ex.query.decode("latin-1")
        access_log.info(
            '%s - "%s %s HTTP/%s" %d',
            client,
            ex.method,
            target.replace('"', "%22"),
            ex.http_version,
            status,
        )

    # ------------------------------------------------------------------ refusals, timeouts
    def refuse(self, error: MLServeError) -> None:
        """Answer ``error`` as JSON and close: a request the parser refused."""
        parsing = self.parsing
        if (
            parsing is not None
            and parsing.complete  # its request arrived whole: the fault is a later one's
            and not parsing.done
            and not parsing.disconnected
        ):
            # Garbage pipelined behind requests in flight: answer those first (their client
            # is owed them), then refuse, then close. Read nothing more meanwhile.
            self._refusal = error
            self.pause_reading()
            return
        log.warning("refused a request: %s", error.message)
        status, body, extra = error_payload(error)
        head = [STATUS_LINE[status]]
        for name, value in (*self.server_state.default_headers, *extra):
            if name != b"connection":  # closed below whatever the error
                head += (name, b": ", value, b"\r\n")
        head += (
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        )
        self.transport.write(b"".join(head))
        self.transport.close()

    def _refuse_upgrade(self, rest: bytes) -> None:
        # No websockets here: the request is answered as plain HTTP (its route decides),
        # then the connection closes; what follows the upgrade request is never parsed.
        log.warning("refused a protocol upgrade: this server speaks HTTP/1.1 only")
        upgrading = self._upgrading
        if upgrading is None:
            self._upgrade = True
            self.pause_reading()
            return
        # llhttp treats the bytes after the head as the new protocol's: a parser of its own,
        # given a head with the request's framing, reads them as its body ("connection:
        # close" makes it refuse anything after that body).
        self._upgrading = None
        self._upgraded = True
        self.parser = httptools.HttpRequestParser(self)
        self._replaying = True
        try:
            self.parser.feed_data(
                b"POST / HTTP/1.1\r\n" + upgrading[1] + b"\r\nconnection: close\r\n\r\n"
            )
        finally:
            self._replaying = False
        if rest:
            self.data_received(rest)

    def check_timers(self, now: float) -> None:
        """The sweep's check (``timers.py``): close an idle keep-alive connection or one whose
        request head is late; answer 408 to a fast-lane body that is late."""
        if self.transport is None or self.transport.is_closing():
            return
        timers = self.timers
        idle = self.idle_since
        if idle is not None and now - idle >= timers.keep_alive:
            self.idle_since = None
            self.transport.close()
            return
        current = self.current
        busy = current is not None and not current.done
        started = self.head_started
        if started is not None and not busy and now - started >= timers.head_timeout:
            self.head_started = None
            log.info("closed a connection whose request head did not arrive in time")
            self.transport.close()
            return
        if busy and current is not None and current.body_started is not None:
            infer = self.infer
            if infer is not None and now - current.body_started >= infer.deadlines.timeout:
                current.body_started = None
                self.answer(current, infer.refused(current.request, infer.deadlines.late()))

    # ------------------------------------------------------------------ flow control
    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read on, unless requests wait their turn or nothing more is to be parsed."""
        if self.read_paused and not (
            self.pipeline or self._upgrade or self._refusal is not None or self._stalled
        ):
            self.read_paused = False
            self.transport.resume_reading()

    async def drain(self) -> None:
        """Until the client has read enough of what was written (or is gone)."""
        if self.write_paused:
            if self._writable is None:
                self._writable = asyncio.Event()
            await self._writable.wait()


class AsgiConnection(HttpConnection):
    """``HttpConnection`` that sends every request to the ASGI application (``--fast-lane
    off``)."""

    fast_lane = False


def shutting_down() -> Reply:
    """The answer to a request whose body was still arriving when the drain ended."""
    status, body, extra = error_payload(
        ServerNotReady("the server is shutting down: send the request again")
    )
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        *extra,
        (b"connection", b"close"),
    ]
    return Reply(status, headers, body)


def _framing(ex: Exchange, chunked: bool) -> bytes | None:
    """The header that frames ``ex``'s body (None: it has none)."""
    length = None
    for name, value in ex.headers:
        if name == b"transfer-encoding":
            chunked = True
        elif name == b"content-length":
            length = value
    if chunked:
        return b"transfer-encoding: chunked"
    if length is not None and length.strip(b" \t") not in (b"0", b""):
        return b"content-length: " + length.strip(b" \t")
    return None


def _address(transport: asyncio.Transport, name: str) -> tuple[str, int | None] | None:
    info = transport.get_extra_info(name)
    if isinstance(info, (list, tuple)) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    if isinstance(info, str):
        return (info, None)
    return None
