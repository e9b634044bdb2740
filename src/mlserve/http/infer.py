"""The lean ASGI handler for ``POST /v2/models/{m}[/versions/{v}]/infer``.

No Starlette Request/Response per call: the body is read from ``receive`` with the
size limit enforced as it arrives, parsed with orjson, handed to the service, and
the answer is written with two ``send`` calls. Everything else is Starlette's.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import InvalidInput, MLServeError, NotFound, PayloadTooLarge
from ..registry.layout import check_model_name, parse_version
from ..service import InferenceService
from .errors import send_error

INFER_PREFIX = "/v2/models/"
INFER_SUFFIX = "/infer"
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def is_infer_path(path: str) -> bool:
    return path.startswith(INFER_PREFIX) and path.endswith(INFER_SUFFIX)


class InferHandler:
    """An ASGI callable for the infer routes only (the app dispatches here by path)."""

    def __init__(self, service: InferenceService, max_body_bytes: int) -> None:
        self.service = service
        self.max_body = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            model, version = _route(scope["path"])
            if scope["method"] != "POST":
                await _method_not_allowed(send)
                return
            body = await self._read_body(scope, receive)
            try:
                request = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"malformed JSON body: {exc}", reason="json") from None
            result = await self.service.infer(model, version, request)
            payload = orjson.dumps(result.body, option=_DUMPS_OPTIONS)
        except MLServeError as exc:
            await send_error(send, exc)
            return
        except Exception as exc:  # anything else is a bug: log it, answer 500 JSON
            await send_error(send, exc)
            return
        session = result.session
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"mlserve-model-version", str(session.version).encode()),
                    (b"mlserve-route", result.role.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _read_body(self, scope: dict[str, Any], receive: Any) -> bytes:
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise InvalidInput("invalid Content-Length header", reason="http") from None
                if declared > self.max_body:
                    raise PayloadTooLarge(
                        f"request body of {declared} bytes is over the limit "
                        f"of {self.max_body} bytes"
                    )
                break
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidInput("client disconnected before sending the body", reason="http")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_body:
                    raise PayloadTooLarge(
                        f"request body is over the limit of {self.max_body} bytes"
                    )
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _route(path: str) -> tuple[str, int | None]:
    """``/v2/models/{m}/infer`` or ``/v2/models/{m}/versions/{v}/infer`` → (model, version)."""
    parts = path[len(INFER_PREFIX) : -len(INFER_SUFFIX)].split("/")
    if len(parts) == 1:
        return check_model_name(parts[0]), None
    if len(parts) == 3 and parts[1] == "versions":
        return check_model_name(parts[0]), parse_version(parts[2])
    raise NotFound(f"no route for {path[:200]!r}")


async def _method_not_allowed(send: Any) -> None:
    body = orjson.dumps({"error": "method not allowed; use POST", "code": "method_not_allowed"})
    await send(
        {
            "type": "http.response.start",
            "status": 405,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"allow", b"POST"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
