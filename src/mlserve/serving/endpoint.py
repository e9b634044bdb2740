"""A loaded version as the request path sees it (``Endpoint``), built once at load
(``EndpointBuilder``), and a served request's result (``InferResult``)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..attribution import Occlusion, plan
from ..config import ModelConfig
from ..errors import ModelLoadError
from ..execution.base import Runner
from ..execution.runners import ThreadRunner, choose_runner
from ..governance.payloads import PayloadLogger, PayloadSink
from ..monitoring.hub import EndpointStats, MonitoringHub
from ..monitoring.monitor import REFERENCE_FILE, ModelMonitor
from ..monitoring.profile import load_profile
from ..registry.layout import LINEAGE_FILE
from ..runtime.columns import FeatureSchema
from ..runtime.session import ModelSession

log = logging.getLogger("mlserve")


@dataclass(eq=False)
class Endpoint:
    """One loaded version as the request path sees it; built once at load."""

    session: ModelSession
    runner: Runner
    model: str
    version: str
    version_bytes: bytes
    # None with monitoring off: nothing is recorded for this version.
    stats: EndpointStats | None
    # How explain requests are answered (attribution.py), or why they cannot be.
    occlusion: Occlusion | str = ""
    # Payload logging for this version (governance/payloads.py); None: nothing is logged.
    payloads: PayloadSink | None = None
    # Runs big explain batches of an inline version on the thread pool, off the event loop.
    explain_runner: Runner | None = None
    # The model's features by name (runtime/columns.py): named-column requests, metadata;
    # None when its features are not named (no reference profile or lineage names).
    schema: FeatureSchema | None = None
    # Whether ``Pipeline.record`` has anything to do: the transport's one check.
    observed: bool = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.observed = self.stats is not None or (
            self.payloads is not None and self.payloads.sample > 0
        )


@dataclass(slots=True)
class InferResult:
    """A response document, its binary blobs, and the facts the transport puts in headers."""

    body: dict[str, Any]
    endpoint: Endpoint
    role: str
    queue_s: float
    infer_s: float
    blobs: list[bytes]
    feeds: dict[str, np.ndarray]
    outputs: list[np.ndarray]
    names: Sequence[str]
    request: Any = None  # the request document (for payload logging's id and parameters)
    trace: Any = None  # the request's span (tracing on): its shadows' spans go under it


class EndpointBuilder:
    """Builds each loaded version's ``Endpoint`` (the store's ``prepare`` hook) and retires
    its monitoring when the version goes."""

    def __init__(
        self, hub: MonitoringHub, executor: Executor, payloads: PayloadLogger | None
    ) -> None:
        self.hub = hub
        self.executor = executor
        self.payloads = payloads
        self._payload_warned: set[str] = set()

    def prepare(self, session: ModelSession, config: ModelConfig) -> Endpoint:
        """Build the request path's view of a freshly loaded version (runs at load)."""
        runner = choose_runner(session, config.batching, self.executor)
        stats = None
        profile: dict[str, Any] | str | None
        if self.hub.enabled:
            profile = _profile(session)
            schema = _schema(session, profile)
            monitor = ModelMonitor.build(
                session.inputs,
                session.outputs,
                config.monitoring,
                profile,
                session.output_names,
                schema=schema,
            )
            stats = self.hub.register(session.model, session.version, runner, monitor)
        else:  # monitoring off: a bad profile only turns explanations off, as before
            try:
                profile = _profile(session)
            except ModelLoadError as exc:
                profile = str(exc)
            schema = _schema(session, profile)
        return Endpoint(
            session,
            runner,
            session.model,
            str(session.version),
            str(session.version).encode(),
            stats,
            plan(session, config.monitoring, profile, schema),
            self._payload_sink(session, config),
            ThreadRunner(session, self.executor, config.batching.max_queue)
            if runner.kind == "inline"
            else None,
            schema,
        )

    def retired(self, endpoint: Endpoint) -> None:
        """The store's ``on_retire`` hook: the version's monitoring goes with it."""
        if endpoint.stats is not None:
            self.hub.retire(endpoint.stats)

    def _payload_sink(self, session: ModelSession, config: ModelConfig) -> PayloadSink | None:
        if self.payloads is not None:
            return self.payloads.sink(
                session.model,
                session.version,
                config.payloads,
                list(session.input_specs),
                session.output_names,
            )
        if config.payloads.sample > 0 and session.model not in self._payload_warned:
            self._payload_warned.add(session.model)
            log.warning(
                "%s: [payloads] sample = %s but the server has no payload directory "
                "(--payload-dir / MLSERVE_PAYLOAD_DIR): nothing is logged",
                session.model,
                config.payloads.sample,
            )
        return None


def _schema(session: ModelSession, profile: Any) -> FeatureSchema | None:
    """The version's named features: the reference profile's feature names, else lineage's."""
    names: list[str] | None = None
    if isinstance(profile, dict):
        entries = sorted(profile["features"], key=lambda e: e["column"])
        names = [e["name"] for e in entries]
    else:
        lineage = _lineage(session)
        found = lineage.get("input", {}).get("features") if isinstance(lineage, dict) else None
        if isinstance(found, list) and all(isinstance(n, str) for n in found):
            names = found
    return FeatureSchema.from_inputs(session.inputs, names)


def _lineage(session: ModelSession) -> Any:
    try:
        return json.loads((session.path.parent / LINEAGE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _profile(session: ModelSession) -> dict[str, Any] | None:
    path = session.path.parent / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        return load_profile(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{REFERENCE_FILE} is invalid: {exc}") from exc
