"""The ASGI application: the lean infer handler in front of a Starlette app.

``create_app`` takes the serving core's composition root (``service.InferenceService``, or
the settings to build one from) and puts the transport over it. The top-level callable
sends infer requests straight to ``InferHandler`` and everything else (health, metadata,
lifespan) to Starlette; the lifespan runs the background tasks (registry load and watch,
guardrails, the loop watch that drives load shedding, the workers' snapshot publishing).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator
from time import perf_counter
from types import FrameType
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from ..config import ServerSettings
from ..errors import MLServeError
from ..registry.watcher import RegistryWatcher
from ..service import InferenceService
from . import admin, dashboard, docs, explain, monitor, openapi, v2
from .body_timeout import BodyDeadlines
from .errors import error_response
from .infer import INFER_PREFIX, INFER_SUFFIX, InferHandler
from .traced import TracedInferHandler

log = logging.getLogger("mlserve.http")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class MLServeApp:
    """ASGI entry point; ``service`` and ``store`` are exposed for embedding and tests."""

    def __init__(self, service: InferenceService) -> None:
        settings = service.settings
        self.settings = settings
        self.service = service
        self.store = service.store
        self.deadlines = BodyDeadlines(settings.body_timeout_seconds)
        handler = InferHandler if self.service.tracing is None else TracedInferHandler
        self.infer = handler(self.service, settings.max_body_bytes, self.deadlines)
        self.starlette = Starlette(
            routes=[
                *v2.routes(self.service),
                *explain.routes(self.service, settings.max_body_bytes),
                *monitor.routes(self.service),
                *dashboard.routes(),
                *admin.routes(self.service, settings.admin_token, self.service.audit),
                *openapi.routes(self.store),
                *docs.routes(),
            ],
            exception_handlers={
                HTTPException: error_response,
                MLServeError: error_response,
                Exception: error_response,
            },
            lifespan=self._lifespan,
        )
        self._loading: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._guard: asyncio.Task[None] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if (
            path.endswith(INFER_SUFFIX)
            and path.startswith(INFER_PREFIX)
            and scope["type"] == "http"
        ):
            await self.infer(scope, receive, send)
        elif scope["type"] == "http" and scope["method"] in _BODY_METHODS:
            # Admin and explain read their bodies through Starlette: timed until complete.
            await self.starlette(scope, self.deadlines.guard(receive, perf_counter()), send)
        else:
            await self.starlette(scope, receive, send)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # Load in the background so liveness answers while big models load; readiness
        # turns true when the initial load has finished.
        self._loading = asyncio.create_task(asyncio.to_thread(self.store.load_all))
        self._loading.add_done_callback(self._loaded)
        publisher = None
        if self.service.hub.state_dir is not None:
            publisher = asyncio.create_task(self._publish_forever())
        self._see_stop_signals()
        self.deadlines.start()
        watch = None
        if self.settings.overload_delay_ms > 0:
            watch = asyncio.create_task(
                self.service.shedder.watch(self.settings.overload_delay_ms / 1e3)
            )
        try:
            yield
        finally:
            self.deadlines.stop()
            self.service.views.shutting_down = True
            if not self._loading.done():
                self._loading.cancel()
            self.service.hub.mark_ready(False)
            if self._watcher is not None:
                self._watcher.cancel()
            if self._guard is not None:
                self._guard.cancel()
            if watch is not None:
                watch.cancel()
            if publisher is not None:
                publisher.cancel()
                await asyncio.to_thread(self.service.hub.publish)  # final counts stay counted
            self.service.close()

    def _see_stop_signals(self) -> None:
        """Mark the service as stopping the moment SIGTERM/SIGINT arrives, then let uvicorn's
        own handler drain. Readiness turns false at once and open event streams end, instead
        of holding the drain for its whole length (the lifespan's shutdown only runs after
        the connections have closed)."""

        def chain(previous: Any) -> Any:
            def handler(signum: int, frame: FrameType | None) -> None:
                self.service.views.shutting_down = True
                previous(signum, frame)

            return handler

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if callable(previous):  # uvicorn's handle_exit, restored by uvicorn at exit
                try:
                    signal.signal(sig, chain(previous))
                except ValueError:  # not the main thread (an embedding app): nothing to do
                    return

    def _loaded(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        if task.exception() is not None:  # serve what loaded; the watcher retries the rest
            log.error("registry load failed", exc_info=task.exception())
        self.service.hub.mark_ready()
        # The stable versions the initial load pinned, audited off the event loop.
        asyncio.get_running_loop().run_in_executor(None, self.service.audit_registry_changes, [])
        if self.settings.poll_seconds > 0:
            watcher = RegistryWatcher(
                self.store, self.settings.poll_seconds, self.service.audit_registry_changes
            )
            self._watcher = asyncio.get_running_loop().create_task(watcher.run())
        self._guard = asyncio.get_running_loop().create_task(self._guard_forever())
        # Everything allocated so far (modules, sessions, metadata) lives as long as the
        # process: move it out of the collector's generations so full collections under
        # load only walk request garbage.
        gc.freeze()

    async def _guard_forever(self) -> None:
        """Guardrails, on one worker only (the leader), twice a second; each model is
        judged at its own check interval."""
        while True:
            await asyncio.sleep(0.5)
            try:
                if self.service.hub.leader():
                    await asyncio.to_thread(self.service.guardrails.check)
            except Exception:  # one failed check must not stop the later ones
                log.exception("guardrail check failed")

    async def _publish_forever(self) -> None:
        """Share this worker's monitoring snapshot with the other workers once a second."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await asyncio.to_thread(self.service.hub.publish)
            except OSError as exc:
                log.warning("could not publish monitoring state: %s", exc)


def create_app(core: InferenceService | ServerSettings) -> MLServeApp:
    """The application over ``core``, the serving core's composition root (built from it
    when given settings); models load when the lifespan starts."""
    if isinstance(core, ServerSettings):
        core = InferenceService(core)
    return MLServeApp(core)


def app_from_environ() -> MLServeApp:
    """Factory for ``uvicorn --factory``: settings from ``MLSERVE_*`` (used by each worker)."""
    return create_app(ServerSettings.load())
