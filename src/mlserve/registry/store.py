"""Model versions and their states: loading, ready, failed, retired.

The store scans the registry, loads each selected version fully (session built,
warmed up, within its deadline) before it takes traffic, and publishes the ready set
as fresh dictionaries swapped in one assignment, so request threads never see a half
update. Loads run outside the state lock: routing changes and views never wait for
one. It knows neither HTTP nor metric objects.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..config import (
    MODEL_CONFIG_FILE,
    GateConfig,
    ModelConfig,
    RoutingConfig,
    ServerSettings,
    load_model_config,
)
from ..errors import (
    ConfigError,
    GateNotPassed,
    MLServeError,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    VersionNotFound,
    storage_error,
)
from ..routing.controller import (
    Serving,
    Transition,
    View,
    intended_stable,
    needs_pin,
    pin,
    resolve,
)
from ..routing.policy import Split
from ..routing.state import (
    ROUTING_FILE,
    ROUTING_LOCK_FILE,
    RoutingState,
    read_state,
    state_dir_of,
)
from ..runtime.session import ModelSession, load_version
from .changes import ChangeDetector
from .layout import (
    VALIDATION_FILE,
    GateStatus,
    ModelDir,
    VersionDir,
    commit_staged,
    file_lock,
    leaving_registry,
    remove_durably,
    remove_stale_staged,
    scan_registry,
    stage_file,
)

log = logging.getLogger("mlserve.registry")

# An absolute path in a message (``/x/y``, not ``a/b`` or ``1/2``), up to a quote or space.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~<>-])/[^\s'\"]+")


class VersionState(str, Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    RETIRED = "retired"


@dataclass
class VersionRecord:
    """What the server knows about one version, whatever its state."""

    model: str
    version: int
    state: VersionState
    reason: str | None = None
    session: ModelSession | None = None
    # What the request path uses for this version (built by the store's ``prepare`` hook).
    endpoint: Any = None
    lineage: dict[str, Any] | None = None
    load_seconds: float | None = None
    loaded_at: float | None = None
    # The validation gate as read at load (validation.json against model.toml [gate]).
    gate: GateStatus | None = None

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"state": self.state.value}
        if self.reason:
            info["reason"] = self.reason
        if self.load_seconds is not None:
            info["load_seconds"] = round(self.load_seconds, 4)
        if self.session is not None:
            info.update(self.session.describe())
        if self.lineage is not None:
            info["lineage"] = self.lineage
        if self.gate is not None:
            info["gate"] = {"passed": self.gate.passed, "reason": self.gate.reason}
            if self.gate.summary is not None:
                info["gate"].update(
                    validated_at=self.gate.summary["created_at"],
                    failed=self.gate.summary["failed"],
                    criteria=self.gate.summary["criteria"],
                )
        return info


@dataclass
class ModelRecord:
    """One model: its configuration (or why it is invalid) and its versions."""

    name: str
    path: Path
    config: ModelConfig | None
    # Why model.toml is invalid (None: it is valid). With a configuration from before in
    # force, the model keeps serving with it; without one, the model serves nothing.
    toml_error: str | None = None
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    # The routing state (routing.json): an admin or guardrail override of model.toml's
    # routing, the pinned stable version, the stable before the last promote.
    state: RoutingState = field(default_factory=RoutingState)
    # Unloaded through the model repository API: the watcher leaves it alone until loaded.
    unloaded: bool = False
    # Versions whose directories the last scan found (loaded or not).
    present: frozenset[int] = frozenset()
    # Why routing.json cannot be read (None: it can, or there is none). While set, nothing
    # writes the routing state; with no good state read since start, no unpinned traffic.
    state_error: str | None = None
    state_read: bool = False
    # Why the last scan of this model failed on something unforeseen (its directory could
    # not be listed, a bug): the model keeps what it had loaded, other models are untouched.
    scan_error: str | None = None

    @property
    def config_error(self) -> str | None:
        """What is wrong with the model's own files (model.toml, routing.json) or its last
        scan, for the metadata; None when nothing is."""
        parts = [self.toml_error, self.state_error, self.scan_error]
        return "; ".join(p for p in parts if p) or None

    @property
    def routing(self) -> RoutingConfig:
        return self.state.routing(
            self.config.routing if self.config is not None else RoutingConfig()
        )

    def ready_versions(self) -> list[int]:
        return sorted(v for v, r in self.versions.items() if r.state is VersionState.READY)


@dataclass(frozen=True)
class RoutingChange:
    """A change of who serves a model's unpinned traffic: the routing state and the
    resolved serving before and after (None: no version may serve), and its cause."""

    model: str
    before: RoutingState
    after: RoutingState
    serving_before: Serving | None
    serving_after: Serving | None
    cause: str

    def audit_record(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(before, after) as the audit log stores them: the state and who serves."""
        return (
            {**self.before.to_json(), "serving": _serving_json(self.serving_before)},
            {**self.after.to_json(), "serving": _serving_json(self.serving_after)},
        )


# Builds one version; replaceable so tests can count loads without patching.
Loader = Callable[[VersionDir, ModelConfig, ServerSettings], ModelSession]
# Reads a version's validation gate at load: its directory, the model's [gate] and the sha256
# of its model.onnx when lineage.json gave one (``governance.gate.gate_status``, which the
# service hands in: the registry sits below governance).
GateReader = Callable[[Path, GateConfig, str | None], GateStatus]
E = TypeVar("E")


def default_loader(vdir: VersionDir, config: ModelConfig, settings: ServerSettings) -> ModelSession:
    return load_version(
        vdir.model, vdir.version, vdir.path, config.execution, config.inputs, settings.max_elements
    )


