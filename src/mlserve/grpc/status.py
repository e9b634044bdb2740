"""The serving core's errors as gRPC statuses: one table from the HTTP status an error
carries (``errors.py``) to a gRPC code, the same message as HTTP's error body, and the
error's stable ``code`` in trailing metadata. An unavailable answer carries a
``google.rpc.RetryInfo`` (one second, HTTP's ``Retry-After: 1``). Bytes that are not the
RPC's request message are ``INVALID_ARGUMENT`` naming the message (``decoding``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from ..errors import InvalidInput, MLServeError
from ._protocol import RpcAny, RpcDuration, RpcRetryInfo, RpcStatus

log = logging.getLogger("mlserve.grpc")

# HTTP status (``MLServeError.status_code``) → gRPC status code.
CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    414: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    431: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
    505: grpc.StatusCode.UNIMPLEMENTED,  # HTTP only: a request line of another version
    507: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
ERROR_CODE_KEY = "mlserve-error-code"
_RETRY_AFTER_S = 1

Metadata = tuple[tuple[str, str | bytes], ...]


def grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str, Metadata]:
    """The gRPC code, message and trailing metadata for any exception; an unknown one is
    logged and answered ``INTERNAL`` "internal server error", as HTTP answers 500."""
    if not isinstance(exc, MLServeError):
        log.error("internal error", exc_info=exc)
        return grpc.StatusCode.INTERNAL, "internal server error", ((ERROR_CODE_KEY, "internal"),)
    code = CODES.get(exc.status_code, grpc.StatusCode.INTERNAL)
    metadata: Metadata = ((ERROR_CODE_KEY, exc.code),)
    if code is grpc.StatusCode.UNAVAILABLE and exc.headers:  # HTTP's Retry-After
        retry = RpcRetryInfo(retry_delay=RpcDuration(seconds=_RETRY_AFTER_S))
        details = RpcStatus(
            code=code.value[0],
            message=exc.message,
            details=[RpcAny(type_url=RETRY_INFO_TYPE, value=retry.SerializeToString())],
        )
        metadata += ((STATUS_DETAILS_KEY, details.SerializeToString()),)
    return code, exc.message, metadata


class Undecodable:
    """What ``decoding``'s deserializer gives for bytes that are not the request message."""

    __slots__ = ("error",)

    def __init__(self, error: InvalidInput) -> None:
        self.error = error


Context = grpc.aio.ServicerContext[Any, Any]


def decoding(cls: Any) -> Callable[[bytes], Any]:
    """A request deserializer for message class ``cls`` that never raises: grpc.aio answers
    a deserializer's exception ``UNKNOWN`` and logs a traceback for what is a client's
    error. Handlers wrapped by ``refusing_undecodable`` answer it ``INVALID_ARGUMENT``."""
    name = cls.DESCRIPTOR.full_name

    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except Exception as exc:  # protobuf's DecodeError
            return Undecodable(InvalidInput(f"the message is not a valid {name}: {exc}"))

    return parse


def refusing_undecodable(
    fn: Callable[[Any, Context], Awaitable[Any]],
) -> Callable[[Any, Context], Awaitable[Any]]:
    """A unary handler that answers an undecodable request ``INVALID_ARGUMENT``."""

    async def handle(request: Any, context: Context) -> Any:
        if isinstance(request, Undecodable):
            await context.abort(*grpc_status(request.error))
        return await fn(request, context)

    return handle


def refusing_undecodable_stream(
    fn: Callable[[Any, Context], AsyncIterator[Any]],
) -> Callable[[Any, Context], AsyncIterator[Any]]:
    """A server-streaming handler that answers an undecodable request ``INVALID_ARGUMENT``."""

    async def handle(request: Any, context: Context) -> AsyncIterator[Any]:
        if isinstance(request, Undecodable):
            await context.abort(*grpc_status(request.error))
        async for message in fn(request, context):
            yield message

    return handle
