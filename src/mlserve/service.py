"""The composition root of the serving core: builds its parts once and holds them.

``InferenceService`` makes the store, the monitoring hub, the audit log and the payload
logger from the server's settings, and composes the parts of ``serving/`` over them: the
endpoint builder (the store's load hook), the pipeline (with accounting and shadows), the
load shedder, the views and the guardrail actions. Transports take this object and call
its parts; nothing here knows HTTP, and no request passes through a method of its own.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from .config import ServerSettings
from .governance.audit import AuditLog
from .governance.gate import gate_status
from .governance.payloads import PayloadLogger
from .monitoring.hub import MonitoringHub
from .monitoring.snapshot import ServingSection
from .registry.store import ModelStore
from .serving.accounting import Accounting
from .serving.endpoint import Endpoint, EndpointBuilder, InferResult
from .serving.guardrail_actions import GuardrailActions
from .serving.mirroring import Shadows
from .serving.pipeline import Pipeline
from .serving.shedder import LoadShedder
from .serving.views import Views, version_facts
from .tracing import start as start_tracing

if TYPE_CHECKING:
    from .tracing.spans import Tracing

__all__ = ["Endpoint", "InferResult", "InferenceService"]

log = logging.getLogger("mlserve")


class InferenceService:
    """The serving core's parts, built from ``settings`` over one ``ModelStore``."""

    def __init__(
        self,
        settings: ServerSettings,
        registry: CollectorRegistry | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        # The tracer when tracing is on (the transports make a span per request), else None;
        # ``tracing`` given (tests: an in-memory exporter) is used whatever the settings say.
        self.tracing = tracing if tracing is not None else start_tracing(settings.tracing)
        threads = settings.inference_threads or len(os.sched_getaffinity(0))
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mlserve-infer")
        self.registry = registry if registry is not None else CollectorRegistry()
        self.hub = MonitoringHub(
            self.registry,
            lambda: version_facts(self.store),
            enabled=settings.monitoring == "on",
            state_dir=settings.worker_dir,
        )
        self.payloads: PayloadLogger | None = None
        if settings.payload_dir:
            self.payloads = PayloadLogger(
                settings.payload_dir,
                max_bytes=settings.payload_max_bytes,
                backups=settings.payload_backups,
                max_queue=settings.payload_queue,
            )
        self.endpoints = EndpointBuilder(self.hub, self._executor, self.payloads)
        self.store: ModelStore[Endpoint] = ModelStore(
            settings,
            self.endpoints.prepare,
            on_retire=self.endpoints.retired,
            read_gate=gate_status,
        )
        self.hub.load_failures = lambda: self.store.load_failures
        if settings.state_dir:  # routing state and the audit log live there
            try:
                Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.error("state directory cannot be created: %s", exc.strerror)
        self.audit = AuditLog(
            Path(settings.audit_log)
            if settings.audit_log
            else (Path(settings.state_dir) if settings.state_dir else settings.registry)
            / "audit.jsonl"
        )
        self.accounting = Accounting(self.store, self.hub)
        self.shadows = Shadows(self.store)
        self.pipeline = Pipeline(self.store, self.accounting, self.shadows)
        self.shedder = LoadShedder()
        self.guardrails = GuardrailActions(settings, self.store, self.hub, self.audit)
        self.views = Views(settings, self.store, self.hub, self.guardrails.guard.last)
        # The request API is the pipeline's (bound here: no call through this object).
        self.infer = self.pipeline.infer
        self.infer_raw = self.pipeline.infer_raw
        self.explain = self.pipeline.explain
        self.hub.sources.extend(
            (
                self.shadows,
                self.guardrails,
                self.accounting,
                _ServingFacts(self.shedder, self.store),
            )
        )
        if self.payloads is not None:
            self.hub.sources.append(self.payloads)

    def audit_registry_changes(self, changes: list[str]) -> None:
        """Audit what a registry scan loaded, reloaded, failed or retired, and every change
        of who serves it made (before → after, with its cause). One worker writes them:
        every worker sees the same directory."""
        moved = self.store.take_routing_changes()
        if not self.hub.leader():
            return
        for change in changes:
            model = change.split(":", 1)[0].split(" ", 1)[0]
            self.audit.append("registry", "sync", model, None, change)
        for routing in moved:
            before, after = routing.audit_record()
            action = "pin" if routing.after != routing.before else "serving"
            self.audit.append("registry", action, routing.model, before, after, routing.cause)

    def close(self) -> None:
        """Stop: readiness false, shadows stopped, in-flight runs finished, payloads drained."""
        self.views.shutting_down = True
        self.shadows.stop()
        self._executor.shutdown(wait=True, cancel_futures=False)
        if self.payloads is not None:
            self.payloads.close()  # drains: what was queued is written
        if self.tracing is not None:
            self.tracing.shutdown()  # exports the spans still buffered


class _ServingFacts:
    """The monitoring hub's source for load shedding and the registry scan."""

    def __init__(self, shedder: LoadShedder, store: ModelStore[Endpoint]) -> None:
        self.shedder = shedder
        self.store = store

    def snapshot_section(self) -> ServingSection:
        return ServingSection(
            self.shedder.refused, self.shedder.loop_delay_s, self.store.scan_failures
        )