class ModelStore(Generic[E]):
    """The registry's models and versions; ``resolve`` is the request path's lookup.

    ``prepare`` turns a loaded session into what the request path needs (the service's
    endpoint: runner, precomputed headers); it runs at load, off the request path.
    ``read_gate`` reads each version's validation gate at load; without one, no version
    has a gate result (shown nowhere; under ``require_gate`` none may take traffic).
    """

    def __init__(
        self,
        settings: ServerSettings,
        prepare: Callable[[ModelSession, ModelConfig], E],
        loader: Loader = default_loader,
        on_retire: Callable[[E], None] | None = None,
        read_gate: GateReader | None = None,
    ) -> None:
        self.settings = settings
        self.root = Path(settings.registry)
        self._prepare = prepare
        self._read_gate = read_gate
        self._loader = loader
        self._on_retire = on_retire
        # Fingerprints (file names, sizes, mtimes): last scan's, and what each loaded
        # version was loaded from; model.toml's per model.
        self._seen: dict[tuple[str, int], tuple[Any, ...]] = {}
        self._loaded_fp: dict[tuple[str, int], tuple[Any, ...]] = {}
        # validation.json's signature as last read for each loaded version.
        self._gate_fp: dict[tuple[str, int], tuple[Any, ...]] = {}
        # The external data files (locations relative to the version directory) each
        # version's model named when it was last loaded: part of its fingerprint.
        self._external: dict[tuple[str, int], tuple[str, ...]] = {}
        self._config_fp: dict[str, tuple[Any, ...]] = {}
        self._routing_fp: dict[str, tuple[Any, ...]] = {}
        # _lock guards the state and is held briefly; _scan_lock keeps one scan or load at
        # a time, and is held while versions load (with _lock released).
        self._lock = threading.Lock()
        self._scan_lock = threading.Lock()
        self.models: dict[str, ModelRecord] = {}
        # Published views, replaced wholesale: model → version → session, and model → default.
        self._ready: dict[str, dict[int, E]] = {}
        self._splits: dict[str, Split[E]] = {}
        # model → version → why it may not take traffic (models with require_gate only).
        self.gate_blocked: dict[str, dict[int, str]] = {}
        # Failed load attempts per model since start (a counter: never decreases).
        self.load_failures: dict[str, int] = {}
        self.scan_failures = 0  # scans that could not read the registry directory
        # What may have changed since the last scan (registry/changes.py): a scan reads only
        # those models, and everything every full_scan_every-th time.
        self.changes = ChangeDetector(self.root, settings.model_name, settings.full_scan_every)
        # Models with a version directory not yet seen unchanged over two scans.
        self._unsettled: set[str] = set()
        self.loaded = False
        # The version being loaded now (model, version, monotonic start): loads run one at
        # a time, outside the state lock, so requests can be told what they wait for.
        self.loading: tuple[str, int, float] | None = None
        # Who serves each model's unpinned traffic, as last published.
        self._serving: dict[str, Serving] = {}
        # Changes of who serves made by scans (versions loaded, failed, removed, gates,
        # pins), for the audit log: drained by ``take_routing_changes``.
        self._routing_changes: list[RoutingChange] = []
        # Models whose stable pin could not be saved (read-only state): warned once.
        self._pin_unsaved: set[str] = set()

    # ------------------------------------------------------------------ request path
    def resolve(self, model: str, version: int | None = None) -> E:
        """The endpoint serving ``model`` (its default version, or ``version``)."""
        try:
            if version is None:
                return self._splits[model].stable
            return self._ready[model][version]
        except KeyError:
            raise self._lookup_error(model, version) from None

    def _lookup_error(self, model: str, version: int | None) -> Exception:
        record = self.models.get(model)
        if record is None:
            if not self.loaded:
                return ModelNotReady(f"model {model!r} is not loaded yet: the server is starting")
            return ModelNotFound(f"unknown model {model!r}")
        problem = record.toml_error or (record.scan_error if record.config is None else None)
        if problem:
            return ModelNotReady(f"model {model!r} is not available: {problem}")
        if version is None and record.state_error and not record.state_read:
            return ModelNotReady(
                f"model {model!r}: unpinned traffic waits until its routing state can be read "
                f"({record.state_error}); fix or remove {ROUTING_FILE}"
            )
        if version is None:
            blocked = self.gate_blocked.get(model, {})
            if record.ready_versions() and set(record.ready_versions()) <= set(blocked):
                return GateNotPassed(
                    f"no ready version of model {model!r} has passed its validation gate "
                    "(require_gate = true): "
                    + "; ".join(f"version {v}: {why}" for v, why in sorted(blocked.items()))
                )
            loading = self.loading
            if loading is not None and loading[0] == model and not record.ready_versions():
                bound = record.config.execution.load_timeout_s if record.config else None
                return ModelNotReady(
                    f"model {model!r} has no ready version yet: version {loading[1]} is loading "
                    f"({time.monotonic() - loading[2]:.0f} s so far"
                    + (f", at most {bound:g} s)" if bound else ")")
                )
            return ModelNotReady(f"model {model!r} has no ready version" + _states(record))
        vrec = record.versions.get(version)
        loading = self.loading
        if vrec is None and loading is not None and loading[:2] == (model, version):
            return ModelNotReady(f"model {model!r} version {version} is loading")
        if vrec is None:
            return VersionNotFound(f"model {model!r} has no version {version}")
        if vrec.state is VersionState.FAILED:
            return ModelNotReady(
                f"model {model!r} version {version} failed to load: {vrec.reason}", retry=False
            )
        return ModelNotReady(f"model {model!r} version {version} is {vrec.state.value}")

    def record(self, model: str) -> ModelRecord:
        """The model's record; ``ModelNotFound`` when unknown."""
        record = self.models.get(model)
        if record is None:
            raise self._lookup_error(model, None)
        return record

    def version_record(self, model: str, version: int) -> VersionRecord:
        record = self.record(model)
        vrec = record.versions.get(version)
        loading = self.loading
        if vrec is None and loading is not None and loading[:2] == (model, version):
            raise ModelNotReady(f"model {model!r} version {version} is loading")
        if vrec is None:
            raise VersionNotFound(f"model {model!r} has no version {version}")
        return vrec

    # ------------------------------------------------------------------ control plane
    def load_all(self) -> None:
        """The initial load: scan and load every selected version; failures are recorded."""
        try:
            self.sync(initial=True)
        finally:  # even after an unexpected error: serve what loaded, keep scanning
            self.loaded = True

    def sync(self, initial: bool = False) -> list[str]:
        """Bring the loaded versions in line with the registry directory; returns what changed.

        Load before retire: a new or changed version is loaded and warmed up before it is
        published, and the versions it replaces are retired only when everything selected
        loaded. A version directory is taken only once its files were unchanged over two
        scans (a copy in progress is not loaded half-written). A version that fails to
        load never disturbs what serves. Retired versions finish their in-flight requests
        (they hold their own references) and are then freed. A scan reads only the models
        the change detector names, and every model every ``full_scan_every``-th scan.
        """
        with self._scan_lock, self._lock:
            try:
                plan = self.changes.plan()
                found = (
                    scan_registry(
                        self.root, self.settings.model_name, None if plan.full else plan.dirty
                    )
                    if plan.full or plan.dirty
                    else {}
                )
            except (OSError, RuntimeError) as exc:  # unreadable (or a link loop): keep serving
                self.scan_failures += 1
                log.error("registry %s cannot be read: %s", self.root, exc)
                return []
            changes: list[str] = []
            for name, mdir in found.items():
                # The per-model boundary: whatever one model's files do, the others scan.
                changes += self._sync_model_safely(name, mdir, initial)
                self._watch(name, mdir)
                if initial:  # at a start, each model serves once its versions are loaded
                    self._publish()
            if plan.full:
                self.changes.full_done({name: mdir.path for name, mdir in found.items()})
                gone = [n for n in self.models if n not in found]
            else:  # listed as removed, or its directory went since it was listed
                gone = [n for n in plan.removed | plan.dirty.keys() if n not in found]
            for name in [n for n in gone if n in self.models]:
                for version in list(self.models[name].versions):
                    self._retire(name, version)
                del self.models[name]
                self.changes.forget(name)
                self._unsettled.discard(name)
                self._config_fp.pop(name, None)
                self._routing_fp.pop(name, None)
                for key in [k for k in self._seen if k[0] == name]:
                    del self._seen[key]
                changes.append(f"{name}: removed")
            for change in changes:
                log.info("registry: %s", change)
            if changes or initial:
                causes: dict[str, list[str]] = {}
                for change in changes:
                    causes.setdefault(_model_of(change), []).append(change)
                moved = self._publish()
                if not initial:
                    # A change of routing.json was audited by whoever wrote it.
                    causes = {
                        k: v
                        for k, v in causes.items()
                        if not all(": routing state" in c for c in v)
                    }
                    self._note(
                        [m for m in moved if m[0] in causes],
                        {k: "; ".join(v) for k, v in causes.items()},
                    )
                else:
                    self._note_start()
                for record in list(self.models.values()):
                    self._pin(record)
            return changes

    def _note_start(self) -> None:
        """At a start, a model whose intended stable version (named or pinned) cannot serve
        serves another: warned and audited like any move."""
        for name, record in self.models.items():
            serving = self._serving.get(name)
            intended = intended_stable(record.routing, record.state)
            if serving is None or not intended or serving.stable == intended:
                continue
            vrec = record.versions.get(intended)
            why = (
                f"v{intended} is {vrec.state.value}" + (f": {vrec.reason}" if vrec.reason else "")
                if vrec is not None
                else f"v{intended} is not in the registry"
            )
            cause = f"at start, {why}; v{serving.stable} serves instead"
            log.warning("model %s: the stable version cannot serve: %s", name, cause)
            self._routing_changes.append(
                RoutingChange(name, record.state, record.state, Serving(intended), serving, cause)
            )

    def take_routing_changes(self) -> list[RoutingChange]:
        """Changes of who serves made by scans since the last call (for the audit log)."""
        with self._lock:
            taken, self._routing_changes = self._routing_changes, []
        return taken

    def _note(self, moved: list[tuple[str, Serving | None, Serving | None]], causes: Any) -> None:
        """Record serving changes a scan made, and warn when a model can no longer serve."""
        for name, before, after in moved:
            record = self.models.get(name)
            state = record.state if record is not None else RoutingState()
            cause = causes.get(name, "") if isinstance(causes, dict) else str(causes)
            if after is None and before is not None:
                why = str(self._lookup_error(name, None))
                cause = f"{cause}; {why}" if cause else why
                log.warning("model %s: no version may take unpinned traffic: %s", name, why)
            elif after is not None and before is not None and after.stable != before.stable:
                log.warning(
                    "model %s: the stable version moved from v%s to v%s (%s)",
                    name,
                    before.stable,
                    after.stable,
                    cause or "routing changed",
                )
            self._routing_changes.append(
                RoutingChange(name, state, state, before, after, cause or "registry scan")
            )

    def _sync_model_safely(self, name: str, mdir: ModelDir, initial: bool) -> list[str]:
        """``_sync_model``, with anything it raises made this model's failure: recorded with
        the reason (metadata), counted and logged once per distinct reason, what the model
        had loaded kept serving; the scan goes on with the other models."""
        try:
            if mdir.error:
                raise ModelLoadError(mdir.error)
            changes = self._sync_model(name, mdir, initial)
        except Exception as exc:
            reason = self._scrub(
                str(exc) if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"
            )[:1000]
            record = self.models.get(name)
            if record is None:
                record = self.models[name] = ModelRecord(name, mdir.path, None)
            if record.scan_error == reason:
                return []  # the same failure as at the last scan: said and counted then
            record.scan_error = reason
            self._count_failure(name)
            log.error(
                "model %s failed: %s (other models are not affected)",
                name,
                reason,
                exc_info=not isinstance(exc, (ModelLoadError, OSError)),
            )
            return [f"{name}: failed"]
        record = self.models.get(name)
        if record is not None and record.scan_error is not None:
            record.scan_error = None
            log.info("model %s: scanned again without error", name)
        return changes

    def _watch(self, name: str, mdir: ModelDir) -> None:
        """Tell the change detector which entries say that ``name`` changed: its directory,
        model.toml, routing.json, and the directories and files of the versions it has
        loaded or failed (what a scan acts on when nothing else changed). A new version
        shows in the model's directory; one not selected matters only once something
        watched changes, and a rescan then sees it (stable over two scans, as ever)."""
        record = self.models.get(name)
        entries = [
            mdir.path,
            mdir.path / MODEL_CONFIG_FILE,
            state_dir_of(name, mdir.path, self.settings.state_dir) / ROUTING_FILE,
        ]
        for v in record.versions if record is not None else ():
            vdir = mdir.versions.get(v)
            if vdir is not None:
                entries.append(vdir.path)  # a file created or renamed in changes it
                entries += [vdir.path / f[0] for f in self._seen.get((name, v), ())]
                if self._gate_fp.get((name, v)):  # one edited in place does not
                    entries.append(vdir.path / VALIDATION_FILE)
        # Rescanned at every scan, as before: a failure to retry, a version to see again.
        again = name in self._unsettled or (record is not None and record.scan_error is not None)
        self.changes.watch(name, entries, again)

    def _count_failure(self, name: str) -> None:
        """One more failed load of ``name`` (mlserve_model_load_failures_total): a version, or
        the model's own files (model.toml, routing.json, its directory), once per change."""
        self.load_failures[name] = self.load_failures.get(name, 0) + 1

    def _sync_model(self, name: str, mdir: ModelDir, initial: bool) -> list[str]:
        changes: list[str] = []
        self._unsettled.discard(name)
        record = self.models.get(name)
        config_fp = _fingerprint(mdir.path / MODEL_CONFIG_FILE)
        config_changed = record is None or config_fp != self._config_fp.get(name)
        before = record.config if record is not None else None
        if config_changed:
            self._config_fp[name] = config_fp
            try:
                if mdir.escaping:
                    raise ConfigError(
                        f"refused: {', '.join(mdir.escaping)} leads out of the registry "
                        "directory (a symlink); nothing outside the registry is read"
                    )
                config = load_model_config(mdir.path)
            except Exception as exc:  # ConfigError says what is wrong; anything else too
                text = str(exc) if isinstance(exc, ConfigError) else (
                    f"{MODEL_CONFIG_FILE} cannot be read: {type(exc).__name__}: {exc}"
                )  # fmt: skip
                message = self._scrub(text)[:1000]
                log.error("model %s: %s", name, message)  # once: the file changed
                if record is None or record.config is None:
                    record = ModelRecord(name, mdir.path, None, message)
                    self.models[name] = record
                else:  # keep serving with the last good configuration
                    record.toml_error = f"{message} (still serving with the previous model.toml)"
                self._count_failure(name)
                return [f"{name}: model.toml invalid"]
            if record is None or record.config is None:
                record = ModelRecord(name, mdir.path, config)
                self.load_failures.setdefault(name, 0)  # exported from the first scan
                self.models[name] = record
            else:
                record.config, record.toml_error = config, None
                changes.append(f"{name}: model.toml changed{_config_diff(before, config)}")
        if record is None or record.config is None:
            return changes  # still the same invalid model.toml
        if record.unloaded:
            return changes
        changes += self._sync_routing(record)
        config = record.config
        # Only a change to what versions are built from reloads them; routing, guardrails,
        # the version policy and the gate's criteria reach the loaded versions as they are
        # (sessions stay warm, drift windows keep their rows).
        rebuild = config_changed and (before is None or _build_key(before) != _build_key(config))
        if config_changed and before is not None and before.gate != config.gate:
            self._reread_gates(record, mdir, config)
        bases: dict[int, tuple[Any, ...]] = {}
        gates: dict[int, tuple[Any, ...]] = {}
        for v, vdir in mdir.versions.items():
            listed = _fingerprint(vdir.path, vdir.files)
            bases[v] = tuple(f for f in listed if f[0] != VALIDATION_FILE)
            gates[v] = tuple(f for f in listed if f[0] == VALIDATION_FILE)
        fps = {
            v: base + _external_fingerprint(mdir.versions[v].path, self._external.get((name, v)))
            for v, base in bases.items()
        }
        record.present = frozenset(fps)
        stable = {v for v, fp in fps.items() if initial or self._seen.get((name, v)) == fp}
        self._seen.update(((name, v), fp) for v, fp in fps.items())
        if len(stable) < len(fps):
            self._unsettled.add(name)
        loaded = {v for v in record.versions if v in fps}
        # What the version policy selects, and what the routing names (the pinned stable
        # version above all): a newer version must not unload the one that serves.
        present = stable | loaded
        selected = set(config.versions.select(sorted(present))) | (_routed(record) & present)
        to_load = [
            v
            for v in sorted(selected & stable)
            if v not in record.versions or rebuild or self._loaded_fp.get((name, v)) != fps[v]
        ]
        for v in set(gates) - set(to_load):
            rec = record.versions.get(v)
            seen = self._gate_fp.get((name, v))
            if rec is not None and rec.state is VersionState.READY and seen != gates[v]:
                if seen is not None and self._read_gate is not None:
                    # A validation written (or removed) beside a loaded version: its gate
                    # is judged again, the session kept.
                    rec.gate = self._judge_gate(mdir.versions[v], config)
                    changes.append(f"{name} v{v}: validation read")
                self._gate_fp[(name, v)] = gates[v]
        for v in to_load:
            self._gate_fp[(name, v)] = gates[v]
            new = self._load_one(mdir.versions[v], config)
            old = record.versions.get(v)
            self._loaded_fp[(name, v)] = fps[v]
            if new.state is VersionState.READY:
                # The external files as the load read them: a change after the read
                # shows at the next scan, one before it is already served.
                external = tuple(getattr(new.session, "external_files", ()))
                self._external[(name, v)] = tuple(loc for loc, _ in external)
                fp = bases[v] + tuple((loc, *sig) for loc, sig in external)
                self._loaded_fp[(name, v)] = self._seen[(name, v)] = fp
            if new.state is VersionState.READY:
                if old is not None:
                    self._retire_record(old)
                record.versions[v] = new
                changes.append(f"{name} v{v}: {'reloaded' if old else 'loaded'}")
            elif old is not None and old.state is VersionState.READY:
                old.reason = f"reload failed, still serving the previous files: {new.reason}"
                changes.append(f"{name} v{v}: reload failed")
            else:
                record.versions[v] = new
                changes.append(f"{name} v{v}: failed")
        # Retire what the policy no longer selects only while everything it selects serves:
        # a broken new version must not take the old one down, on this scan or a later one.
        all_ok = all(
            v in record.versions and record.versions[v].state is VersionState.READY
            for v in selected
        )
        for v in list(record.versions):
            if v not in fps or (v not in selected and all_ok):
                self._retire(name, v)
                changes.append(f"{name} v{v}: retired")
        return changes

    def _judge_gate(self, vdir: VersionDir, config: ModelConfig) -> GateStatus:
        """The version's gate as the reader judges its ``validation.json``. Never raises: one
        that leads out of the registry is not read, and a reader's failure is a gate that
        did not pass, logged; the version itself is not disturbed."""
        assert self._read_gate is not None
        if vdir.registry is not None and leaving_registry(
            vdir.path, (VALIDATION_FILE,), vdir.registry
        ):
            return GateStatus(
                False,
                f"refused: {VALIDATION_FILE} leads out of the registry directory (a symlink); "
                "nothing outside the registry is read",
            )
        try:
            return self._read_gate(vdir.path, config.gate, vdir.expected_sha256())
        except Exception as exc:
            log.exception(
                "model %s version %s: judging %s", vdir.model, vdir.version, VALIDATION_FILE
            )
            return GateStatus(
                False, f"{VALIDATION_FILE} could not be judged ({type(exc).__name__})"
            )

    def _reread_gates(self, record: ModelRecord, mdir: ModelDir, config: ModelConfig) -> None:
        """Judge the loaded versions' validations against an edited ``[gate]``."""
        if self._read_gate is None:
            return
        for v, rec in record.versions.items():
            vdir = mdir.versions.get(v)
            if vdir is not None and rec.state is VersionState.READY:
                before = rec.gate
                rec.gate = self._judge_gate(vdir, config)
                if before is not None and before.passed and not rec.gate.passed:
                    log.warning(
                        "model %s version %s fails the edited [gate]: %s",
                        record.name,
                        v,
                        rec.gate.reason,
                    )

    def _state_dir(self, record: ModelRecord) -> Path:
        return state_dir_of(record.name, record.path, self.settings.state_dir)

    def _sync_routing(self, record: ModelRecord) -> list[str]:
        """Re-read the model's routing state when its file changed (another worker or
        replica may have written it)."""
        path = self._state_dir(record) / ROUTING_FILE
        fp = _fingerprint(path) if path.exists() else ()
        if fp == self._routing_fp.get(record.name, ()):
            if not fp:
                record.state_read = True  # no file: the empty state, read
            return []
        if not self.settings.state_dir and leaving_registry(
            record.path, (ROUTING_FILE,), self.root.resolve()
        ):
            self._routing_fp[record.name] = fp  # said once, not at every scan
            log.error("model %s: %s leads out of the registry: ignored", record.name, ROUTING_FILE)
            return []
        self._routing_fp[record.name] = fp
        try:
            state = read_state(path)
        except Exception as exc:  # ConfigError (a ValueError) says what is wrong; OSError too
            text = str(exc) if isinstance(exc, (OSError, ValueError)) else (
                f"{ROUTING_FILE} cannot be read: {type(exc).__name__}: {exc}"
            )  # fmt: skip
            record.state_error = self._scrub(text)[:1000]
            self._count_failure(record.name)
            log.error(
                "model %s: %s cannot be read (%s): %s; nothing writes it until it is fixed",
                record.name,
                ROUTING_FILE,
                record.state_error,
                "keeping the routing read before"
                if record.state_read
                else "no unpinned traffic until then",
            )
            return [f"{record.name}: routing state unreadable"]
        record.state_error, record.state_read = None, True
        if state == record.state:
            return []
        record.state = state
        return [f"{record.name}: routing state {'loaded' if fp else 'removed'}"]

    def unload(self, model: str) -> None:
        """Retire every version of ``model`` and keep it out until ``load``."""
        with self._scan_lock, self._lock:
            record = self.record(model)
            for version in list(record.versions):
                self._retire(model, version)
            record.unloaded = True
            self.changes.forget(model)
            self._publish()
        log.info("registry: %s unloaded", model)

    def in_registry(self, model: str) -> bool:
        """Whether the registry directory holds ``model`` now (whatever is loaded)."""
        if self.settings.model_name:
            return model == self.settings.model_name
        return (self.root / model).is_dir()

    def load(self, model: str) -> list[str]:
        """Load (or reload from disk) ``model`` now, whatever the watcher last saw."""
        with self._scan_lock, self._lock:
            try:
                found = scan_registry(self.root, self.settings.model_name)
            except OSError as exc:
                # strerror, not str(exc): the latter names the server's path.
                raise ModelNotReady(
                    f"the registry cannot be read: {exc.strerror or 'I/O error'}"
                ) from exc
            mdir = found.get(model)
            if mdir is None:
                raise ModelNotFound(f"unknown model {model!r}: no such directory in the registry")
            record = self.models.get(model)
            if record is not None:
                record.unloaded = False
            self._config_fp.pop(model, None)  # re-read model.toml
            for key in [k for k in self._loaded_fp if k[0] == model]:
                del self._loaded_fp[key]
                self._gate_fp.pop(key, None)
            self._routing_fp.pop(model, None)  # re-read routing.json
            if record is not None:
                record.scan_error = None  # tried again: said again if it fails again
            changes = self._sync_model_safely(model, mdir, initial=True)
            self.changes.forget(model)  # read outside a scan: the next one reads it again
            self._publish()
        return changes

    def update_routing(
        self,
        model: str,
        transition: Transition,
        audit: Callable[[RoutingChange], None] | None = None,
        cause: str = "",
    ) -> RoutingChange:
        """Apply a routing transition (routing/controller.py) atomically: re-read the
        routing state (another worker or replica may have written it), compute the new
        state under the lock, persist and publish. ``transition`` may raise to refuse.

        The order makes a crash (SIGKILL, power loss) at any point leave the old state or
        the new one, and never a change in force that the audit log lacks: the new file is
        written and fsynced under a hidden name, then ``audit(change)`` appends (and
        fsyncs) its record, then the file is renamed into place and the directory fsynced,
        then the change is applied in memory. A failure before the rename (a full disk)
        changes nothing and leaves no temporary file: ``StorageFull`` (507) when out of
        space. A crash between the audit record and the rename leaves a record of a change
        that did not happen; never the reverse. The whole change holds ``.routing.lock``
        in the model's state directory (``flock``): other workers and replicas, and the
        guardrails on the leader, read the state this one wrote instead of writing over
        it. A transition that changes nothing writes and audits nothing."""
        with self._lock:
            record = self.record(model)
            if record.state_error:
                raise ModelNotReady(
                    f"the routing state of {model!r} cannot be read ({record.state_error}): "
                    f"fix or remove {ROUTING_FILE} first"
                )
            try:
                return self._locked_change(record, transition, audit, cause)
            except OSError as exc:
                # strerror, never str(exc): that names the server's path.
                raise storage_error(f"routing of {model!r} cannot be saved", exc) from exc

    def _locked_change(
        self,
        record: ModelRecord,
        transition: Transition,
        audit: Callable[[RoutingChange], None] | None,
        cause: str,
    ) -> RoutingChange:
        directory = self._state_dir(record)
        if self.settings.state_dir:
            directory.mkdir(parents=True, exist_ok=True)
        with file_lock(directory / ROUTING_LOCK_FILE):
            return self._change_routing(record, transition, audit, cause)

    def view(self, record: ModelRecord) -> View:
        """What a routing transition may look at for ``record``."""
        endpoints, eligible, refusals = _eligibility(record)
        return View(
            record.name,
            record.config.routing if record.config is not None else RoutingConfig(),
            frozenset(endpoints),
            frozenset(eligible),
            refusals,
            record.present,
        )

    def _change_routing(
        self,
        record: ModelRecord,
        transition: Transition,
        audit: Callable[[RoutingChange], None] | None,
        cause: str,
    ) -> RoutingChange:
        """``update_routing`` under its locks (see there for the order)."""
        self._sync_routing(record)
        before = record.state
        view = self.view(record)
        after = transition(before, view)
        change = RoutingChange(
            record.name, before, after, view.serving(before), view.serving(after), cause
        )
        if after == before:
            return change
        path = self._state_dir(record) / ROUTING_FILE
        if remove_stale_staged(path):
            log.info("model %s: removed routing files a crash left staged", record.name)
        staged = None
        try:
            if after != RoutingState():
                staged = stage_file(path, json.dumps(after.to_json(), indent=1) + "\n")
            if audit is not None:
                audit(change)
            if staged is not None:
                commit_staged(staged, path)
                staged = None
            else:
                remove_durably(path)
        finally:
            if staged is not None:
                staged.unlink(missing_ok=True)
        record.state = after
        self._routing_fp[record.name] = _fingerprint(path) if path.exists() else ()
        self._publish()  # this change is audited by its caller, not noted as a scan's
        return change

    def _pin(self, record: ModelRecord) -> None:
        """Pin the stable version of a model whose routing names none (controller.pin), so
        versions that come later take no traffic by themselves. Where the state cannot be
        saved (a read-only state directory), the pin holds in memory, with a warning."""
        if (
            record.config is None
            or record.unloaded
            or record.state_error  # nothing writes a routing.json that cannot be read
            or not needs_pin(record.state, self.view(record))
        ):
            return
        cause = "stable version pinned: the version serving when none was named"
        try:
            change = self._locked_change(record, pin, None, cause)
        except OSError as exc:
            view = self.view(record)
            before = record.state
            record.state = pin(before, view)
            self._publish()
            change = RoutingChange(
                record.name, before, record.state, view.serving(before), view.serving(record.state),
                cause + " (in memory only: the routing state cannot be saved)",
            )  # fmt: skip
            self._routing_changes.append(change)
            if record.name not in self._pin_unsaved:
                self._pin_unsaved.add(record.name)
                log.warning(
                    "model %s: stable version v%s pinned in memory only: the routing state "
                    "cannot be saved (%s); set --state-dir to a writable directory",
                    record.name,
                    record.state.pinned_stable,
                    exc.strerror or "I/O error",
                )
            return
        if change.after != change.before:
            self._routing_changes.append(change)

    def _scrub(self, text: str) -> str:
        """``text`` with paths made relative to the registry and any other absolute path
        hidden: load-failure reasons and configuration errors are shown to clients."""
        for root in dict.fromkeys((str(self.root.resolve()), str(self.root))):
            text = text.replace(root + "/", "").replace(root, "<registry>")
        return _ABSOLUTE_PATH.sub("<path>", text)

    def _retire(self, name: str, version: int) -> None:
        rec = self.models[name].versions.pop(version)
        self._loaded_fp.pop((name, version), None)
        self._gate_fp.pop((name, version), None)
        self._external.pop((name, version), None)
        self._retire_record(rec)

    def _retire_record(self, rec: VersionRecord) -> None:
        rec.state = VersionState.RETIRED
        if rec.endpoint is not None and self._on_retire is not None:
            self._on_retire(rec.endpoint)

    def _load_one(self, vdir: VersionDir, config: ModelConfig) -> VersionRecord:
        rec = VersionRecord(vdir.model, vdir.version, VersionState.LOADING)
        start = time.perf_counter()
        try:
            problem = vdir.incomplete_reason()
            if problem:
                raise ModelLoadError(problem)
            try:
                rec.lineage = vdir.lineage()
            except ValueError as exc:
                raise ModelLoadError(str(exc)) from exc
            # incomplete_reason() has just checked model.onnx against lineage's sha256
            if self._read_gate is not None:
                rec.gate = self._judge_gate(vdir, config)
            # Outside the state lock (still one load at a time): a slow or runaway load
            # holds up neither routing changes nor views, only the next load.
            self.loading = (vdir.model, vdir.version, time.monotonic())
            try:
                with _released(self._lock):
                    rec.session = self._loader(vdir, config, self.settings)
                    rec.endpoint = self._prepare(rec.session, config)
            finally:
                self.loading = None
        except Exception as exc:  # whatever goes wrong, only this version fails
            if not isinstance(exc, (ModelLoadError, OSError, ValueError)):
                log.exception("unexpected error loading %s v%s", vdir.model, vdir.version)
            rec.state = VersionState.FAILED
            self._count_failure(vdir.model)
            # Never expose server paths in a reason that clients can read.
            rec.reason = self._scrub(
                str(exc).replace(str(vdir.path), f"{vdir.model}/{vdir.version}")
            )
            log.error(
                "model %s version %s failed to load: %s", vdir.model, vdir.version, rec.reason
            )
            return rec
        rec.state = VersionState.READY
        rec.load_seconds = time.perf_counter() - start
        rec.loaded_at = time.time()
        return rec

    def _publish(self) -> list[tuple[str, Serving | None, Serving | None]]:
        """Publish the ready set and the splits; returns the models whose serving changed
        as (model, before, after)."""
        ready: dict[str, dict[int, E]] = {}
        splits: dict[str, Split[E]] = {}
        blocked: dict[str, dict[int, str]] = {}
        serving: dict[str, Serving] = {}
        for name, record in self.models.items():
            endpoints, eligible, refusals = _eligibility(record)
            ready[name] = endpoints
            if record.config is None or not endpoints:
                continue
            if record.config.gate.require_gate:
                blocked[name] = dict(refusals)
            if record.state_error and not record.state_read:
                continue  # who serves is unknown until routing.json can be read
            routing = record.routing
            found = resolve(routing, record.state, eligible, endpoints)
            if found is None:
                continue
            serving[name] = found
            splits[name] = Split(
                endpoints[found.stable],
                endpoints[found.canary] if found.canary else None,
                found.weight,
                tuple(endpoints[v] for v in found.shadows),
                routing.shadow_sample,
                routing.shadow_queue,
            )
        moved = [
            (name, self._serving.get(name), serving.get(name))
            for name in sorted(set(self._serving) | set(serving))
            if self._serving.get(name) != serving.get(name)
        ]
        self._ready, self._splits, self.gate_blocked = ready, splits, blocked
        self._serving = serving
        return moved

    def ready_endpoints(self, model: str) -> dict[int, E]:
        """The model's ready versions' endpoints (pinned requests may reach each)."""
        return self._ready.get(model, {})

    def reachable(self, model: str, version: int | None) -> list[E]:
        """The endpoints a request to ``model`` can reach: ``version``'s, or, unpinned, every
        ready version's. Empty when there is none (admission answers why)."""
        if version is None:
            return list(self._ready.get(model, {}).values())
        try:
            return [self.resolve(model, version)]
        except MLServeError:
            return []

    def serving(self, model: str) -> Serving | None:
        """Who takes ``model``'s unpinned traffic now (None: no version may)."""
        return self._serving.get(model)

    def splits_view(self) -> dict[str, Split[E]]:
        """Models that have unpinned traffic to route, and how it is split."""
        return self._splits

    def gate_refusal(self, model: str, version: int) -> str | None:
        """Why ``version`` may not be stable or canary (its gate), or None when it may."""
        return self.gate_blocked.get(model, {}).get(version)

    def split(self, model: str) -> Split[E]:
        """Who takes ``model``'s unpinned traffic (stable and canary)."""
        try:
            return self._splits[model]
        except KeyError:
            raise self._lookup_error(model, None) from None


