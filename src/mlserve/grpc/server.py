"""A ``grpc.aio`` server for a worker: started on the worker's event loop beside HTTP, on
the shared gRPC port (every worker binds it with SO_REUSEPORT, grpc's default on Linux, and
the kernel spreads connections), drained with HTTP on a stop signal. Beside
``inference.GRPCInferenceService`` it serves ``grpc.health.v1.Health`` (``health``)."""

from __future__ import annotations

import asyncio
import logging

import grpc

from ..config import ServerSettings
from ..service import InferenceService
from .handlers import InferenceRpcs
from .health import HealthRpcs

log = logging.getLogger("mlserve.grpc")


class GrpcServer:
    """The gRPC transport of one worker over its ``InferenceService``."""

    def __init__(self, service: InferenceService, settings: ServerSettings) -> None:
        self.settings = settings
        self.rpcs = InferenceRpcs(service)
        self.health = HealthRpcs(service.views, lambda: self._stopping is not None)
        self.port = settings.grpc_port
        self._server: grpc.aio.Server | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Bind and start serving (on the running loop); a port that cannot be bound is an
        error that names it."""
        server = grpc.aio.server(
            options=[
                # The HTTP body limit; a bigger message is refused by grpc with
                # RESOURCE_EXHAUSTED before it reaches the core.
                ("grpc.max_receive_message_length", self.settings.max_body_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 1),
            ]
        )
        server.add_generic_rpc_handlers((self.rpcs.handler(), self.health.handler()))
        host = self.settings.host
        address = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"gRPC cannot listen on {address}: {exc}") from exc
        if bound == 0:
            raise OSError(f"gRPC cannot listen on {address} (in use by another program?)")
        await server.start()
        self._server = server
        self._loop = asyncio.get_running_loop()
        log.info("gRPC Open Inference Protocol on %s", address)

    def stop_soon(self) -> None:
        """Begin the drain (a stop signal arrived; callable from a signal handler): no new
        RPCs from now on, in-flight ones get ``drain_seconds``, as HTTP's."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._begin_stop)

    def _begin_stop(self) -> None:
        if self._server is not None and self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(
                self._server.stop(self.settings.drain_seconds)
            )

    async def stop(self) -> None:
        """Drain (if no signal began it) and wait until the server has stopped."""
        self._begin_stop()
        if self._stopping is not None:
            await self._stopping
