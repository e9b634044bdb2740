"""The lean ASGI handler for ``POST /v2/models/{m}[/versions/{v}]/infer``.

No Starlette Request/Response per call: the body is read from ``receive`` with the
size limit enforced as it arrives, parsed with orjson, handed to the service, and
the answer is written with two ``send`` calls. Everything else is Starlette's.
"""

from __future__ import annotations

from asyncio import CancelledError, current_task
from time import perf_counter
from typing import Any

import orjson

from ..errors import ClientDisconnected, InvalidInput, MLServeError, NotFound, PayloadTooLarge
from ..registry.layout import check_model_name, parse_version
from ..service import InferenceService
from .body_timeout import BodyDeadlines
from .errors import send_error

INFER_PREFIX = "/v2/models/"
INFER_SUFFIX = "/infer"
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_ROUTE_CACHE_SIZE = 4096
_TIMING = b"queue;dur=%.3f, infer;dur=%.3f, total;dur=%.3f"
_ROLE_BYTES = {role: role.encode() for role in ("stable", "canary", "pinned", "shadow")}


class InferHandler:
    """An ASGI callable for the infer routes only (the app dispatches here by path)."""

    def __init__(
        self,
        service: InferenceService,
        max_body_bytes: int,
        deadlines: BodyDeadlines | None = None,
    ) -> None:
        self.service = service
        self.max_body = max_body_bytes
        # Body reads that outlast the timeout are cancelled by its sweeper (started by the
        # app's lifespan; without one, reads are untimed).
        self.deadlines = deadlines or BodyDeadlines(service.settings.body_timeout_seconds)
        # Validated paths → (model, version): a dict hit instead of a split and two regexes.
        self._routes: dict[str, tuple[str, int | None]] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        start = perf_counter()
        target = None
        served = False  # once the service has the request, it accounts failures itself
        try:
            path = scope["path"]
            target = self._routes.get(path)
            if target is None:
                target = _route(path)
                if len(self._routes) < _ROUTE_CACHE_SIZE:
                    self._routes[path] = target
            if scope["method"] != "POST":
                await _method_not_allowed(send)
                return
            if self.service.shed_share and self.service.shed_this():
                self.service.count_shed(*target)
                await send_error(send, self.service.refuse_overloaded())
                return
            declared = header_length = routing_key = None
            for key, value in scope["headers"]:
                if key == b"content-length":
                    declared = value
                elif key == b"inference-header-content-length":
                    header_length = _header_length(value)
                elif key == b"mlserve-routing-key":
                    routing_key = value.decode("latin-1")
            body = await self._read_body(declared, receive)
            if header_length is None:
                request = _loads(body)
                served = True
                result = await self.service.infer(
                    target[0], target[1], request, routing_key=routing_key, body_bytes=len(body)
                )
            elif header_length == 0:
                served = True
                result = await self.service.infer_raw(
                    target[0], target[1], memoryview(body), routing_key
                )
            else:
                if header_length > len(body):
                    raise InvalidInput(
                        f"Inference-Header-Content-Length {header_length} is beyond the body "
                        f"of {len(body)} bytes",
                        reason="binary",
                    )
                view = memoryview(body)
                request = _loads(view[:header_length])
                served = True
                result = await self.service.infer(
                    target[0], target[1], request, view[header_length:], routing_key, len(body)
                )
            payload = orjson.dumps(result.body, option=_DUMPS_OPTIONS)
        except ClientDisconnected:
            return  # nobody to answer, nothing to count
        except MLServeError as exc:
            if target is not None and not served and exc.status_code != 404:
                # Failed before the service saw it (body, JSON, size): still the version's.
                self.service.count_failure(target[0], target[1], exc)
            await send_error(send, exc)
            return
        except Exception as exc:  # a bug: logged, answered 500 JSON
            await send_error(send, exc)
            return
        endpoint = result.endpoint
        total_s = perf_counter() - start
        timing = _TIMING % (result.queue_s * 1e3, result.infer_s * 1e3, total_s * 1e3)
        if result.blobs:
            headers = [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", str(len(payload)).encode()),
            ]
            payload = b"".join((payload, *result.blobs))
        else:
            headers = [(b"content-type", b"application/json")]
        headers += [
            (b"content-length", str(len(payload)).encode()),
            (b"mlserve-model-version", endpoint.version_bytes),
            (b"mlserve-route", _ROLE_BYTES[result.role]),
            (b"server-timing", timing),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        if endpoint.observed:  # accounted (and payload-logged) after the answer left
            self.service.record(result, total_s)

    async def _read_body(self, declared: bytes | None, receive: Any) -> bytes:
        if declared is not None:
            if not declared.isdigit():
                raise InvalidInput("invalid Content-Length header", reason="http")
            if int(declared) > self.max_body:
                raise PayloadTooLarge(
                    f"request body of {int(declared)} bytes is over the limit "
                    f"of {self.max_body} bytes"
                )
        # Under the body timeout while it reads: a dict insert and pop, no timer per request.
        task: Any = current_task()
        reading = self.deadlines.reading
        reading[task] = perf_counter()
        try:
            message = await receive()
            body = message.get("body", b"")
            if len(body) > self.max_body:  # no (or a false) Content-Length: count what arrives
                raise PayloadTooLarge(f"request body is over the limit of {self.max_body} bytes")
            if not message.get("more_body", False):
                if message["type"] == "http.disconnect":
                    raise ClientDisconnected("client disconnected before sending the body")
                return body  # type: ignore[no-any-return]
            chunks = [body]
            size = len(body)
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnected("client disconnected before sending the body")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body:
                    raise PayloadTooLarge(
                        f"request body is over the limit of {self.max_body} bytes"
                    )
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        except CancelledError:
            error = self.deadlines.expired(task)
            if error is None:
                raise
            raise error from None
        finally:
            reading.pop(task, None)


def _loads(data: bytes | memoryview) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON body: {exc}", reason="json") from None


def _header_length(value: bytes) -> int:
    if not value.isdigit() or len(value) > 18:
        raise InvalidInput(
            f"Inference-Header-Content-Length must be a non-negative integer, got "
            f"{value[:32].decode('latin-1')!r}",
            reason="binary",
        )
    return int(value)


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
