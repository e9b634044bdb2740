"""The inference pipeline between transport and runtime: resolve → validate → run → encode.

Transport code (``http/``) parses bytes into a request document (and, with the
binary extension, a buffer of tensor bytes), calls ``InferenceService.infer`` and
serialises what it returns. Nothing here knows HTTP. Per-version work that does
not depend on the request (the runner, header values) is done at load, in
``prepare``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from . import __version__
from .batching.runners import Runner, ThreadRunner, choose_runner
from .config import GuardrailConfig, ModelConfig, ServerSettings
from .errors import (
    GateNotPassed,
    InvalidInput,
    MLServeError,
    ModelLoadError,
    NotExplainable,
    Overloaded,
    ServerNotReady,
    Unavailable,
)
from .explain import Explanation, Occlusion, plan
from .governance.audit import AuditLog
from .governance.payloads import PayloadLogger, PayloadSink
from .monitoring.hub import EndpointStats, MonitoringHub
from .monitoring.metrics import ERROR, INVALID, OUTCOMES, REFUSED, REJECTED, SUCCESS, quantile
from .monitoring.monitor import REFERENCE_FILE, ModelMonitor
from .monitoring.profile import load_profile
from .registry.layout import LINEAGE_FILE
from .registry.store import ModelStore, RoutingChange, VersionState
from .routing import controller
from .routing.controller import View
from .routing.fleet import FleetUnavailable, PrometheusSource
from .routing.guardrails import Guard, Verdict, decide, judge
from .routing.policy import PINNED, STABLE
from .routing.shadow import ShadowMirror
from .routing.state import ROUTING_FILE, RoutingState, state_dir_of
from .runtime.binary import binary_size, decode_binary, encode_binary, raw_shape
from .runtime.columns import FeatureSchema, cast_column, listed
from .runtime.session import ModelSession
from .runtime.tensors import V2_TO_NUMPY, TensorSpec, decode_json, encode_json

log = logging.getLogger("mlserve")

PLATFORM = "onnxruntime_onnx"
# The lineage facts the monitor endpoint repeats (the metadata endpoint has all of it).
_LINEAGE_SUMMARY = ("created_at", "model_sha256", "parent_version", "code_revision", "source")
EXTENSIONS = ["binary_tensor_data", "model_repository"]


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
    # How explain requests are answered (explain.py), or why they cannot be.
    occlusion: Occlusion | str = ""
    # Payload logging for this version (governance/payloads.py); None: nothing is logged.
    payloads: PayloadSink | None = None
    # Runs big explain batches of an inline version on the thread pool, off the event loop.
    explain_runner: Runner | None = None
    # The model's features by name (runtime/columns.py): named-column requests, metadata;
    # None when its features are not named (no reference profile or lineage names).
    schema: FeatureSchema | None = None
    # Whether ``InferenceService.record`` has anything to do: the transport's one check.
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


class InferenceService:
    """Requests in, responses out, over a ``ModelStore``."""

    def __init__(self, settings: ServerSettings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        threads = settings.inference_threads or len(os.sched_getaffinity(0))
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mlserve-infer")
        self.store: ModelStore[Endpoint] = ModelStore(
            settings, self.prepare, on_retire=self._retired
        )
        self.registry = registry if registry is not None else CollectorRegistry()
        self.hub = MonitoringHub(
            self.registry,
            self._version_facts,
            enabled=settings.monitoring == "on",
            state_dir=settings.worker_dir,
        )
        self.hub.load_failures = lambda: self.store.load_failures
        self.hub.shadow_sources.append(self._shadow_state)
        self.hub.extra_sources.append(self._routing_state)
        self._mirrors: dict[str, ShadowMirror] = {}
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
        self.guard = Guard()
        self._guard_checked: dict[str, float] = {}
        self._guard_actions: dict[str, int] = {}
        # "model/version/outcome" → explain requests (mlserve_explain_requests_total).
        self._explained: dict[str, int] = {}
        self.hub.extra_sources.append(lambda: {"explain_requests": dict(self._explained)})
        self.payloads: PayloadLogger | None = None
        if settings.payload_dir:
            self.payloads = PayloadLogger(
                settings.payload_dir,
                max_bytes=settings.payload_max_bytes,
                backups=settings.payload_backups,
                max_queue=settings.payload_queue,
            )
            self.hub.extra_sources.append(self.payloads.state)
        self._payload_warned: set[str] = set()
        self.shutting_down = False
        # Load shedding: the share of new infer/explain requests to refuse, set by the app's
        # event-loop watch while the loop runs later than settings.overload_delay_ms.
        self.shed_share = 0.0
        self.loop_delay_s = 0.0
        self.shed = 0  # requests refused for that reason (mlserve_overload_rejections_total)
        self.hub.extra_sources.append(
            lambda: {
                "overload_rejections": self.shed,
                "loop": {"delay_seconds": self.loop_delay_s},
                # Every worker scans the same directory: merged by maximum, like load failures.
                "registry": {"scan_failures": self.store.scan_failures},
            }
        )

    def shed_this(self) -> bool:
        """Whether load shedding refuses this request (only called while shedding)."""
        return random.random() < self.shed_share

    def refuse_overloaded(self) -> Overloaded:
        """The error for a request refused by load shedding (counted here)."""
        self.shed += 1
        return Overloaded(
            f"server overloaded: the event loop is running {self.loop_delay_s * 1e3:.0f} ms "
            "late; retry later"
        )

    def prepare(self, session: ModelSession, config: ModelConfig) -> Endpoint:
        """Build the request path's view of a freshly loaded version (runs at load)."""
        runner = choose_runner(session, config.batching, self._executor)
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
            ThreadRunner(session, self._executor, config.batching.max_queue)
            if runner.kind == "inline"
            else None,
            schema,
        )

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

    def _retired(self, endpoint: Endpoint) -> None:
        if endpoint.stats is not None:
            self.hub.retire(endpoint.stats)

    def _version_facts(self) -> list[tuple[str, int, str, float | None, bool | None, bool]]:
        facts = []
        splits = self.store.splits_view()
        for name, record in list(self.store.models.items()):
            blocked = self.store.gate_blocked.get(name, {})
            for v, r in list(record.versions.items()):
                gate = r.gate.passed if r.gate is not None and r.gate.summary is not None else None
                servable = r.state is VersionState.READY and name in splits and v not in blocked
                facts.append((name, v, r.state.value, r.load_seconds, gate, servable))
        return facts

    # ------------------------------------------------------------------ health and metadata
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready once the initial registry load has finished, until shutdown begins.

        With several workers every worker must have loaded: connections land on any of
        them, so one worker's readiness alone would send traffic to a loading one.
        """
        if not self.store.loaded or self.shutting_down:
            return False
        name = self.settings.model_name
        if name and name not in self.store.splits_view():
            return False  # serving one model (KServe) that has nothing to serve is not ready
        workers = self.settings.workers
        return workers <= 1 or self.hub.ready_workers() >= workers

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "mlserve", "version": __version__, "extensions": EXTENSIONS}

    def model_ready(self, model: str, version: int | None) -> bool:
        """Whether the model (any version) or the given version serves; unknown → 404."""
        if version is None:  # ready: unpinned requests have a version to go to
            self.store.record(model)
            return model in self.store.splits_view()
        return self.store.version_record(model, version).state is VersionState.READY

    def model_metadata(self, model: str, version: int | None) -> dict[str, Any]:
        """V2 model metadata; ``parameters`` carry each version's state, runtime and lineage."""
        record = self.store.record(model)
        if version is not None:
            vrec = self.store.version_record(model, version)
            endpoint = self.store.resolve(model, version)
            return {
                "name": model,
                "versions": [str(version)],
                "platform": PLATFORM,
                "inputs": [s.metadata() for s in endpoint.session.inputs],
                "outputs": [s.metadata() for s in endpoint.session.outputs],
                "parameters": self._describe(vrec.describe(), endpoint),
            }
        ready = record.ready_versions()
        default = self.store.resolve(model) if model in self.store.splits_view() else None
        versions = {}
        for v, r in sorted(record.versions.items()):
            ep = r.endpoint if isinstance(r.endpoint, Endpoint) else None
            versions[str(v)] = self._describe(r.describe(), ep)
        params: dict[str, Any] = {
            "default_version": default.version if default else None,
            "versions": versions,
            "gate_required": bool(record.config and record.config.gate.require_gate),
        }
        if default is not None:
            split = self.store.split(model)
            params["routing"] = {
                "stable": split.stable.version,
                "canary": split.canary.version if split.canary is not None else None,
                "canary_weight": split.weight,
            }
        if record.config_error:
            params["config_error"] = record.config_error
        if default is not None and default.schema is not None:
            params["features"] = default.schema.metadata()
        session = default.session if default else None
        return {
            "name": model,
            "versions": [str(v) for v in ready],
            "platform": PLATFORM,
            "inputs": [s.metadata() for s in session.inputs] if session else [],
            "outputs": [s.metadata() for s in session.outputs] if session else [],
            "parameters": params,
        }

    @staticmethod
    def _describe(info: dict[str, Any], endpoint: Endpoint | None) -> dict[str, Any]:
        if endpoint is not None:
            info["execution_mode"] = endpoint.runner.kind
            if endpoint.schema is not None:  # what a named-column request may send
                info["features"] = endpoint.schema.metadata()
            occlusion = endpoint.occlusion
            info["explain"] = (
                {"available": False, "reason": occlusion}
                if isinstance(occlusion, str)
                else {"available": True, "method": "occlusion"}
            )
        return info

    # ------------------------------------------------------------------ inference
    def admit(self, model: str, version: int | None) -> None:
        """Refuse, before its body is read or parsed, a request no version could serve: the
        errors ``infer`` would raise for a loading server or an unknown model or version."""
        if not self.store.loaded:
            raise ServerNotReady("the server is still loading its models")
        try:
            if version is None:
                self.store.split(model)
            else:
                self.store.resolve(model, version)
        except MLServeError as exc:
            if exc.status_code == 404:
                raise
            # Others (a model not ready, a gate refusal) are raised, and counted, by infer.

    async def infer(
        self,
        model: str,
        version: int | None,
        request: Any,
        binary: memoryview | None = None,
        routing_key: str | None = None,
        body_bytes: int | None = None,
    ) -> InferResult:
        """Validate a V2 request (with its binary tensor bytes, if any) and run it.

        Without a version, the model's split picks stable or canary; the routing key is the
        ``mlserve-routing-key`` header (``routing_key``) or ``parameters.routing_key``.
        ``body_bytes`` (the request body's length) sizes a failure's payload record.
        """
        if not self.store.loaded:
            raise ServerNotReady("the server is still loading its models")
        endpoint, role = self._counted_target(model, version, _routing_key(request, routing_key))
        feeds: dict[str, np.ndarray] | None = None
        try:
            if not isinstance(request, dict):
                raise InvalidInput("the request body must be a JSON object", reason="json")
            session = endpoint.session
            feeds = self._feeds(endpoint, request.get("inputs"), binary)
            names, binary_out = self._outputs(session, request)
            request_id = request.get("id")
            if request_id is not None and not isinstance(request_id, str):
                raise InvalidInput("'id' must be a string", reason="json")
            outputs, queue_s, infer_s = await endpoint.runner.run(feeds, names)
        except MLServeError as exc:
            self._failed(endpoint, role, exc, request, feeds, body_bytes)
            raise
        return self._respond(
            endpoint,
            role,
            request_id,
            names or session.output_names,
            outputs,
            binary_out,
            queue_s,
            infer_s,
            feeds,
            request,
        )

    def _target(self, model: str, version: int | None, key: str | None) -> tuple[Endpoint, str]:
        if version is not None:
            endpoint = self.store.resolve(model, version)
            blocked = self.store.gate_blocked.get(model)
            if blocked and version in blocked:
                raise GateNotPassed(
                    f"model {model!r} version {version} may serve only as a shadow "
                    f"(require_gate = true): it {blocked[version]}"
                )
            return endpoint, PINNED
        return self.store.split(model).pick(key)

    def _counted_target(
        self, model: str, version: int | None, key: str | None
    ) -> tuple[Endpoint, str]:
        """``_target`` for inference: a gate refusal (409) is counted as the ``refused``
        outcome of the version refused (unpinned: the highest ready one), so an outage made
        by a failing gate shows in ``mlserve_requests_total``."""
        try:
            return self._target(model, version, key)
        except GateNotPassed:
            ready = self.store.ready_endpoints(model)
            refused = (
                ready.get(version) if version is not None else ready.get(max(ready, default=0))
            )
            if refused is not None and refused.stats is not None:
                refused.stats.roles[PINNED if version is not None else STABLE].failure(REFUSED)
            raise

    def _failed(
        self,
        endpoint: Endpoint,
        role: str,
        exc: MLServeError,
        request: Any = None,
        feeds: dict[str, np.ndarray] | None = None,
        body_bytes: int | None = None,
    ) -> None:
        if endpoint.payloads is not None:
            endpoint.payloads.failure(role, exc, request, feeds, body_bytes)
        stats = endpoint.stats
        if stats is None:
            return
        outcome = _outcome(exc)
        stats.roles[role].failure(outcome)
        if outcome == INVALID:  # the client's fault: counted by reason too
            self.hub.rejected(stats, exc.reason if isinstance(exc, InvalidInput) else "size")

    def count_shed(self, model: str, version: int | None) -> None:
        """Account a request refused by load shedding: the version's ``rejected`` outcome
        (what the overload alert watches) and nothing else (no payload record: shedding
        is when the server can least afford extra work)."""
        try:
            endpoint = self.store.resolve(model, version)
        except MLServeError:
            return
        if endpoint.stats is not None:
            endpoint.stats.roles[STABLE if version is None else PINNED].failure(REJECTED)

    def count_failure(self, model: str, version: int | None, exc: MLServeError) -> None:
        """Account a request that failed before the service saw it (body, JSON, size)."""
        try:
            endpoint = self.store.resolve(model, version)
        except MLServeError:
            return  # unknown or unavailable: no per-version series for it
        self._failed(endpoint, STABLE if version is None else PINNED, exc)

    def record(self, result: InferResult, total_s: float) -> None:
        """Account a successful request (after its answer was sent): payload log, stats,
        drift windows."""
        payloads = result.endpoint.payloads
        if payloads is not None:
            payloads.success(result, total_s)
        stats = result.endpoint.stats
        if stats is None:
            return
        feeds = result.feeds
        rows = len(feeds[result.endpoint.session.inputs[0].name])
        stats.roles[result.role].success(total_s, result.queue_s, result.infer_s, rows)
        monitor = stats.monitor
        if monitor is not None:
            if monitor.segment_parameter is None:
                monitor.observe(feeds, result.names, result.outputs, rows)
            else:
                params = result.request.get("parameters") if result.request else None
                segment = (
                    params.get(monitor.segment_parameter) if isinstance(params, dict) else None
                )
                monitor.observe(feeds, result.names, result.outputs, rows, segment)
        if result.role != PINNED:
            self._mirror(result)

    def _mirror(self, result: InferResult) -> None:
        """Offer an unpinned request to the model's shadows (after its answer was sent)."""
        endpoint = result.endpoint
        split = self.store.split(endpoint.model)
        shadows = [e for e in split.shadows if e is not endpoint]
        if not shadows:
            return
        record = self.store.models.get(endpoint.model)
        size = record.routing.shadow_queue if record is not None else 256
        mirror = self._mirrors.get(endpoint.model)
        if mirror is None or mirror.max_queue != size:  # new, or resized by a routing change
            if mirror is not None:
                mirror.stop()
            mirror = self._mirrors[endpoint.model] = ShadowMirror(size, mirror)
        mirror.offer(shadows, split.shadow_sample, result.feeds, result.names, result.outputs)

    def _shadow_state(self) -> dict[str, Any]:
        return {
            key: comparison.state()
            for mirror in list(self._mirrors.values())
            for key, comparison in list(mirror.comparisons.items())
        }

    async def explain(
        self,
        model: str,
        version: int | None,
        request: Any,
        routing_key: str | None = None,
    ) -> Explanation:
        """Feature attributions for a V2 inference request (``explain.py``).

        The version is chosen and the inputs validated exactly as ``infer`` does; one
        occlusion batch runs through the version's runner. Explanations are counted in
        ``mlserve_explain_requests_total`` only: never as inference traffic, never in drift
        windows, never mirrored.
        """
        if not self.store.loaded:
            raise ServerNotReady("the server is still loading its models")
        endpoint, role = self._target(model, version, _routing_key(request, routing_key))
        try:
            occlusion = endpoint.occlusion
            if isinstance(occlusion, str):
                raise NotExplainable(occlusion)
            if not isinstance(request, dict):
                raise InvalidInput("the request body must be a JSON object", reason="json")
            session = endpoint.session
            feeds = self._feeds(endpoint, request.get("inputs"), None)
            outputs = occlusion.chosen(request.get("parameters"), session.output_names)
            request_id = request.get("id")
            if request_id is not None and not isinstance(request_id, str):
                raise InvalidInput("'id' must be a string", reason="json")
            x = occlusion.table(feeds)
            runner = endpoint.runner
            if endpoint.explain_runner is not None and x.shape[0] * (x.shape[1] + 1) >= 256:
                # An occlusion batch is rows × (features + 1) rows: a small request can be a
                # big run, which must not hold the event loop (and health probes) up.
                runner = endpoint.explain_runner
            found, queue_s, infer_s = await occlusion.explain(runner, x, outputs, session.limits)
        except MLServeError as exc:
            self._count_explain(endpoint, _outcome(exc))
            raise
        except Exception:  # a bug: answered 500 by the transport, counted here
            self._count_explain(endpoint, ERROR)
            raise
        self._count_explain(endpoint, SUCCESS)
        body: dict[str, Any] = {"model_name": endpoint.model, "model_version": endpoint.version}
        if request_id is not None:
            body["id"] = request_id
        body.update(found)
        return Explanation(body, endpoint.version, role, queue_s, infer_s)

    def _count_explain(self, endpoint: Endpoint, outcome: int) -> None:
        key = f"{endpoint.model}/{endpoint.version}/{OUTCOMES[outcome]}"
        self._explained[key] = self._explained.get(key, 0) + 1

    async def infer_raw(
        self, model: str, version: int | None, body: memoryview, routing_key: str | None = None
    ) -> InferResult:
        """A raw binary body for a single-input model (header length 0); binary outputs."""
        if not self.store.loaded:
            raise ServerNotReady("the server is still loading its models")
        endpoint, role = self._counted_target(model, version, routing_key)
        session = endpoint.session
        feeds: dict[str, np.ndarray] | None = None
        try:  # every failure from here on is the version's: accounted and payload-logged
            if len(session.inputs) != 1:
                raise InvalidInput(
                    f"a raw binary body needs a model with one input; {model!r} has "
                    f"{len(session.inputs)}",
                    reason="binary",
                )
            spec = session.inputs[0]
            shape = raw_shape(spec, len(body))
            tensor = {"name": spec.name, "datatype": spec.datatype, "shape": list(shape)}
            feeds = {spec.name: decode_binary(spec, tensor, body, session.limits)}
            outputs, queue_s, infer_s = await endpoint.runner.run(feeds, None)
        except MLServeError as exc:
            self._failed(endpoint, role, exc, None, feeds)
            raise
        binary_out = [True] * len(outputs)
        return self._respond(
            endpoint,
            role,
            None,
            session.output_names,
            outputs,
            binary_out,
            queue_s,
            infer_s,
            feeds,
        )

    @staticmethod
    def _respond(
        endpoint: Endpoint,
        role: str,
        request_id: str | None,
        names: Sequence[str],
        outputs: list[np.ndarray],
        binary_out: list[bool] | None,
        queue_s: float,
        infer_s: float,
        feeds: dict[str, np.ndarray],
        request: Any = None,
    ) -> InferResult:
        blobs: list[bytes] = []
        if binary_out is None:
            encoded = [encode_json(n, a) for n, a in zip(names, outputs, strict=True)]
        else:
            encoded = []
            for name, array, binary in zip(names, outputs, binary_out, strict=True):
                if binary:
                    blob = encode_binary(array)
                    blobs.append(blob)
                    tensor = encode_json(name, array, with_data=False)
                    tensor["parameters"] = {"binary_data_size": len(blob)}
                    encoded.append(tensor)
                else:
                    encoded.append(encode_json(name, array))
        body: dict[str, Any] = {
            "model_name": endpoint.model,
            "model_version": endpoint.version,
            "outputs": encoded,
        }
        if request_id is not None:
            body["id"] = request_id
        return InferResult(
            body, endpoint, role, queue_s, infer_s, blobs, feeds, outputs, names, request
        )

    @staticmethod
    def _feeds(endpoint: Endpoint, inputs: Any, binary: memoryview | None) -> dict[str, np.ndarray]:
        """The model's tensors from the request's: its own inputs in their own datatypes
        here; anything else (named columns, other datatypes) through ``_converted_feeds``."""
        if not isinstance(inputs, list) or not inputs:
            raise InvalidInput("'inputs' must be a non-empty list of tensors", reason="json")
        session = endpoint.session
        feeds: dict[str, np.ndarray] = {}
        specs = session.input_specs
        offset = 0
        for tensor in inputs:
            if not isinstance(tensor, dict):
                raise InvalidInput("each input must be a JSON object", reason="json")
            name = tensor.get("name")
            spec = specs.get(name) if isinstance(name, str) else None
            if spec is None or tensor.get("datatype") != spec.datatype:
                return _converted_feeds(endpoint, inputs, binary)
            if spec.name in feeds:
                raise InvalidInput(f"input {name!r} is given more than once", reason="name")
            size = binary_size(tensor) if "parameters" in tensor else None
            try:
                if size is None:
                    feeds[spec.name] = decode_json(spec, tensor, session.limits)
                    continue
                feeds[spec.name] = decode_binary(
                    spec, tensor, _blob(spec.name, binary, offset, size), session.limits
                )
            except InvalidInput as exc:  # a one-column input sent as a column, shape [n]
                schema = endpoint.schema
                if exc.reason != "shape" or schema is None or schema.single:
                    raise
                return _converted_feeds(endpoint, inputs, binary)
            offset += size
        if len(feeds) != len(specs):
            missing = sorted(set(specs) - set(feeds))
            raise InvalidInput(f"missing input(s) {missing}", reason="name")
        _all_claimed(binary, offset)
        if len(feeds) > 1:
            _same_rows(endpoint.schema, feeds)
        return feeds

    @staticmethod
    def _outputs(session: ModelSession, request: dict[str, Any]) -> tuple[list[str] | None, Any]:
        """Requested output names (None: all) and which go binary (None: none)."""
        params = request.get("parameters")
        all_binary = isinstance(params, dict) and params.get("binary_data_output") is True
        requested = request.get("outputs")
        if requested is None:
            return None, ([True] * len(session.output_names) if all_binary else None)
        if not isinstance(requested, list):
            raise InvalidInput("'outputs' must be a list of {\"name\": ...} objects", reason="json")
        names: list[str] = []
        binary: list[bool] = []
        for item in requested:
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str):
                raise InvalidInput("each requested output needs a string 'name'", reason="json")
            if name not in session.output_set:
                raise InvalidInput(
                    f"unknown output {name[:64]!r}; the model's outputs are {session.output_names}",
                    reason="name",
                )
            if name in names:
                raise InvalidInput(f"output {name!r} is requested more than once", reason="name")
            names.append(name)
            out_params = item.get("parameters")
            flag = out_params.get("binary_data") if isinstance(out_params, dict) else None
            binary.append(all_binary if flag is None else flag is True)
        if not names:
            return None, ([True] * len(session.output_names) if all_binary else None)
        return names, (binary if any(binary) else None)

    def monitor(self, model: str, version: int | None) -> dict[str, Any]:
        """Drift, data quality and traffic for a model's versions (or one), merged over
        workers."""
        record = self.store.record(model)
        versions = [version] if version is not None else record.ready_versions()
        if version is not None:
            self.store.resolve(model, version)  # 404/503 as for inference
        merged = self.hub.merged()
        reports = self.hub.reports(merged)
        out: dict[str, Any] = {"model": model, "monitoring": self.hub.enabled, "versions": {}}
        verdict = self.guard.last.get(model)
        if verdict is not None:
            out["guardrails"] = dataclasses.asdict(verdict)
        for v in versions:
            key = f"{model}/{v}"
            entry = merged.get("endpoints", {}).get(key, {})
            stats = self.hub.endpoint(model, v)
            traffic = {
                role: {
                    "outcomes": dict(zip(OUTCOMES, state["outcomes"], strict=True)),
                    "rows": state["rows"],
                }
                for role, state in entry.get("roles", {}).items()
            }
            item: dict[str, Any] = {"requests": traffic, "pending": entry.get("pending", 0)}
            vrec = record.versions.get(v)
            if vrec is not None and vrec.gate is not None:
                item["gate"] = {"passed": vrec.gate.passed, "reason": vrec.gate.reason}
            if vrec is not None and vrec.lineage is not None:  # where the version came from
                item["lineage"] = {k: vrec.lineage.get(k) for k in _LINEAGE_SUMMARY}
            shadow = merged.get("shadows", {}).get(key)
            if shadow is not None:  # this version runs as a shadow: how it compares
                item["shadow"] = {
                    k: shadow[k] for k in ("requests", "errors", "dropped", "rows", "disagree")
                }
            if stats is None or stats.monitor is None:
                item["drift"] = None
                item["note"] = (
                    "monitoring is off"
                    if not self.hub.enabled
                    else f"no {REFERENCE_FILE} for this version: drift and data quality need a "
                    "reference profile"
                )
            else:
                item["drift"] = reports.get(key)
                item["predictions"] = {
                    name: dict(
                        zip([str(x) for x in [*cls["levels"], "other"]], cls["counts"], strict=True)
                    )
                    for section in entry.get("monitor", {}).get("sections", {}).values()
                    for name, cls in section.get("classes", {}).items()
                }
            out["versions"][str(v)] = item
        return out

    # ------------------------------------------------------------------ guardrails
    def check_guardrails(self) -> list[Verdict]:
        """Judge every canary whose model has guardrails on and is due; act on breaches.

        Runs off the event loop (it reads the workers' snapshots). Returns the verdicts.
        """
        now = Guard.now()
        due = []
        for name, record in list(self.store.models.items()):
            config = record.config
            if config is None or not config.guardrails.enabled:
                continue
            if now - self._guard_checked.get(name, -1e9) >= config.guardrails.check_seconds:
                due.append((name, record, config.guardrails))
        if not due:
            return []
        merged = self.hub.merged()
        reports = self.hub.reports(merged)
        endpoints = merged.get("endpoints", {})
        verdicts = []
        for name, record, rules in due:
            self._guard_checked[name] = now
            try:
                split = self.store.split(name)
            except MLServeError:
                continue
            if split.canary is None or split.weight <= 0:
                self.guard.forget(name)
                continue
            # Any routing change starts over: a new canary or weight, and also a rollback and
            # the same canary again written by another replica between two checks here.
            path = state_dir_of(name, record.path, self.settings.state_dir) / ROUTING_FILE
            seen = (split.canary.version, split.weight, _file_identity(path))
            if self.guard.split_seen.get(name) != seen:
                self.guard.forget(name)
                self.guard.split_seen[name] = seen
            c_key, s_key = f"{name}/{split.canary.version}", f"{name}/{split.stable.version}"
            windows = []
            for key, role in ((c_key, "canary"), (s_key, "stable")):
                state = endpoints.get(key, {}).get("roles", {}).get(role)
                windows.append(
                    self.guard.windowed(f"{key}:{role}", state, rules.window_seconds, now)
                    if state
                    else None
                )
            stable_v, drift = int(split.stable.version), bool(reports.get(c_key, {}).get("alert"))
            since = self.guard.healthy_since.get(name)
            verdict, note = None, ""
            if rules.source == "prometheus":  # the fleet's figures; this replica's if unreadable
                fleet = PrometheusSource(rules.prometheus_url, rules.prometheus_timeout_seconds)
                try:
                    canary, stable = fleet.figures(name, int(split.canary.version), stable_v)
                except FleetUnavailable as exc:
                    note = f"fleet figures unavailable: {exc}; judged on this replica's traffic"
                else:
                    verdict = judge(
                        name, record.routing, stable_v, canary, stable, drift, rules, since, now
                    )
                    verdict.source = "prometheus"
                    verdict.source_note = f"the fleet's recording rules at {fleet.name}"
            if verdict is None:
                verdict = decide(
                    name,
                    record.routing,
                    stable_v,
                    windows[0],
                    windows[1],
                    drift,
                    rules,
                    since,
                    now,
                    quantile,
                )
                verdict.source_note = note
            if verdict.action == "none":
                self.guard.healthy_since.setdefault(name, now)
            elif verdict.action in ("rollback", "step", "promote"):
                self._guard_act(name, verdict, rules)
            self.guard.last[name] = verdict
            verdicts.append(verdict)
        return verdicts

    def _guard_act(self, name: str, verdict: Verdict, config: GuardrailConfig) -> None:
        def transition(state: RoutingState, view: View) -> RoutingState:
            routing = view.routing(state)
            if routing.canary != verdict.canary:  # changed meanwhile: the verdict is stale
                return state
            if verdict.action == "rollback":
                return controller.rollback(state, view)
            higher = sorted(w for w in config.steps if w > routing.canary_weight)
            if verdict.action == "step" and higher and higher[0] < 100:
                return controller.step(higher[0])(state, view)
            return controller.promote(state, view)

        def audited(change: RoutingChange) -> None:  # before it takes effect (store)
            before, after = change.audit_record()
            self.audit.append("guardrails", verdict.action, name, before, after, change.cause)

        source = verdict.source + (f" ({verdict.source_note})" if verdict.source_note else "")
        change = self.store.update_routing(
            name, transition, audited, cause=f"guardrails: {verdict.reason}; source: {source}"
        )
        if change.before == change.after:
            return
        key = f"{name}/{verdict.action}"
        self._guard_actions[key] = self._guard_actions.get(key, 0) + 1
        if verdict.action == "step":
            self.guard.healthy_since[name] = Guard.now()  # the next step waits again
        else:
            self.guard.forget(name)
        log.warning(
            "guardrails: %s %s (canary v%s): %s; source: %s",
            verdict.action,
            name,
            verdict.canary,
            verdict.reason,
            source,
        )

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

    def _routing_state(self) -> dict[str, Any]:
        weights = {}
        for name in list(self.store.models):
            try:
                split = self.store.split(name)
            except MLServeError:
                continue
            weights[name] = split.weight if split.canary is not None else 0.0
        return {"canary_weight": weights, "guardrail_actions": dict(self._guard_actions)}

    def close(self) -> None:
        self.shutting_down = True
        for mirror in self._mirrors.values():
            mirror.stop()
        self._executor.shutdown(wait=True, cancel_futures=False)
        if self.payloads is not None:
            self.payloads.close()  # drains: what was queued is written