@contextlib.contextmanager
def _released(lock: threading.Lock) -> Iterator[None]:
    """``lock`` (held by the caller) released for the block, taken again after it."""
    lock.release()
    try:
        yield
    finally:
        lock.acquire()


def _config_diff(before: ModelConfig | None, after: ModelConfig) -> str:
    """What a ``model.toml`` edit changed, for its log line and audit record: `` ([gate]
    min_accuracy 0.92 -> 0.935; ...)``, at most 12 keys, each value at most 40 characters."""
    if before is None:
        return ""
    parts = []
    for section in dataclasses.fields(after):
        old, new = getattr(before, section.name), getattr(after, section.name)
        if old == new:
            continue
        if not dataclasses.is_dataclass(new):
            parts.append(f"[{section.name}] changed")
            continue
        for key in dataclasses.fields(new):
            a, b = getattr(old, key.name), getattr(new, key.name)
            if a != b:
                parts.append(f"[{section.name}] {key.name} {_brief(a)} -> {_brief(b)}")
    if not parts:
        return ""
    more = f"; and {len(parts) - 12} more" if len(parts) > 12 else ""
    return " (" + "; ".join(parts[:12]) + more + ")"


def _brief(value: Any) -> str:
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 40 else text[:39] + "…"


def _build_key(config: ModelConfig) -> tuple[Any, ...]:
    """The sections of ``model.toml`` a loaded version is built from (its session, runner,
    monitors and payload sink): a change to any of them reloads the model's versions."""
    return (config.execution, config.inputs, config.batching, config.monitoring, config.payloads)


