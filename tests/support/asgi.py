"""Drive an ASGI application in-process with one HTTP request, no server and no sockets.

For whole requests through an app, ``httpx.ASGITransport`` serves (see
``test_openapi_fuzz``); this driver is for the tests that need what it hides: a bare ASGI
callable (a handler rather than an app), raw header lists, or the messages the app sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    messages: list[dict[str, Any]] = field(repr=False)


async def request(
    app: Any,
    method: str,
    path: str,
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    query: bytes = b"",
) -> Response:
    """One request, its body in one ``http.request`` message; the app's answer."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": list(headers),
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []
    answered = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await answered.wait()  # the client stays until its answer is complete, then leaves
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            answered.set()

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return Response(
        int(start["status"]),
        list(start.get("headers", [])),
        b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
        sent,
    )


def request_sync(
    app: Any, method: str, path: str, *, loop: asyncio.AbstractEventLoop | None = None, **kw: Any
) -> Response:
    """:func:`request` run to completion, on ``loop`` when given (state kept between calls)."""
    if loop is not None:
        return loop.run_until_complete(request(app, method, path, **kw))
    return asyncio.run(request(app, method, path, **kw))
