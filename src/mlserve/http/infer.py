"""``POST /v2/models/{m}[/versions/{v}]/infer``: one transport-free core, two lanes.

``InferHandler`` checks the head (route, method, shedding, sizes), runs the request
(decode, route to a version, run, encode) and accounts it after the answer left; it never
touches a socket. The ASGI lane (``InferHandler.__call__``) reads the body from ``receive``
with the size limit enforced as it arrives and answers with two ``send`` calls; the fast lane
(``fast_lane.py``) calls the same three steps from the HTTP protocol and answers with one
write. Everything else is Starlette's.
"""

from __future__ import annotations

import os
from asyncio import CancelledError, Semaphore, current_task, to_thread
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from ..errors import (
    ClientDisconnected,
    InvalidInput,
    MethodNotAllowed,
    MLServeError,
    NotFound,
    PayloadTooLarge,
)
from ..names import check_model_name, parse_version
from ..registry.store import ModelStore
from ..runtime.binary import MAX_BYTES_ELEMENTS
from ..runtime.tensors import json_counts
from ..service import Endpoint, InferenceService, InferResult
from ..serving.codec import DECODE_OFF_LOOP_FROM
from .bodies import inflate, request_coding
from .body_timeout import BodyDeadlines
from .errors import JSON_HEADERS, error_payload

if TYPE_CHECKING:
    from ..tracing.spans import RequestTrace

INFER_PREFIX = "/v2/models/"
INFER_SUFFIX = "/infer"
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_ROUTE_CACHE_SIZE = 4096
_TIMING = b"queue;dur=%.3f, infer;dur=%.3f, total;dur=%.3f"
_ROLE_BYTES = {role: role.encode() for role in ("stable", "canary", "pinned", "shadow")}
# JSON bodies (and binary requests' JSON headers) up to this size are parsed as they are: at
# most ~32K arrays or objects, under 4 ms to parse whatever they hold (measured). Larger ones
# are scanned first against what a request to the model can hold (``_json_bound``); the
# scan runs on the loop up to _SCAN_INLINE (~1.5 ms), in a thread without the GIL beyond.
_SCAN_FROM = 64 * 1024
_SCAN_INLINE = 1024 * 1024
# Room beyond the tensors for what V2 lets a request carry besides: parameters (scalars), the
# id, requested outputs' parameters, unknown keys.
_SLACK_CONTAINERS = 256
_SLACK_TOKENS = 4096
_MAX_DEPTH = 1024  # orjson's nesting limit
# The compiled scan runs without the GIL; its Python twin (no extension) only in a thread.
_COMPILED_SCAN = json_counts.__module__.endswith("._decode")
# Answers of this many output elements on are encoded in a worker thread, the same way:
# orjson takes 16-22 ns an FP32/FP64 element, 7 an INT64 one (~2 ms at this count). orjson
# holds the GIL for a whole call, so the data is encoded that many elements a call.
_ENCODE_OFF_LOOP_FROM = 100_000
# Big bodies decoded at once: they hold the GIL nearly throughout, so a second thread would
# add no throughput, only lateness for the loop; nor can they take every worker thread.
_OFF_LOOP_AT_ONCE = 1

T = TypeVar("T")


class Reply:
    """A response as the transport writes it: status, headers (without the server's
    defaults), body; for a success, what ``InferHandler.finish`` accounts afterwards."""

    __slots__ = ("body", "headers", "result", "start", "status")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        result: InferResult | None = None,
        start: float = 0.0,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.result = result
        self.start = start


class Request:
    """What an infer request's head says, checked before its body is read."""

    __slots__ = (
        "declared",
        "encoding",
        "header_length",
        "routing_key",
        "start",
        "target",
        "trace",
    )

    def __init__(
        self,
        target: tuple[str, int | None],
        declared: int | None,
        header_length: int | None,
        routing_key: str | None,
        start: float,
    ) -> None:
        self.target = target
        self.declared = declared
        self.header_length = header_length
        self.routing_key = routing_key
        self.start = start
        self.encoding: bytes | None = None  # the body's Content-Encoding, when not identity
        self.trace: RequestTrace | None = None  # its span, when tracing is on (traced.py)