def _eligibility(record: ModelRecord) -> tuple[dict[int, Any], set[int], dict[int, str]]:
    """A model's ready endpoints, the versions among them that may take unpinned traffic,
    and why the others may not (``require_gate``: they may only shadow)."""
    endpoints = {
        v: r.endpoint
        for v, r in record.versions.items()
        if r.state is VersionState.READY and r.endpoint is not None
    }
    refusals: dict[int, str] = {}
    if record.config is not None and record.config.gate.require_gate:
        refusals = {
            v: r.gate.reason if r.gate is not None else "no gate result"
            for v, r in record.versions.items()
            if v in endpoints and (r.gate is None or not r.gate.passed)
        }
    return endpoints, set(endpoints) - set(refusals), refusals


def _routed(record: ModelRecord) -> set[int]:
    """The versions a model's routing names or has pinned (kept loaded whatever the policy)."""
    routing = record.routing
    state = record.state
    named = {routing.stable, routing.canary, *routing.shadows}
    # The pinned version (what serves when nothing is named) and the one a rollback after a
    # promote returns to stay loaded too.
    named |= {state.pinned_stable, state.previous_stable}
    return named - {0}


def _serving_json(serving: Serving | None) -> dict[str, Any] | None:
    return serving.to_json() if serving is not None else None


