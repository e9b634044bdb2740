"""HTTP/1.1 over a raw loopback socket, for the tests that need bytes no client would send.

- :func:`connect`: a socket to the server's port; :func:`send`: connected, ``data`` sent.
- :func:`read_all`: everything until the server closes; :func:`exchange`: send, read all.
- :func:`read_response`: one Content-Length answer on a kept-alive socket (head, body).
- :func:`first_answer`: send on a fresh connection; the first answer's status and body.
- :func:`request_bytes`: a request as h11 writes it; :class:`Reader`: the answers on one
  socket parsed by h11 (an HTTP implementation independent of the server's), in order.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import h11


def connect(port: int, timeout: float = 30.0) -> socket.socket:
    """A TCP connection to ``127.0.0.1:port`` (``timeout`` for each socket operation)."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def send(port: int, data: bytes, timeout: float = 10.0) -> socket.socket:
    """A fresh connection with ``data`` sent on it; the caller reads and closes it."""
    sock = connect(port, timeout)
    sock.sendall(data)
    return sock


def read_all(sock: socket.socket, timeout: float = 10.0, *, reset_is_close: bool = False) -> bytes:
    """Everything until the server closes (fails if it does not within ``timeout``);
    with ``reset_is_close``, a connection reset ends the reading as a close would."""
    sock.settimeout(timeout)
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            if not reset_is_close:
                raise
            break
        if not chunk:
            break
        out += chunk
    return out


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server wrote until it closed."""
    with send(port, data, timeout) as sock:
        return read_all(sock, timeout)


def _content_length(head: bytes) -> list[int]:
    return [
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    ]


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response with a content-length: its head and its body."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, buf
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = _content_length(head)[0]
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, head + body
        body += chunk
    assert len(body) == length, (head, body)
    return head, body


def first_answer(port: int, data: bytes, timeout: float = 10.0) -> tuple[int | None, bytes]:
    """Send ``data`` on a fresh connection; the status (None: closed without an answer)
    and the body. The server may close while we still send: that is an answer too."""
    with connect(port, timeout) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)
        buf = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                head, sep, rest = buf.partition(b"\r\n\r\n")
                if sep:
                    length = _content_length(head)
                    if length and len(rest) >= length[0]:
                        break
        except ConnectionResetError:
            pass
    if not buf:
        return None, b""
    head, _, body = buf.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def request_bytes(method: str, target: str, body: bytes | None = None, **headers: str) -> bytes:
    """One request as h11 writes it (Content-Length framing unless headers say otherwise);
    ``content_type="x"`` becomes the header ``content-type: x``."""
    conn = h11.Connection(h11.CLIENT)
    fields = [("host", "x"), *((k.replace("_", "-"), v) for k, v in headers.items())]
    if body is not None and "transfer-encoding" not in dict(fields):
        fields.append(("content-length", str(len(body))))
    out = conn.send(h11.Request(method=method, target=target, headers=fields)) or b""
    if body:
        out += conn.send(h11.Data(data=body)) or b""
    return out + (conn.send(h11.EndOfMessage()) or b"")


class Reader:
    """Responses to requests sent on one socket, parsed by h11 in order."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.conn = h11.Connection(h11.CLIENT)
        self.first = True

    def expect(self, method: str, target: str) -> tuple[int, dict[bytes, bytes], bytes, bool]:
        """The response to the next request (method, target): status, headers, body, and
        whether it was chunked; informational (1xx) responses are skipped."""
        if not self.first:
            self.conn.start_next_cycle()
        self.first = False
        # The request as h11 must have sent it to read the answer (the bytes were sent
        # before, by the test).
        self.conn.send(h11.Request(method=method, target=target, headers=[("host", "x")]))
        self.conn.send(h11.EndOfMessage())
        response: Any = None
        body = b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                data = self.sock.recv(65536)
                self.conn.receive_data(data)
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise AssertionError("closed before the response")
        headers_ = {bytes(k): bytes(v) for k, v in response.headers}
        chunked = headers_.get(b"transfer-encoding") == b"chunked"
        return response.status_code, headers_, body, chunked

    def closed(self, timeout: float = 2.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False