class InferHandler:
    """The infer routes' one core, free of any transport: ``head`` checks the request head,
    ``run`` decodes, routes, runs and encodes, ``finish`` accounts a success after the answer
    left. Two lanes call it: this object as an ASGI callable (``__call__``; the app
    dispatches here by path) and the protocol-level fast lane (``fast_lane.py``)."""

    def __init__(
        self,
        service: InferenceService,
        max_body_bytes: int,
        deadlines: BodyDeadlines | None = None,
    ) -> None:
        self.service = service
        self.max_body = max_body_bytes
        # The parts each request uses, bound once.
        self._store = service.store
        self._pipeline = service.pipeline
        self._accounting = service.accounting
        self._shedder = service.shedder
        self._off_loop = Semaphore(_OFF_LOOP_AT_ONCE)
        # Body reads that outlast the timeout are cancelled by its sweeper (started by the
        # app's lifespan; without one, reads are untimed).
        self.deadlines = deadlines or BodyDeadlines(service.settings.body_timeout_seconds)
        # Validated paths → (model, version): a dict hit instead of a split and two regexes.
        self._routes: dict[str, tuple[str, int | None]] = {}

    # ------------------------------------------------------------------ the core
    def head(self, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Request | Reply:
        """The request head checked: a ``Request`` to read the body of, or the answer."""
        start = perf_counter()
        target = None
        try:
            target = self._routes.get(path)
            if target is None:
                target = _route(path)
                if len(self._routes) < _ROUTE_CACHE_SIZE:
                    self._routes[path] = target
            if method != "POST":
                return _METHOD_NOT_ALLOWED
            shedder = self._shedder
            if shedder.share and shedder.shed_this():
                self._accounting.count_shed(*target)
                return error_reply(shedder.refuse())
            declared = header_length = routing_key = codings = None
            for key, value in headers:
                if key == b"content-length":
                    declared = value
                elif key == b"inference-header-content-length":
                    header_length = _header_length(value)
                elif key == b"mlserve-routing-key":
                    routing_key = value.decode("latin-1")
                elif key == b"content-encoding":
                    codings = [value] if codings is None else [*codings, value]
            encoding = None if codings is None else request_coding(codings)
            length = None
            if declared is not None:
                if not declared.isdigit():
                    raise InvalidInput("invalid Content-Length header", reason="http")
                length = int(declared)
                if length > self.max_body:
                    raise PayloadTooLarge(
                        f"request body of {length} bytes is over the limit of {self.max_body} bytes"
                    )
            try:  # an unknown model or version: answered before any body is read or parsed
                self._pipeline.admit(*target)
            except MLServeError as exc:
                return error_reply(exc)
            request = Request(target, length, header_length, routing_key, start)
            request.encoding = encoding
            return request
        except MLServeError as exc:
            if target is not None and exc.status_code != 404:
                # Failed before the service saw it (head, size): still the version's.
                self._accounting.count_failure(target[0], target[1], exc)
            return error_reply(exc)
        except Exception as exc:  # a bug: logged, answered 500 JSON
            return error_reply(exc)

    def refused(self, request: Request, exc: MLServeError) -> Reply:
        """The answer to a request whose body could not be read (size, time, JSON)."""
        self._accounting.count_failure(request.target[0], request.target[1], exc)
        return error_reply(exc)

    async def run(self, request: Request, body: bytes | bytearray) -> Reply:
        """Decode, route, run and encode one request whose whole body is ``body``."""
        served = False  # once the service has the request, it accounts failures itself
        model, version = request.target
        header_length = request.header_length
        pipeline = self._pipeline
        try:
            if request.encoding is not None:
                body = await inflate(request.encoding, body, self.max_body, self._offload)
            if header_length is None:
                offload = self._offload if len(body) >= DECODE_OFF_LOOP_FROM else None
                document = await self._parse(request, body, offload)
                served = True
                result = await pipeline.infer(
                    model, version, document, routing_key=request.routing_key,
                    body_bytes=len(body), offload=offload, trace=request.trace,
                )  # fmt: skip
            elif header_length == 0:
                served = True
                result = await pipeline.infer_raw(
                    model, version, memoryview(body), request.routing_key, request.trace
                )
            else:
                if header_length > len(body):
                    raise InvalidInput(
                        f"Inference-Header-Content-Length {header_length} is beyond the body "
                        f"of {len(body)} bytes",
                        reason="binary",
                    )
                view = memoryview(body)
                document = await self._parse(request, view[:header_length])
                served = True
                result = await pipeline.infer(
                    model, version, document, view[header_length:], request.routing_key,
                    len(body), trace=request.trace,
                )  # fmt: skip
            if sum(o.size for o in result.outputs) < _ENCODE_OFF_LOOP_FROM:
                payload = orjson.dumps(result.body, option=_DUMPS_OPTIONS)
            else:
                payload = await self._offload(_encode_in_steps, result.body)
        except MLServeError as exc:
            if not served:
                self._accounting.count_failure(model, version, exc)
            return error_reply(exc)
        except Exception as exc:  # a bug: logged, answered 500 JSON
            return error_reply(exc)
        endpoint = result.endpoint
        total_s = perf_counter() - request.start
        timing = _TIMING % (result.queue_s * 1e3, result.infer_s * 1e3, total_s * 1e3)
        if result.blobs:
            headers = [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", b"%d" % len(payload)),
            ]
            payload = b"".join((payload, *result.blobs))
        else:
            headers = [(b"content-type", b"application/json")]
        headers += [
            (b"content-length", b"%d" % len(payload)),
            (b"mlserve-model-version", endpoint.version_bytes),
            (b"mlserve-route", _ROLE_BYTES[result.role]),
            (b"server-timing", timing),
        ]
        return Reply(200, headers, payload, result, request.start)

    async def _offload(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, at most ``_OFF_LOOP_AT_ONCE`` at a time."""
        async with self._off_loop:
            return await to_thread(fn, *args)

    async def _parse(
        self,
        request: Request,
        data: bytes | bytearray | memoryview,
        offload: Callable[..., Any] | None = None,
    ) -> Any:
        """The JSON document, parsed on the event loop, or by ``offload`` (a big body). A
        large body is first scanned, without parsing, for more arrays, objects or values
        than a V2 request to the model can hold: such a body (63 MB of ``{}`` held the loop
        3.4–6.8 s) is refused with 413 without being parsed, the scan stopping where the
        bound is passed."""
        if len(data) > _SCAN_FROM:
            bound = _json_bound(self._store, *request.target)
            if bound is not None and len(data) >= bound[0]:  # smaller: cannot pass either
                if len(data) <= _SCAN_INLINE and _COMPILED_SCAN:
                    scan = json_counts(data, *bound, _MAX_DEPTH)
                else:
                    scan = await to_thread(json_counts, data, *bound, _MAX_DEPTH)
                containers, tokens, deep_at = scan
                if deep_at >= 0:  # what orjson would say, without reading the rest first
                    raise InvalidInput(
                        "malformed JSON body: depth limit exceeded: more than "
                        f"{_MAX_DEPTH} levels of arrays and objects at byte {deep_at}",
                        reason="json",
                    )
                if containers > bound[0] or tokens > bound[1]:
                    what = (
                        f"more than {bound[0]} JSON arrays and objects"
                        if containers > bound[0]
                        else f"more than {bound[1]} JSON values"
                    )
                    raise PayloadTooLarge(
                        f"request body holds {what}, more than a request to model "
                        f"{request.target[0]!r} can (its inputs' shapes, max_rows and "
                        "max_elements)"
                    )
        if offload is not None:
            return await offload(_loads, data)
        return _loads(data)

    def finish(self, reply: Reply) -> None:
        """Account a success (and payload-log it) after the answer left."""
        result = reply.result
        if result is not None and result.endpoint.observed:
            self._pipeline.record(result, perf_counter() - reply.start)

    # ------------------------------------------------------------------ the ASGI lane
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        head = self.head(scope["method"], scope["path"], scope["headers"])
        if isinstance(head, Reply):
            await _send(send, head)
            return
        try:
            body = await self._read_body(receive)
        except ClientDisconnected:
            return  # nobody to answer, nothing to count
        except MLServeError as exc:
            await _send(send, self.refused(head, exc))
            return
        reply = await self.run(head, body)
        await _send(send, reply)
        self.finish(reply)

    async def _read_body(self, receive: Any) -> bytes | bytearray:
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
            # One buffer grown in place: each read copies only its own bytes (joining a list
            # of chunks at the end copied a 63 MB body once more, on the loop).
            buffer = bytearray(body)
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnected("client disconnected before sending the body")
                chunk = message.get("body", b"")
                if len(buffer) + len(chunk) > self.max_body:
                    raise PayloadTooLarge(
                        f"request body is over the limit of {self.max_body} bytes"
                    )
                buffer += chunk
                if not message.get("more_body", False):
                    return buffer
        except CancelledError:
            error = self.deadlines.expired(task)
            if error is None:
                raise
            raise error from None
        finally:
            reading.pop(task, None)


def error_reply(exc: BaseException) -> Reply:
    """The JSON error answer for any exception (``errors.error_payload``)."""
    status, body, extra = error_payload(exc)
    return Reply(status, [*JSON_HEADERS, (b"content-length", b"%d" % len(body)), *extra], body)


async def _send(send: Any, reply: Reply) -> None:
    await send({"type": "http.response.start", "status": reply.status, "headers": reply.headers})
    await send({"type": "http.response.body", "body": reply.body})


def _encode_in_steps(body: dict[str, Any]) -> bytes:
    """``orjson.dumps(body)``, each output's data ``_ENCODE_OFF_LOOP_FROM`` elements a call
    (in a worker thread, the loop's thread takes the GIL between calls)."""
    token = "mlserve-data-" + os.urandom(8).hex()
    outputs: list[dict[str, Any]] = []
    datas: list[Any] = []  # numpy arrays, or lists of strings (BYTES)
    for tensor in body.get("outputs", ()):
        if "data" in tensor:
            outputs.append({**tensor, "data": f"{token}-{len(datas)}"})
            datas.append(tensor["data"])
        else:
            outputs.append(tensor)
    rest = orjson.dumps({**body, "outputs": outputs}, option=_DUMPS_OPTIONS)
    parts = []
    step = _ENCODE_OFF_LOOP_FROM
    for i, data in enumerate(datas):
        before, rest = rest.split(f'"{token}-{i}"'.encode(), 1)
        parts.append(before)
        parts.append(b"[")
        for at in range(0, len(data), step):
            if at:
                parts.append(b",")
            parts.append(orjson.dumps(data[at : at + step], option=_DUMPS_OPTIONS)[1:-1])
        parts.append(b"]")
    parts.append(rest)
    return b"".join(parts)


def _loads(data: bytes | bytearray | memoryview) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON body: {exc}", reason="json") from None


def _json_bound(
    store: ModelStore[Endpoint], model: str, version: int | None
) -> tuple[int, int] | None:
    """The most containers (arrays and objects) and tokens (``json_counts``: an upper bound
    on the values and keys) a V2 request to ``model`` (its ``version``; unpinned: any ready
    version) can hold; None when no version is found (``infer`` answers that).

    From the V2 shape rules, per input tensor of rank r: its elements are at most
    ``max_elements``, and the first dimension at most ``max_rows`` (fixed dimensions as
    declared); nested ``data`` holds one array per element of each shape prefix
    d0 × … × dk (k < r − 1), each at most ``max_elements`` (a prefix cannot exceed the
    element count unless a later dimension is 0: an empty tensor's nested arrays are held
    to the same limit), plus the outermost one; tokens are the elements plus two per array,
    and a fixed allowance per tensor for its keys, name, shape and parameters. BYTES inputs
    and columns count at most ``MAX_BYTES_ELEMENTS`` elements (the binary limit). Named
    feature columns ([n] or [n, 1], n ≤ max_rows) are counted besides the inputs; requested
    outputs and the request's own parameters and id have their allowance, and ``_SLACK_*``
    room is left."""
    endpoints = store.reachable(model, version)
    if not endpoints:
        return None
    bounds = [_endpoint_bound(e) for e in endpoints]
    return max(b[0] for b in bounds), max(b[1] for b in bounds)


def _endpoint_bound(endpoint: Endpoint) -> tuple[int, int]:
    session = endpoint.session
    limits = session.limits
    most, rows = limits.max_elements, limits.max_rows
    outputs = len(session.output_names)
    containers = _SLACK_CONTAINERS + 4 + 2 * outputs
    tokens = _SLACK_TOKENS + 16 * outputs
    for spec in session.input_specs.values():
        # BYTES: at most MAX_BYTES_ELEMENTS strings, so as many nested arrays too.
        limit = min(most, MAX_BYTES_ELEMENTS) if spec.datatype == "BYTES" else most
        elements, arrays, prefix = 1, 1, 1
        for k, d in enumerate(spec.shape):
            size = d if d != -1 else (rows if k == 0 else limit)
            elements = min(limit, elements * size)
            if k < len(spec.shape) - 1:
                prefix = min(limit, prefix * size)
                arrays += prefix
        containers += arrays + 3
        tokens += elements + 2 * arrays + 64 + len(spec.shape)
    schema = endpoint.schema
    if schema is not None:
        for feature in schema.features:
            column = min(rows, most)
            if feature.datatype == "BYTES":
                column = min(column, MAX_BYTES_ELEMENTS)
            containers += column + 4
            tokens += 3 * column + 70
    return containers, tokens


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


_NOT_ALLOWED = orjson.dumps(
    {"error": "method not allowed; use POST", "code": MethodNotAllowed.code}
)
_METHOD_NOT_ALLOWED = Reply(
    405,
    [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(_NOT_ALLOWED)),
        (b"allow", b"POST"),
    ],
    _NOT_ALLOWED,
)
