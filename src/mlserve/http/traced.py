"""The infer core with a span per request: ``TracedInferHandler``, chosen for the app at
construction when tracing is on, so that the untraced core holds no tracing code.

Each infer request gets a server span, child of the ``traceparent`` it carries, following
OpenTelemetry's HTTP conventions (``http.request.method``, ``http.route``, ``url.path``,
``http.response.status_code``, ``error.type`` for a 5xx) with the model, the version and
route that served, and the outcome. It starts with the head and ends when the answer is
ready; a request refused at its head or while its body was read has one too.
"""

from __future__ import annotations

from time import perf_counter, time_ns
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import MLServeError
from ..service import InferenceService
from ..tracing import HTTP_STATUS, MODEL, VERSION
from .body_timeout import BodyDeadlines
from .infer import INFER_PREFIX, InferHandler, Reply, Request

if TYPE_CHECKING:
    from ..tracing.spans import RequestTrace, Tracing

ROUTE = "/v2/models/{model}/infer"
VERSION_ROUTE = "/v2/models/{model}/versions/{version}/infer"


class TracedInferHandler(InferHandler):
    """``InferHandler`` whose requests are traced (``head`` to the answer)."""

    def __init__(
        self,
        service: InferenceService,
        max_body_bytes: int,
        deadlines: BodyDeadlines | None = None,
    ) -> None:
        super().__init__(service, max_body_bytes, deadlines)
        tracing = service.tracing
        assert tracing is not None
        self.tracing: Tracing = tracing

    def head(self, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Request | Reply:
        found = super().head(method, path, headers)
        if isinstance(found, Request):
            began = time_ns() - int((perf_counter() - found.start) * 1e9)
            found.trace = self._start(method, path, headers, found.target, began)
            return found
        trace = self._start(method, path, headers, None, None)
        if trace is not None:
            _answered(trace, found)
        return found

    def refused(self, request: Request, exc: MLServeError) -> Reply:
        reply = super().refused(request, exc)
        if request.trace is not None:
            request.trace.end(reply.status, exc, exc.code, {HTTP_STATUS: reply.status})
        return reply

    async def run(self, request: Request, body: bytes | bytearray) -> Reply:
        reply = await super().run(request, body)
        if request.trace is not None:
            _answered(request.trace, reply)
        return reply

    def _start(
        self,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        target: tuple[str, int | None] | None,
        began: int | None,
    ) -> RequestTrace | None:
        route = VERSION_ROUTE if "/versions/" in path[len(INFER_PREFIX) :] else ROUTE
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "http.route": route,
            "url.path": path[:1024],
            "url.scheme": "http",
        }
        if target is not None:
            attributes[MODEL] = target[0]
            if target[1] is not None:
                attributes[VERSION] = str(target[1])
        name = f"{method} {route}"
        return self.tracing.request(carrier_of(headers), name, attributes, began)


def carrier_of(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """A request's W3C trace context headers as a carrier for ``Tracing.request``."""
    return {
        key.decode("latin-1"): value.decode("latin-1")
        for key, value in headers
        if key == b"traceparent" or key == b"tracestate"
    }


def _answered(trace: RequestTrace, reply: Reply) -> None:
    """End a request's span with its answer: what served it, or the error it got."""
    result = reply.result
    status = {HTTP_STATUS: reply.status}
    if result is not None:
        endpoint = result.endpoint
        trace.target(endpoint.model, endpoint.version, result.role)
        trace.end(reply.status, attributes=status)
        return
    error = code = None
    try:
        found = orjson.loads(reply.body)
        error, code = str(found.get("error")), str(found.get("code"))
    except (orjson.JSONDecodeError, AttributeError):
        pass
    trace.end(reply.status, error, code, status)
