"""Running the application under uvicorn, with one or several worker processes, and a
bound on how long a process may take to exit after a stop signal."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import warnings
from types import FrameType
from typing import Any

import uvicorn

from .config import ServerSettings
from .grpc import GrpcServer
from .http.app import create_app
from .http.connection import AsgiConnection, HttpConnection
from .runtime.session import terminate_runs

log = logging.getLogger("mlserve")

# After the drain, runs still in onnxruntime are told to stop; a process that has still not
# exited this many seconds later exits at once (a thread in onnxruntime cannot be killed).
EXIT_BOUND_S = 5.0
STARTUP_FAILURE = 3  # uvicorn's exit status when the server cannot start


def serve(settings: ServerSettings) -> int:
    """Serve until SIGINT/SIGTERM; in-flight requests get ``drain_seconds`` to finish.

    Workers rebuild the settings from ``MLSERVE_*`` variables, so the parent exports them.
    """
    worker_dir = None
    if settings.workers > 1 and not settings.worker_dir:
        # Workers publish monitoring snapshots here; /metrics on any worker sums them.
        worker_dir = tempfile.mkdtemp(prefix="mlserve-workers-")
        settings = dataclasses.replace(settings, worker_dir=worker_dir)
    os.environ.update(settings.to_environ())
    os.environ["MLSERVE_REGISTRY"] = str(settings.registry.resolve())
    configure_logging(settings)
    if not _can_listen(settings.host, settings.port):
        return STARTUP_FAILURE
    # Workers bind the gRPC port with SO_REUSEPORT to share it; bound here without it, the
    # check refuses a port another process holds (another mlserve too, which would
    # otherwise silently take half the connections).
    if settings.grpc_port and not _can_listen(settings.host, settings.grpc_port, "gRPC"):
        return STARTUP_FAILURE
    # JSON numbers beyond FP32/FP16 range overflow when cast; the request is refused by the
    # NaN policy (or accepted as ±Inf where allowed), so numpy's warning is noise here.
    warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning)
    # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal to the handler that was
    # installed before it; make that handler a clean exit so a graceful stop exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    uvicorn.run(
        "mlserve.server:app_with_exit_bound",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        loop="uvloop",
        # Our own HTTP/1.1 protocol (http/connection.py): limits and timeouts on request
        # heads, and infer requests answered by the fast lane unless it is off.
        http=HttpConnection if settings.fast_lane == "on" else AsgiConnection,
        # The request-head size limit of connection.py: uvicorn's own setting (h11 only)
        # carries it to every worker process.
        h11_max_incomplete_event_size=settings.max_header_bytes,
        lifespan="on",
        access_log=False,
        server_header=False,
        # No X-Forwarded-* rewriting: mlserve logs no client addresses, and the middleware
        # costs every request a layer.
        proxy_headers=False,
        timeout_graceful_shutdown=math.ceil(settings.drain_seconds),  # 0: no drain
    )
    if worker_dir is not None:
        shutil.rmtree(worker_dir, ignore_errors=True)
    return 0


def configure_logging(settings: ServerSettings) -> None:
    """mlserve's log records to stderr at ``log_level``, one line each, with the process id
    when several workers write to the same stream."""
    pid = " [%(process)d]" if settings.workers > 1 else ""
    logging.basicConfig(
        level=settings.log_level.upper() if settings.log_level != "trace" else logging.DEBUG,
        format=f"%(asctime)s %(levelname)s %(name)s{pid}: %(message)s",
        force=True,  # `mlserve demo` configured logging for the build already
    )


def _can_listen(host: str, port: int, transport: str = "HTTP") -> bool:
    """Whether ``host:port`` can be bound now; if not, log why with the address.

    uvicorn names the address only when one process binds it (several workers: a bare
    ``[Errno 98] Address already in use``), and one worker loads every model first."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            log.error(
                "%scannot listen on %s: %s; stop what listens there or choose another %s",
                "gRPC " if transport == "gRPC" else "",
                address,
                exc.strerror or exc,
                "--grpc-port" if transport == "gRPC" else "--port",
            )
            return False
    return True


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def app_with_exit_bound() -> ExitBound:
    """Factory for uvicorn (each worker): the application of the ``MLSERVE_*`` settings
    under an ``ExitBound``, with the worker's gRPC server when ``grpc_port`` is set.

    A worker process of several starts afresh, so it configures logging as ``serve`` did."""
    settings = ServerSettings.load()
    if settings.workers > 1:
        configure_logging(settings)
    app = create_app(settings)
    grpc = GrpcServer(app.service, settings) if settings.grpc_port else None
    return ExitBound(app, settings.drain_seconds, grpc)


class ExitBound:
    """An ASGI application whose process ends at the latest ``drain_seconds`` +
    ``EXIT_BOUND_S`` after SIGTERM or SIGINT, whatever onnxruntime is running: at the end
    of the drain every session's runs are told to stop (``terminate_runs``), and a process
    still alive ``EXIT_BOUND_S`` later exits with status 1, saying why. Without this, a
    runaway run on a thread (a request, a warm-up) holds the exit forever: the interpreter
    joins its threads before it exits.

    With a ``GrpcServer`` it also runs the worker's gRPC transport: started on the worker's
    loop once the application has started, draining from the stop signal on (beside
    HTTP's drain), stopped before the application's shutdown closes the core."""

    def __init__(self, app: Any, drain_seconds: float, grpc: GrpcServer | None = None) -> None:
        self.app = app  # the name the fast lane looks for (fast_lane.find_infer)
        self.drain_seconds = drain_seconds
        self.grpc = grpc
        self._armed = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            self._see_stop_signals()
            if self.grpc is not None:
                await self.app(scope, self._grpc_receive(receive), self._grpc_send(send))
                return
        await self.app(scope, receive, send)

    def _grpc_send(self, send: Any) -> Any:
        grpc = self.grpc
        assert grpc is not None

        async def lifespan_send(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                try:
                    await grpc.start()
                except OSError as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
            await send(message)

        return lifespan_send

    def _grpc_receive(self, receive: Any) -> Any:
        grpc = self.grpc
        assert grpc is not None

        async def lifespan_receive() -> Any:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await grpc.stop()
            return message

        return lifespan_receive

    def _see_stop_signals(self) -> None:
        # At lifespan start uvicorn's handlers are in place (in every worker): chain ours
        # before them; uvicorn restores its predecessors when it exits.
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue

            def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
                self.arm()
                if self.grpc is not None:
                    self.grpc.stop_soon()
                previous(signum, frame)

            try:
                signal.signal(sig, handler)
            except ValueError:  # not the main thread (an embedding app): nothing to do
                return

    def arm(self) -> None:
        """Start the countdown (once): a stop signal arrived."""
        if self._armed.is_set():
            return
        self._armed.set()
        threading.Thread(target=self._countdown, name="mlserve exit bound", daemon=True).start()

    def _countdown(self) -> None:
        start = time.monotonic()
        time.sleep(self.drain_seconds)
        told = terminate_runs()
        log.info("drain over: runs of %d sessions told to stop", told)
        time.sleep(EXIT_BOUND_S)
        left = sorted(t.name for t in threading.enumerate() if t is not threading.current_thread())
        log.error(
            "exiting now, %.1f s after the stop signal (drain %g s + %g s): the process had "
            "not ended (threads left: %s)",
            time.monotonic() - start,
            self.drain_seconds,
            EXIT_BOUND_S,
            ", ".join(left),
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)
