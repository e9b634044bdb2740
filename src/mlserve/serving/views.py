"""What the server tells about itself and its models: liveness and readiness, server and
model metadata, a model's readiness with the reason when not ready, the monitor view (drift,
data quality, traffic) and the per-model state the event stream sends; and the version
facts the monitoring hub exports. Reads only: nothing here changes state."""

from __future__ import annotations

import dataclasses
from typing import Any

from .. import __version__
from ..config import ServerSettings
from ..errors import GateNotPassed, MLServeError, ModelNotReady
from ..monitoring.hub import MonitoringHub
from ..monitoring.monitor import REFERENCE_FILE
from ..monitoring.request_stats import OUTCOMES
from ..monitoring.snapshot import EndpointState
from ..registry.store import ModelStore, VersionState
from ..routing.guardrails import Verdict
from .endpoint import Endpoint

PLATFORM = "onnxruntime_onnx"
# The lineage facts the monitor endpoint repeats (the metadata endpoint has all of it).
_LINEAGE_SUMMARY = ("created_at", "model_sha256", "parent_version", "code_revision", "source")
EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration", "statistics"]


class Views:
    """Read-only answers about the server and its models."""

    def __init__(
        self,
        settings: ServerSettings,
        store: ModelStore[Endpoint],
        hub: MonitoringHub,
        verdicts: dict[str, Verdict],
    ) -> None:
        self.settings = settings
        self.store = store
        self.hub = hub
        self.verdicts = verdicts  # the guardrails' last verdict per model
        # Set when shutdown begins: readiness turns false, event streams end.
        self.shutting_down = False

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

    def model_ready(self, model: str, version: int | None) -> MLServeError | None:
        """None when the model (any version: unpinned requests have a version to go to) or
        the given version serves; else why not, as the error a request to it would get
        (loading, failed with its reason, refused by its gate, ...). An unknown model or
        version raises (404), as does a model whose files cannot be read (503)."""
        if version is None:
            self.store.record(model)
            try:
                self.store.split(model)
            except MLServeError as exc:
                return exc
            return None
        vrec = self.store.version_record(model, version)
        if vrec.state is VersionState.READY:
            blocked = self.store.gate_blocked.get(model, {})
            if version in blocked:  # a pinned request would be refused (409)
                return GateNotPassed(
                    f"model {model!r} version {version} may serve only as a shadow "
                    f"(require_gate = true): {blocked[version]}"
                )
            return None
        try:
            self.store.resolve(model, version)
        except MLServeError as exc:
            return exc
        return ModelNotReady(f"model {model!r} version {version} is {vrec.state.value}")

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
                "parameters": _describe(vrec.describe(), endpoint),
            }
        ready = record.ready_versions()
        default = self.store.resolve(model) if model in self.store.splits_view() else None
        versions = {}
        for v, r in sorted(record.versions.items()):
            ep = r.endpoint if isinstance(r.endpoint, Endpoint) else None
            versions[str(v)] = _describe(r.describe(), ep)
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
        verdict = self.verdicts.get(model)
        if verdict is not None:
            out["guardrails"] = dataclasses.asdict(verdict)
        for v in versions:
            key = f"{model}/{v}"
            entry = merged.endpoints.get(key) or EndpointState()
            stats = self.hub.endpoint(model, v)
            traffic = {
                role: {
                    "outcomes": dict(zip(OUTCOMES, state.outcomes, strict=True)),
                    "rows": state.rows,
                }
                for role, state in entry.roles.items()
            }
            item: dict[str, Any] = {"requests": traffic, "pending": entry.pending}
            vrec = record.versions.get(v)
            if vrec is not None and vrec.gate is not None:
                item["gate"] = {"passed": vrec.gate.passed, "reason": vrec.gate.reason}
            if vrec is not None and vrec.lineage is not None:  # where the version came from
                item["lineage"] = {k: vrec.lineage.get(k) for k in _LINEAGE_SUMMARY}
            shadow = merged.shadows.get(key)
            if shadow is not None:  # this version runs as a shadow: how it compares
                item["shadow"] = {
                    "requests": shadow.requests,
                    "errors": shadow.errors,
                    "dropped": shadow.dropped,
                    "rows": shadow.rows,
                    "disagree": shadow.disagree,
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
                    for section in (entry.monitor or {}).get("sections", {}).values()
                    for name, cls in section.get("classes", {}).items()
                }
            out["versions"][str(v)] = item
        if version is None:  # the versions that do not serve, and why
            unavailable = {
                str(v): {"state": r.state.value, "reason": r.reason}
                for v, r in sorted(record.versions.items())
                if r.state is not VersionState.READY
            }
            loading = self.store.loading
            if loading is not None and loading[0] == model:
                unavailable[str(loading[1])] = {"state": "loading", "reason": None}
            if unavailable:
                out["unavailable_versions"] = unavailable
        return out

    def models_state(self) -> dict[str, Any]:
        """Per model: the ready versions, the split in force and the guardrails' last verdict
        (judged on one worker: another worker's stream shows none)."""
        splits = self.store.splits_view()
        out: dict[str, Any] = {}
        for name, record in sorted(list(self.store.models.items()), key=lambda kv: kv[0]):
            split = splits.get(name)
            verdict = self.verdicts.get(name)
            blocked = self.store.gate_blocked.get(name, {})
            out[name] = {
                "ready_versions": [str(v) for v in record.ready_versions()],
                # require_gate: the ready versions kept from unpinned traffic, and why.
                "gate_blocked": {str(v): why for v, why in sorted(blocked.items())},
                # Why no version may take unpinned traffic (None while one may).
                "unservable": None if split is not None else self._unservable(name),
                "routing": None
                if split is None
                else {
                    "stable": split.stable.version,
                    "canary": split.canary.version if split.canary is not None else None,
                    "canary_weight": split.weight,
                    "shadows": [e.version for e in split.shadows],
                    "shadow_sample": split.shadow_sample,
                },
                "guardrails": {
                    "enabled": bool(record.config and record.config.guardrails.enabled),
                    "verdict": dataclasses.asdict(verdict) if verdict is not None else None,
                },
            }
        return out

    def _unservable(self, model: str) -> str:
        try:
            self.store.split(model)
        except MLServeError as exc:
            return str(exc)
        return ""


def version_facts(
    store: ModelStore[Endpoint],
) -> list[tuple[str, int, str, float | None, bool | None, bool]]:
    """Every known version's state, load time, gate result and whether it may take
    unpinned traffic (the monitoring hub's ``VersionFacts``)."""
    facts = []
    splits = store.splits_view()
    for name, record in list(store.models.items()):
        blocked = store.gate_blocked.get(name, {})
        for v, r in list(record.versions.items()):
            gate = r.gate.passed if r.gate is not None and r.gate.summary is not None else None
            servable = r.state is VersionState.READY and name in splits and v not in blocked
            facts.append((name, v, r.state.value, r.load_seconds, gate, servable))
    return facts


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