def _file_identity(path: Path) -> tuple[int, int, int]:
    """Inode, size and modification time of ``path`` (zeros when it does not exist)."""
    try:
        st = path.stat()
    except OSError:
        return (0, 0, 0)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


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


def _blob(name: str, binary: memoryview | None, offset: int, size: int) -> memoryview:
    """The bytes of input ``name`` in the binary part."""
    if binary is None:
        raise InvalidInput(
            f"input {name!r} has binary_data_size but the request has no binary part "
            "(Inference-Header-Content-Length)",
            reason="binary",
        )
    if offset + size > len(binary):
        raise InvalidInput(
            f"input {name!r}: binary_data_size {size} runs past the end of the body "
            f"({len(binary) - offset} bytes remain)",
            reason="binary",
        )
    return binary[offset : offset + size]


def _all_claimed(binary: memoryview | None, offset: int) -> None:
    if binary is not None and offset != len(binary):
        raise InvalidInput(
            f"the binary part has {len(binary) - offset} bytes that no input claims",
            reason="binary",
        )


def _converted_feeds(
    endpoint: Endpoint, inputs: list[Any], binary: memoryview | None
) -> dict[str, np.ndarray]:
    """Requests that are not the model's own tensors in its own datatypes: inputs in another
    datatype, cast under ``[inputs] cast``; or one tensor per feature column (shape ``[n]``
    or ``[n, 1]``, the pandas-codec convention), mapped by name onto the model's inputs."""
    session = endpoint.session
    schema = endpoint.schema
    limits = session.limits
    specs = session.input_specs
    feeds: dict[str, np.ndarray] = {}
    columns: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in inputs:
        if not isinstance(tensor, dict):
            raise InvalidInput("each input must be a JSON object", reason="json")
        name = tensor.get("name")
        if not isinstance(name, str):
            raise InvalidInput("each input needs a string 'name'", reason="json")
        if name in feeds or name in columns:
            raise InvalidInput(f"input {name!r} is given more than once", reason="name")
        spec = specs.get(name)
        shape = tensor.get("shape")
        # A feature column: not an input, or a one-column input sent as [n].
        is_column = (
            schema is not None
            and name in schema
            and (spec is None or (type(shape) is list and len(shape) != len(spec.shape)))
        )
        if spec is None and not is_column:
            known = f"the model's inputs are {sorted(specs)}"
            if schema is not None and schema.single:
                known += f"; its feature columns are {listed(schema.names)}"
            elif schema is None:
                known += (
                    " (named feature columns need the version's feature names: "
                    "publish it with a reference profile)"
                )
            raise InvalidInput(f"unknown input {name[:64]!r}; {known}", reason="name")
        datatype = tensor.get("datatype")
        if not isinstance(datatype, str) or datatype not in V2_TO_NUMPY:
            if not isinstance(datatype, str):
                raise InvalidInput(
                    f"input {name!r}: 'datatype' is missing or not a string", reason="datatype"
                )
            if spec is not None:
                message = f"input {name!r} expects datatype {spec.datatype}, got {datatype[:32]}"
            else:
                message = (
                    f"column {name!r}: unknown datatype {datatype[:32]!r} "
                    f"(one of {', '.join(V2_TO_NUMPY)})"
                )
            raise InvalidInput(message, reason="datatype")
        if is_column:
            rank = len(shape) if type(shape) is list and len(shape) in (1, 2) else 1
            sent = TensorSpec(name, datatype, (-1,) if rank == 1 else (-1, 1))
        else:
            assert spec is not None
            sent = TensorSpec(name, datatype, spec.shape)
        size = binary_size(tensor) if "parameters" in tensor else None
        if size is None:
            array = decode_json(sent, tensor, limits)
        else:
            array = decode_binary(sent, tensor, _blob(name, binary, offset, size), limits)
            offset += size
        if is_column:
            columns[name] = array
        else:
            assert spec is not None
            feeds[name] = cast_column(name, array, spec.datatype, limits.cast)
    _all_claimed(binary, offset)
    if columns:
        assert schema is not None
        if feeds and schema.single:
            raise InvalidInput(
                f"send either the model's input {sorted(specs)} or its feature columns, not both",
                reason="name",
            )
        have = [*columns, *(f.name for f in schema.features if f.input in feeds)]
        schema.check_names(have)
        if schema.single:  # the columns become one tensor: the element limit applies to it
            rows = next(iter(columns.values())).shape[0]
            if rows * len(schema) > limits.max_elements:
                raise InvalidInput(
                    f"{len(schema)} columns of {rows} rows make {rows * len(schema)} elements "
                    f"for input {schema.inputs[0].name!r}, over the limit of "
                    f"{limits.max_elements}",
                    reason="size",
                )
        for key, array in schema.feeds(
            {**columns, **{n: feeds[n] for n in have if n not in columns}}, limits.cast
        ).items():
            feeds[key] = array
    if len(feeds) != len(specs):
        missing = sorted(set(specs) - set(feeds))
        raise InvalidInput(f"missing input(s) {missing}", reason="name")
    _same_rows(schema, feeds)
    return feeds


