"""gRPC's standard health service, ``grpc.health.v1.Health`` (``Check`` and ``Watch``), on the
same server as ``inference.GRPCInferenceService``: what Kubernetes' ``grpc:`` probes and
``grpc_health_probe`` ask.

The service ``""`` (the server) and ``inference.GRPCInferenceService`` are ``SERVING`` when
the server is ready (the readiness of ``ServerReady`` and HTTP's ``/v2/health/ready``) and
``NOT_SERVING`` when not, draining included; any other name is unknown: ``Check`` answers
``NOT_FOUND``, ``Watch`` streams ``SERVICE_UNKNOWN``, as the protocol says
(grpc/doc/health-checking.md).

The two messages are built here from a ``descriptor_pb2`` file descriptor, in a descriptor
pool of this module's own (as ``_protocol`` keeps the inference messages in one): no
dependency on ``grpcio-health-checking``, and no collision with its ``grpc.health.v1`` when a
user's process imports it too, whichever protobuf implementation runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from ..serving.views import Views
from .status import decoding, refusing_undecodable, refusing_undecodable_stream

HEALTH_SERVICE = "grpc.health.v1.Health"
# The names Check and Watch know: the server as a whole, and the inference service.
KNOWN = ("", "inference.GRPCInferenceService")
# Watch re-reads readiness this often (seconds) and sends each change.
POLL_SECONDS = 0.5


def _file() -> descriptor_pb2.FileDescriptorProto:
    """grpc/health/v1/health.proto, the messages and the service, as a descriptor."""
    fdp = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="grpc/health/v1/health.proto", package="grpc.health.v1", syntax="proto3"
    )
    request = file.message_type.add(name="HealthCheckRequest")
    request.field.add(
        name="service",
        number=1,
        label=fdp.LABEL_OPTIONAL,
        type=fdp.TYPE_STRING,
        json_name="service",
    )
    response = file.message_type.add(name="HealthCheckResponse")
    status = response.enum_type.add(name="ServingStatus")
    for name, number in (
        ("UNKNOWN", 0),
        ("SERVING", 1),
        ("NOT_SERVING", 2),
        ("SERVICE_UNKNOWN", 3),  # used only by Watch
    ):
        status.value.add(name=name, number=number)
    response.field.add(
        name="status",
        number=1,
        label=fdp.LABEL_OPTIONAL,
        type=fdp.TYPE_ENUM,
        type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus",
        json_name="status",
    )
    service = file.service.add(name="Health")
    for method, streaming in (("Check", False), ("Watch", True)):
        service.method.add(
            name=method,
            input_type=".grpc.health.v1.HealthCheckRequest",
            output_type=".grpc.health.v1.HealthCheckResponse",
            server_streaming=streaming,
        )
    return file


POOL = descriptor_pool.DescriptorPool()
DESCRIPTOR = POOL.AddSerializedFile(_file().SerializeToString())
# The classes straight from the descriptors: protobuf's builder would also register them in the
# default symbol database, which its pure-Python implementation backs with the default pool,
# where grpcio-health-checking's health_pb2 would then find our file instead of its own.
HealthCheckRequest: Any = message_factory.GetMessageClass(
    DESCRIPTOR.message_types_by_name["HealthCheckRequest"]
)
HealthCheckResponse: Any = message_factory.GetMessageClass(
    DESCRIPTOR.message_types_by_name["HealthCheckResponse"]
)
SERVING: int = HealthCheckResponse.SERVING
NOT_SERVING: int = HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: int = HealthCheckResponse.SERVICE_UNKNOWN


class HealthRpcs:
    """``Check`` and ``Watch`` over the server's readiness. ``stopping`` says whether the
    gRPC server has begun to stop: from then on the status is ``NOT_SERVING`` and open
    ``Watch`` streams end (after saying so), so that they never hold the drain."""

    def __init__(self, views: Views, stopping: Callable[[], bool] = lambda: False) -> None:
        self._views = views
        self._stopping = stopping

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler that serves ``grpc.health.v1.Health``."""
        return grpc.method_handlers_generic_handler(
            HEALTH_SERVICE,
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    refusing_undecodable(self.check),
                    request_deserializer=decoding(HealthCheckRequest),
                    response_serializer=HealthCheckResponse.SerializeToString,
                ),
                "Watch": grpc.unary_stream_rpc_method_handler(
                    refusing_undecodable_stream(self.watch),
                    request_deserializer=decoding(HealthCheckRequest),
                    response_serializer=HealthCheckResponse.SerializeToString,
                ),
            },
        )

    def _over(self) -> bool:
        return self._views.shutting_down or self._stopping()

    def status(self) -> int:
        """The server's serving status (either known name)."""
        return SERVING if self._views.ready() and not self._over() else NOT_SERVING

    async def check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if request.service not in KNOWN:
            await context.abort(grpc.StatusCode.NOT_FOUND, _unknown(request.service))
        return HealthCheckResponse(status=self.status())

    async def watch(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        """The status at once, then each change; the stream ends when the server stops. An
        unknown service gets ``SERVICE_UNKNOWN`` and an open stream (the protocol's way: it
        would say when the service became known, which ours never does)."""
        known = request.service in KNOWN
        sent = self.status() if known else SERVICE_UNKNOWN
        yield HealthCheckResponse(status=sent)
        while not self._over():
            await asyncio.sleep(POLL_SECONDS)
            now = self.status() if known else SERVICE_UNKNOWN
            if now != sent:
                sent = now
                yield HealthCheckResponse(status=now)


def _unknown(service: str) -> str:
    shown = service if len(service) <= 200 else service[:200] + "…"
    return (
        f"unknown service {shown!r}: the health service knows {KNOWN[0]!r} (the server) "
        f"and {KNOWN[1]!r}"
    )
