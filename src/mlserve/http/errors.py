"""One rendering of errors as JSON, shared by the lean infer path and Starlette routes."""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import MLServeError

log = logging.getLogger("mlserve.http")

JSON_HEADERS = [(b"content-type", b"application/json")]


def error_payload(exc: BaseException) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Status, JSON body and extra headers for any exception; unknown ones are logged as 500."""
    extra: list[tuple[bytes, bytes]] = []
    if isinstance(exc, MLServeError):
        status, message, code = exc.status_code, exc.message, exc.code
        if status == 503:
            extra.append((b"retry-after", b"1"))
        elif status == 401:
            extra.append((b"www-authenticate", b'Bearer realm="mlserve admin"'))
        elif status == 408:  # the rest of a slow body may still come: end the connection
            extra.append((b"connection", b"close"))
    elif isinstance(exc, HTTPException):
        status, message = exc.status_code, str(exc.detail)
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        if exc.headers:
            extra.extend((k.lower().encode(), v.encode()) for k, v in exc.headers.items())
    else:
        log.error("internal error", exc_info=exc)
        status, message, code = 500, "internal server error", "internal"
    return status, orjson.dumps({"error": message, "code": code}), extra


def error_response(request: Request, exc: Exception) -> Response:
    """Starlette exception handler."""
    if isinstance(exc, HTTPException) and exc.status_code == 404:
        exc = HTTPException(404, f"no route for {request.method} {request.url.path[:200]}")
    elif isinstance(exc, HTTPException) and exc.status_code == 405:
        exc = HTTPException(
            405,
            f"method {request.method} not allowed on {request.url.path[:200]}",
            headers=exc.headers,
        )
    status, body, extra = error_payload(exc)
    headers = {k.decode(): v.decode() for k, v in extra}
    return Response(body, status_code=status, media_type="application/json", headers=headers)
