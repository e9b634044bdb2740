"""uvicorn's httptools protocol with limits on the request head.

httptools (llhttp) bounds neither a header's length nor their number: a client can stream
megabytes of one header, or thousands of headers, and uvicorn buffers all of it (its
``h11_max_incomplete_event_size`` applies to the h11 protocol only). This subclass counts
the bytes that arrive while a request's head (request line and headers) is incomplete and
the headers it holds; beyond ``max_header_bytes`` (uvicorn's
``h11_max_incomplete_event_size`` setting, reused so that it reaches every worker process)
or ``MAX_HEADERS``, the client gets 431 (414 when the URL is most of it) as JSON and the
connection is closed before the request reaches the application. A request the parser
cannot read gets a JSON 400 (``invalid_http``) instead of uvicorn's text/plain one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

DEFAULT_MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 256
# The error code of each status the protocol answers itself (declared in openapi.py).
_CODES = {400: "invalid_http", 414: "uri_too_long", 431: "headers_too_large"}


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing; answered with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that refuses oversized request heads (see the module doc)."""

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_head_bytes: int = config.h11_max_incomplete_event_size or (
            DEFAULT_MAX_HEADER_BYTES
        )
        self._in_head = True  # a request head is (or may start) arriving
        self._head_bytes = 0  # bytes read while the head is incomplete (bounds buffering)
        self._head_size = 0  # URL and header bytes parsed (exact)
        self._header_count = 0
        # A refusal of bytes that follow a request still being answered: written after it.
        self._refusal: tuple[int, str] | None = None

    def data_received(self, data: bytes) -> None:
        # uvicorn's own data_received, plus the two limits.
        if self._in_head:
            self._head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadTooLarge):
                self._refuse(cause.status, cause.message)
            else:
                self.send_400_response("invalid HTTP request")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        # A head still incomplete after this read: the parser buffers at most one read
        # beyond the limit before the client is refused.
        if self._in_head and self._head_bytes > self.max_head_bytes and not self.closing():
            limit = self.max_head_bytes
            if len(getattr(self, "url", b"")) * 2 > self._head_bytes:
                self._refuse(414, f"the request URL is over the limit of {limit} bytes")
            else:
                self._refuse(431, f"the request headers are over the limit of {limit} bytes")

    def closing(self) -> bool:
        return bool(self.transport.is_closing())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = self._header_count = 0

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > self.max_head_bytes:
            raise _HeadTooLarge(
                414, f"the request URL is over the limit of {self.max_head_bytes} bytes"
            )
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # Exact, whatever the reads: a head that arrives in one read is counted here.
        self._header_count += 1
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.max_head_bytes:
            raise _HeadTooLarge(
                431, f"the request headers are over the limit of {self.max_head_bytes} bytes"
            )
        if self._header_count > MAX_HEADERS:
            raise _HeadTooLarge(431, f"the request has more than {MAX_HEADERS} headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def send_400_response(self, msg: str) -> None:
        # uvicorn's is text/plain; every error this server sends is JSON (see openapi.py).
        self._refuse(400, "invalid HTTP request")

    def on_response_complete(self) -> None:
        refusal = self._refusal
        if refusal is not None and not self.pipeline and not self.transport.is_closing():
            self._refusal = None
            self.server_state.total_requests += 1
            self._refuse(*refusal)
            return
        super().on_response_complete()

    def _refuse(self, status: int, message: str) -> None:
        cycle = self.cycle
        if (
            cycle is not None
            and not cycle.more_body  # its request arrived whole: the fault is a later one's
            and not cycle.response_complete
            and not cycle.disconnected
        ):
            # Garbage pipelined behind a request in flight: answer that request first (its
            # client is owed it), then refuse, then close. Read nothing more meanwhile.
            self._refusal = (status, message)
            self.flow.pause_reading()
            return
        code = _CODES[status]
        body = orjson.dumps({"error": message, "code": code})
        self.logger.warning("refused a request: %s", message)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(head))
        self.transport.close()
