"""Authenticated admin routes: read and change a model's routing, promote, roll back.

Every route needs ``Authorization: Bearer <MLSERVE_ADMIN_TOKEN>`` (compared in constant
time); with no token configured the admin API is refused, never open. Changes are
persisted atomically (``routing.json`` beside ``model.toml``, which stays the human's
file), written to the audit log before they take effect, applied in one swap; a full disk
is answered 507 ``storage_full`` with nothing changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import (
    Forbidden,
    InvalidInput,
    ModelInvalid,
    ModelNotFound,
    Unauthorized,
    storage_error,
)
from ..governance.audit import AuditLog, actor_id
from ..names import check_model_name
from ..registry.store import RoutingChange
from ..routing import controller
from ..routing.state import RoutingState
from ..service import InferenceService
from .bodies import read_body
from .operations import Body, Operation, json_ok
from .v2 import JSONResponse

# Admin bodies are a few routing keys: anything bigger is refused (413) before it is read.
ADMIN_MAX_BODY = 1 << 20

_BASE = "/v2/admin/models/{model}"
_STATE = json_ok("The routing now in force", "RoutingState")
_COMMON = (400, 401, 403, 404, 503)
_CHANGE = (*_COMMON, 507)  # persisted and audited: 507 when the disk is full
OPERATIONS = (
    Operation(
        _BASE + "/routing",
        "GET",
        "The model's routing: model.toml's, the override, the effective one",
        "admin",
        _STATE,
        _COMMON,
        admin=True,
    ),
    Operation(
        _BASE + "/routing",
        "PUT",
        "Change the routing (persisted beside model.toml, audited)",
        "admin",
        _STATE,
        (*_CHANGE, 409, 413, 415),
        body=Body((("application/json", "RoutingChange"),)),
        admin=True,
    ),
    Operation(
        _BASE + "/routing",
        "DELETE",
        "Drop the override: model.toml's routing applies again",
        "admin",
        _STATE,
        _CHANGE,
        admin=True,
    ),
    Operation(
        _BASE + "/promote",
        "POST",
        "The canary becomes stable",
        "admin",
        _STATE,
        (*_CHANGE, 409),
        admin=True,
    ),
    Operation(
        _BASE + "/rollback",
        "POST",
        "The canary stops taking traffic",
        "admin",
        _STATE,
        _CHANGE,
        admin=True,
    ),
    Operation(
        "/v2/repository/index",
        "POST",
        "Every version and its state (model_repository extension)",
        "admin",
        json_ok("The index", "RepositoryIndex"),
        (400, 401, 403, 413, 415),
        body=Body((("application/json", "RepositoryIndexQuery"),), required=False),
        admin=True,
    ),
    Operation(
        "/v2/repository/models/{model}/load",
        "POST",
        "Load or reload the model from disk now",
        "admin",
        json_ok("What changed and the versions' states", "LoadResult"),
        (*_CHANGE, 409),  # 409: the model's own files (model.toml, routing.json) unusable
        admin=True,
    ),
    Operation(
        "/v2/repository/models/{model}/unload",
        "POST",
        "Retire every version; the watcher leaves the model alone until loaded again",
        "admin",
        json_ok("Unloaded", "UnloadResult"),
        _CHANGE,
        admin=True,
    ),
)


def routes(service: InferenceService, token: str, audit: AuditLog) -> list[Route]:
    """Admin routes bound to ``service``, checked against ``token``, audited to ``audit``."""
    # Compared as UTF-8 bytes on both sides: the configured token encoded, the header's
    # bytes as they came (Starlette decodes header bytes as Latin-1, which gives them back
    # unchanged). ServerSettings refuses tokens with surrounding whitespace or control
    # characters, which could never match.
    expected = token.encode("utf-8")

    def authorize(request: Request) -> str:
        if not expected:
            raise Forbidden("the admin API is disabled: set MLSERVE_ADMIN_TOKEN to enable it")
        header = request.headers.get("authorization", "").encode("latin-1")
        scheme, _, credential = header.partition(b" ")
        credential = credential.strip()
        if scheme.lower() != b"bearer" or not hmac.compare_digest(credential, expected):
            raise Unauthorized("a valid 'Authorization: Bearer <token>' header is required")
        return actor_id(token)

    def state(model: str) -> dict[str, Any]:
        record = service.store.record(model)
        serving = service.store.serving(model)
        return {
            "model": model,
            "ready_versions": [str(v) for v in record.ready_versions()],
            "model_toml": dataclasses.asdict(record.config.routing) if record.config else None,
            # The keys set through this API (or a promote, a guardrail step) over model.toml's.
            "override": _overridden(record.state),
            "effective": dataclasses.asdict(record.routing),
            "pinned_stable": record.state.pinned_stable or None,
            "previous_stable": record.state.previous_stable or None,
            # Who takes unpinned traffic now, as resolved (what the metadata shows too).
            "serving": serving.to_json() if serving is not None else None,
        }

    async def change(
        model: str, actor: str, action: str, transition: controller.Transition
    ) -> Response:
        # Built from the routing state in force under the store's lock: concurrent changes
        # (here, on another worker or replica, or by the guardrails) are never lost.
        # The audit record is written (fsynced) after the new routing.json is staged and
        # before it is renamed into place: a change in force is always audited, whatever
        # moment a crash picks (store.update_routing).
        def audited(change: RoutingChange) -> None:
            before, after = change.audit_record()
            audit.append(actor, action, model, before, after, change.cause)

        await asyncio.to_thread(
            service.store.update_routing, model, transition, audited, f"admin: {action}"
        )
        return JSONResponse(state(model))

    async def get_routing(request: Request) -> Response:
        authorize(request)
        return JSONResponse(state(check_model_name(request.path_params["model"])))

    async def put_routing(request: Request) -> Response:
        actor = authorize(request)
        model = check_model_name(request.path_params["model"])
        try:
            body = orjson.loads(await read_body(request, ADMIN_MAX_BODY, asyncio.to_thread))
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"malformed JSON body: {exc}", reason="json") from None
        if not isinstance(body, dict):
            raise InvalidInput("the body must be a JSON object of routing keys", reason="json")
        service.store.record(model)  # 404 before anything else
        return await change(model, actor, "set_routing", controller.set_routing(body))

    async def delete_routing(request: Request) -> Response:
        actor = authorize(request)
        model = check_model_name(request.path_params["model"])
        return await change(model, actor, "reset_routing", controller.reset)

    async def promote(request: Request) -> Response:
        actor = authorize(request)
        model = check_model_name(request.path_params["model"])
        return await change(model, actor, "promote", controller.promote)

    async def rollback(request: Request) -> Response:
        actor = authorize(request)
        model = check_model_name(request.path_params["model"])
        return await change(model, actor, "rollback", controller.rollback)

    async def repository_index(request: Request) -> Response:
        authorize(request)
        raw = await read_body(request, ADMIN_MAX_BODY, asyncio.to_thread)
        ready_only = False
        if raw.strip():
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"malformed JSON body: {exc}", reason="json") from None
            ready_only = isinstance(doc, dict) and doc.get("ready") is True
        index = []
        for name, record in sorted(service.store.models.items()):
            if record.unloaded:
                index.append({"name": name, "state": "UNAVAILABLE", "reason": "unloaded"})
                continue
            for version, vrec in sorted(record.versions.items()):
                entry = {"name": name, "version": str(version), "state": vrec.state.value.upper()}
                if vrec.reason:
                    entry["reason"] = vrec.reason
                index.append(entry)
        if ready_only:
            index = [e for e in index if e["state"] == "READY"]
        return JSONResponse(index)

    def append_first(actor: str, action: str, model: str, before: Any) -> None:
        """The audit record of a repository action, written before the action: a change
        is never in force without its record. A record that cannot be written (a full
        disk) stops the action (507 or 503), nothing changed."""
        try:
            audit.append(actor, action, model, before, None)
        except OSError as exc:
            raise storage_error(f"{action} of {model!r}: its audit record", exc) from exc

    def states(model: str) -> dict[str, str]:
        record = service.store.record(model)
        return {str(v): r.state.value for v, r in sorted(record.versions.items())}

    async def repository_load(request: Request) -> Response:
        actor = authorize(request)
        model = check_model_name(request.path_params["model"])
        if not service.store.in_registry(model):
            raise ModelNotFound(f"unknown model {model!r}: no such directory in the registry")
        before = states(model) if model in service.store.models else None
        await asyncio.to_thread(append_first, actor, "load", model, before)
        changes = await asyncio.to_thread(service.store.load, model)
        record = service.store.record(model)
        if record.config_error:  # the model's own files: nothing of it could be (re)loaded
            raise ModelInvalid(f"model {model!r} could not be loaded: {record.config_error}")
        body: dict[str, Any] = {"model": model, "changes": changes, "versions": states(model)}
        reasons = {str(v): r.reason for v, r in sorted(record.versions.items()) if r.reason}
        if reasons:  # failed versions (or failed reloads), each with its reason
            body["reasons"] = reasons
        return JSONResponse(body)

    async def repository_unload(request: Request) -> Response:
        actor = authorize(request)
        model = check_model_name(request.path_params["model"])
        before = states(model)  # 404 for an unknown model, before anything is written
        await asyncio.to_thread(append_first, actor, "unload", model, before)
        await asyncio.to_thread(service.store.unload, model)
        return JSONResponse({"model": model, "unloaded": True})

    base = _BASE
    return [
        Route(base + "/routing", get_routing, methods=["GET"]),
        Route(base + "/routing", put_routing, methods=["PUT"]),
        Route(base + "/routing", delete_routing, methods=["DELETE"]),
        Route(base + "/promote", promote, methods=["POST"]),
        Route(base + "/rollback", rollback, methods=["POST"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/repository/models/{model}/load", repository_load, methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", repository_unload, methods=["POST"]),
    ]


def _overridden(state: RoutingState) -> dict[str, Any] | None:
    if state.override is None:
        return None
    keys = state.override_keys
    return {
        k: v for k, v in dataclasses.asdict(state.override).items() if keys is None or k in keys
    }
