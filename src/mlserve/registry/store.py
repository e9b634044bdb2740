"""Model versions and their states: loading, ready, failed, draining, retired.

The store scans the registry, loads each selected version fully (session built,
warmed up) before it takes traffic, and publishes the ready set as fresh
dictionaries swapped in one assignment, so request threads never see a half
update. It knows neither HTTP nor metric objects.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..config import ModelConfig, ServerSettings, load_model_config
from ..errors import ConfigError, ModelLoadError, ModelNotFound, ModelNotReady, VersionNotFound
from ..runtime.session import ModelSession, load_version
from .layout import VersionDir, scan_registry

log = logging.getLogger("mlserve.registry")


class VersionState(str, Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    DRAINING = "draining"
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
        return info


@dataclass
class ModelRecord:
    """One model: its configuration (or why it is invalid) and its versions."""

    name: str
    path: Path
    config: ModelConfig | None
    config_error: str | None = None
    versions: dict[int, VersionRecord] = field(default_factory=dict)

    def ready_versions(self) -> list[int]:
        return sorted(v for v, r in self.versions.items() if r.state is VersionState.READY)


# Builds one version; replaceable so tests can count loads without patching.
Loader = Callable[[VersionDir, ModelConfig, ServerSettings], ModelSession]
E = TypeVar("E")


def default_loader(vdir: VersionDir, config: ModelConfig, settings: ServerSettings) -> ModelSession:
    return load_version(
        vdir.model, vdir.version, vdir.path, config.execution, config.inputs, settings.max_elements
    )


class ModelStore(Generic[E]):
    """The registry's models and versions; ``resolve`` is the request path's lookup.

    ``prepare`` turns a loaded session into what the request path needs (the service's
    endpoint: runner, precomputed headers); it runs at load, off the request path.
    """

    def __init__(
        self,
        settings: ServerSettings,
        prepare: Callable[[ModelSession, ModelConfig], E],
        loader: Loader = default_loader,
    ) -> None:
        self.settings = settings
        self.root = Path(settings.registry)
        self._prepare = prepare
        self._loader = loader
        self._lock = threading.Lock()
        self.models: dict[str, ModelRecord] = {}
        # Published views, replaced wholesale: model → version → session, and model → default.
        self._ready: dict[str, dict[int, E]] = {}
        self._default: dict[str, E] = {}
        self.loaded = False

    # ------------------------------------------------------------------ request path
    def resolve(self, model: str, version: int | None = None) -> E:
        """The endpoint serving ``model`` (its default version, or ``version``)."""
        try:
            if version is None:
                return self._default[model]
            return self._ready[model][version]
        except KeyError:
            raise self._lookup_error(model, version) from None

    def _lookup_error(self, model: str, version: int | None) -> Exception:
        record = self.models.get(model)
        if record is None:
            if not self.loaded:
                return ModelNotReady(f"model {model!r} is not loaded yet: the server is starting")
            return ModelNotFound(f"unknown model {model!r}")
        if record.config_error:
            return ModelNotReady(f"model {model!r} is not available: {record.config_error}")
        if version is None:
            return ModelNotReady(f"model {model!r} has no ready version" + _states(record))
        vrec = record.versions.get(version)
        if vrec is None:
            return VersionNotFound(f"model {model!r} has no version {version}")
        if vrec.state is VersionState.FAILED:
            return ModelNotReady(f"model {model!r} version {version} failed to load: {vrec.reason}")
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
        if vrec is None:
            raise VersionNotFound(f"model {model!r} has no version {version}")
        return vrec

    # ------------------------------------------------------------------ control plane
    def load_all(self) -> None:
        """Scan the registry and load every selected version; failures are recorded."""
        with self._lock:
            try:
                found = scan_registry(self.root)
            except OSError as exc:
                log.error("registry %s cannot be read: %s", self.root, exc)
                found = {}
            for name, mdir in found.items():
                try:
                    config = load_model_config(mdir.path)
                except ConfigError as exc:
                    log.error("model %s: %s", name, exc)
                    self.models[name] = ModelRecord(name, mdir.path, None, str(exc))
                    continue
                record = ModelRecord(name, mdir.path, config)
                self.models[name] = record
                selected = set(config.versions.select(list(mdir.versions)))
                for version, vdir in sorted(mdir.versions.items()):
                    if version not in selected:
                        continue
                    record.versions[version] = self._load_one(vdir, config)
            self._publish()
            self.loaded = True

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
            rec.session = self._loader(vdir, config, self.settings)
            rec.endpoint = self._prepare(rec.session, config)
        except (ModelLoadError, OSError) as exc:
            rec.state = VersionState.FAILED
            # Never expose server paths in a reason that clients can read.
            rec.reason = str(exc).replace(str(vdir.path), f"{vdir.model}/{vdir.version}")
            rec.reason = rec.reason.replace(str(self.root), "<registry>")
            log.error(
                "model %s version %s failed to load: %s", vdir.model, vdir.version, rec.reason
            )
            return rec
        rec.state = VersionState.READY
        rec.load_seconds = time.perf_counter() - start
        rec.loaded_at = time.time()
        return rec

    def _publish(self) -> None:
        ready: dict[str, dict[int, E]] = {}
        default: dict[str, E] = {}
        for name, record in self.models.items():
            sessions = {
                v: r.endpoint
                for v, r in record.versions.items()
                if r.state is VersionState.READY and r.endpoint is not None
            }
            ready[name] = sessions
            if sessions:
                default[name] = sessions[max(sessions)]
        self._ready, self._default = ready, default


def _states(record: ModelRecord) -> str:
    if not record.versions:
        return ": no version directory was selected by its version policy"
    parts = [
        f"version {v} {r.state.value}" + (f" ({r.reason})" if r.reason else "")
        for v, r in sorted(record.versions.items())
    ]
    return ": " + "; ".join(parts)
