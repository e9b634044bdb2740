"""The inference pipeline between transport and runtime: resolve → validate → infer → encode.

Transport code (``http/``) parses bytes into a request document, calls
``InferenceService.infer`` and serialises what it returns. Nothing here knows HTTP.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import __version__
from .config import ServerSettings
from .errors import InvalidInput, ServerNotReady
from .registry.store import ModelStore
from .runtime.session import ModelSession
from .runtime.tensors import decode_json, encode_json

PLATFORM = "onnxruntime_onnx"
EXTENSIONS: list[str] = []


@dataclass(frozen=True)
class InferResult:
    """A response document and the facts the transport puts in headers."""

    body: dict[str, Any]
    session: ModelSession
    role: str


class InferenceService:
    """Requests in, responses out, over a ``ModelStore``."""

    def __init__(self, settings: ServerSettings, store: ModelStore) -> None:
        self.settings = settings
        self.store = store
        threads = settings.inference_threads or (os.cpu_count() or 1)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mlserve-infer")
        self.shutting_down = False

    # ------------------------------------------------------------------ health and metadata
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready once the initial registry load has finished, until shutdown begins."""
        return self.store.loaded and not self.shutting_down

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "mlserve", "version": __version__, "extensions": EXTENSIONS}

    def model_ready(self, model: str, version: int | None) -> bool:
        """Whether the model (any version) or the given version serves; unknown → 404."""
        if version is None:
            return bool(self.store.record(model).ready_versions())
        return self.store.version_record(model, version).state.value == "ready"

    def model_metadata(self, model: str, version: int | None) -> dict[str, Any]:
        """V2 model metadata; ``parameters`` carry each version's state, runtime and lineage."""
        record = self.store.record(model)
        if version is not None:
            vrec = self.store.version_record(model, version)
            session = self.store.resolve(model, version)
            return {
                "name": model,
                "versions": [str(version)],
                "platform": PLATFORM,
                "inputs": [s.metadata() for s in session.inputs],
                "outputs": [s.metadata() for s in session.outputs],
                "parameters": vrec.describe(),
            }
        ready = record.ready_versions()
        default = self.store.resolve(model) if ready else None
        params: dict[str, Any] = {
            "default_version": str(default.version) if default else None,
            "versions": {str(v): r.describe() for v, r in sorted(record.versions.items())},
        }
        if record.config_error:
            params["config_error"] = record.config_error
        return {
            "name": model,
            "versions": [str(v) for v in ready],
            "platform": PLATFORM,
            "inputs": [s.metadata() for s in default.inputs] if default else [],
            "outputs": [s.metadata() for s in default.outputs] if default else [],
            "parameters": params,
        }

    # ------------------------------------------------------------------ inference
    async def infer(self, model: str, version: int | None, request: Any) -> InferResult:
        """Validate ``request`` (a parsed V2 JSON body) against the version and run it."""
        if not self.store.loaded:
            raise ServerNotReady("the server is still loading its models")
        session = self.store.resolve(model, version)
        if not isinstance(request, dict):
            raise InvalidInput("the request body must be a JSON object", reason="json")
        feeds = self._feeds(session, request.get("inputs"))
        output_names = self._outputs(session, request.get("outputs"))
        if session.inline:
            arrays = session.run(feeds, output_names)
        else:
            loop = asyncio.get_running_loop()
            arrays = await loop.run_in_executor(self._executor, session.run, feeds, output_names)
        names = output_names or session.output_names
        body: dict[str, Any] = {
            "model_name": model,
            "model_version": str(session.version),
            "outputs": [encode_json(n, a) for n, a in zip(names, arrays, strict=True)],
        }
        request_id = request.get("id")
        if request_id is not None:
            if not isinstance(request_id, str):
                raise InvalidInput("'id' must be a string", reason="json")
            body["id"] = request_id
        return InferResult(body, session, "stable" if version is None else "pinned")

    @staticmethod
    def _feeds(session: ModelSession, inputs: Any) -> dict[str, np.ndarray]:
        if not isinstance(inputs, list) or not inputs:
            raise InvalidInput("'inputs' must be a non-empty list of tensors", reason="json")
        feeds: dict[str, np.ndarray] = {}
        specs = session.input_specs
        for tensor in inputs:
            if not isinstance(tensor, dict):
                raise InvalidInput("each input must be a JSON object", reason="json")
            name = tensor.get("name")
            spec = specs.get(name) if isinstance(name, str) else None
            if spec is None:
                if not isinstance(name, str):
                    raise InvalidInput("each input needs a string 'name'", reason="json")
                raise InvalidInput(
                    f"unknown input {name[:64]!r}; the model's inputs are {sorted(specs)}",
                    reason="name",
                )
            if spec.name in feeds:
                raise InvalidInput(f"input {name!r} is given more than once", reason="name")
            feeds[spec.name] = decode_json(spec, tensor, session.limits)
        if len(feeds) != len(specs):
            missing = sorted(set(specs) - set(feeds))
            raise InvalidInput(f"missing input(s) {missing}", reason="name")
        return feeds

    @staticmethod
    def _outputs(session: ModelSession, requested: Any) -> list[str] | None:
        if requested is None:
            return None
        if not isinstance(requested, list):
            raise InvalidInput("'outputs' must be a list of {\"name\": ...} objects", reason="json")
        names = []
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
        return names or None

    def close(self) -> None:
        self.shutting_down = True
        self._executor.shutdown(wait=True, cancel_futures=False)