def _same_rows(schema: FeatureSchema | None, feeds: dict[str, np.ndarray]) -> None:
    """A model with one input per feature takes the same rows in each (onnxruntime would
    fail inside the graph, a 500)."""
    if schema is None or schema.single:
        return
    if any(s.shape != (-1, 1) for s in schema.inputs):  # not a table of columns: no rule
        return
    rows = {a.shape[0] if a.ndim else 1 for a in feeds.values()}
    if len(rows) > 1:
        counts = {k: (a.shape[0] if a.ndim else 1) for k, a in feeds.items()}
        raise InvalidInput(
            f"the inputs must hold the same number of rows, got {counts}", reason="shape"
        )


def _profile(session: ModelSession) -> dict[str, Any] | None:
    path = session.path.parent / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        return load_profile(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{REFERENCE_FILE} is invalid: {exc}") from exc


def _outcome(exc: MLServeError) -> int:
    """How a failed request counts: invalid (4xx), rejected (503/504) or error."""
    if 400 <= exc.status_code < 500:
        return INVALID
    if isinstance(exc, Unavailable) or exc.status_code == 504:
        return REJECTED
    return ERROR


def _routing_key(request: Any, header: str | None) -> str | None:
    """The routing key: the ``mlserve-routing-key`` header, else ``parameters.routing_key``."""
    if header is None and isinstance(request, dict):
        params = request.get("parameters")
        if isinstance(params, dict) and isinstance(params.get("routing_key"), str):
            return str(params["routing_key"])
    return header
