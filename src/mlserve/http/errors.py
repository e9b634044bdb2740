"""One rendering of errors as JSON, shared by the lean infer path and Starlette routes."""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import HttpError, MethodNotAllowed, MLServeError, NotFound

log = logging.getLogger("mlserve.http")

JSON_HEADERS = [(b"content-type", b"application/json")]


def error_payload(exc: BaseException) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Status, JSON body and extra headers for any exception; unknown ones are logged as 500."""
    if isinstance(exc, HTTPException):  # Starlette's own (no route, wrong method)
        found = _FRAMEWORK.get(exc.status_code)
        error = found(str(exc.detail)) if found else HttpError(exc.status_code, str(exc.detail))
        extra = [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
        return error.status_code, _body(error), [*error.headers, *extra]
    if not isinstance(exc, MLServeError):
        log.error("internal error", exc_info=exc)
        exc = _INTERNAL
    return exc.status_code, _body(exc), list(exc.headers)


def _body(error: MLServeError) -> bytes:
    return orjson.dumps({"error": error.message, "code": error.code})


_FRAMEWORK: dict[int, type[MLServeError]] = {404: NotFound, 405: MethodNotAllowed}
_INTERNAL = MLServeError("internal server error")


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