def _model_of(change: str) -> str:
    """The model a scan's change line is about (``"iris v2: loaded"`` → ``iris``)."""
    return change.split(":", 1)[0].split(" ", 1)[0]


def _states(record: ModelRecord) -> str:
    if not record.versions:
        return ": no version directory was selected by its version policy"
    parts = [
        f"version {v} {r.state.value}" + (f" ({r.reason})" if r.reason else "")
        for v, r in sorted(record.versions.items())
    ]
    return ": " + "; ".join(parts)


def _external_fingerprint(version_dir: Path, locations: tuple[str, ...] | None) -> tuple[Any, ...]:
    """Sizes and times of a version's external data files (a subdirectory's included,
    which the version's own fingerprint does not list); an absent one says so."""
    out: list[tuple[Any, ...]] = []
    for location in locations or ():
        try:
            st = os.stat(version_dir / location)
            out.append((location, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
        except OSError:
            out.append((location, None))
    return tuple(out)


def _fingerprint(path: Path, only: tuple[str, ...] | None = None) -> tuple[Any, ...]:
    """Names, sizes and modification times of a file or of a directory's visible files
    (or of the files named in ``only``)."""
    try:
        if path.is_dir():
            with os.scandir(path) as it:  # entry types without a stat each
                listed = sorted(it, key=lambda e: e.name)
            return tuple(
                (e.name, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
                for e in listed
                if not e.name.startswith(".") and (only is None or e.name in only) and e.is_file()
                for st in [e.stat()]
            )
        st = path.stat()
        # The inode changes with every atomic replace, even within one mtime tick.
        return ((path.name, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns),)
    except OSError:
        return ()
