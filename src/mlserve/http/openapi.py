"""The OpenAPI 3.0 document of every HTTP endpoint, served at ``GET /v2/openapi.json``.

Assembled once, at import, from three sources: each route module's ``OPERATIONS`` (declared
beside its routes, ``operations.Operation``), the hand-written schema data of
``openapi_data.json`` (component schemas, fragments, parameters, headers, what each error
status means), and the error classes of ``errors.py`` (each status's codes). The parts of
the data that constants in code decide (datatypes, platform, backend, name patterns) are
``{"$derived": name}`` there, filled in here. As served, the document also holds one request
schema per loaded version and one example body per version on the infer operations (what the
API page offers to try), rendered again only when the loaded versions change.

Every error body is ``{"error": str, "code": str}`` with the codes of ``errors.py`` for that
status. ``tests/test_openapi_fuzz.py`` checks the declarations against the app's routes and
fuzzes the live server against the document with schemathesis.
"""

from __future__ import annotations

import asyncio
import gzip
from importlib import resources
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import __version__
from ..errors import GateNotPassed, codes_by_status
from ..names import VERSION_RE
from ..registry.store import ModelStore
from ..runtime.tensors import V2_TO_NUMPY, TensorSpec
from ..serving.endpoint import Endpoint
from ..serving.triton import BACKEND, triton_type
from ..serving.views import PLATFORM
from . import admin, dashboard, docs, explain, monitor, v2
from .operations import MODEL, VERSION, Answer, Body, Operation, json_ok

__all__ = ["DOCUMENT", "OPENAPI_PATH", "OPERATIONS", "build_document", "model_document", "routes"]

OPENAPI_PATH = "/v2/openapi.json"

Schema = dict[str, Any]

_DATA: Schema = orjson.loads(
    resources.files(__package__ or "mlserve.http").joinpath("openapi_data.json").read_bytes()
)
_CODES = codes_by_status()
# Per status: its codes (errors.py's classes) and what it means (the data file).
_ERRORS: dict[int, tuple[tuple[str, ...], str]] = {
    int(status): (_CODES[int(status)], error["meaning"])
    for status, error in sorted(_DATA["errors"].items())
}
# The values the data file leaves to code: {"$derived": name} there.
_DERIVED: dict[str, Any] = {
    "datatypes": list(V2_TO_NUMPY),
    "triton_datatypes": sorted(map(triton_type, V2_TO_NUMPY)),
    "platforms": [PLATFORM],
    "backends": [BACKEND],
    # A not-ready answer carries the code a request would get: unknown, not ready, gated.
    "model_ready_codes": sorted({*_CODES[404], *_CODES[503], GateNotPassed.code}),
    # names.is_valid_model_name as one pattern: NAME_RE, not starting with a dot.
    "model_name_pattern": "^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$",
    "version_pattern": f"^{VERSION_RE.pattern}$",
    "max_seconds_description": f"when the stream ends (default {monitor.STREAM_MAX_SECONDS:g})",
}

OPERATIONS: tuple[Operation, ...] = (
    *v2.OPERATIONS,
    *explain.OPERATIONS,
    *monitor.OPERATIONS,
    *dashboard.OPERATIONS,
    *admin.OPERATIONS,
    Operation(OPENAPI_PATH, "GET", "This document", "meta", json_ok("OpenAPI 3.0", "Object")),
    *docs.OPERATIONS,
)
# Possible on every request: a request head over the server's limits or of another HTTP
# version (answered before the application sees it) and a bug.
_ALWAYS = (414, 431, 500, 505)


def _resolve(value: Any) -> Any:
    """A copy of the data file's ``value`` with its derived parts filled in."""
    if isinstance(value, dict):
        if set(value) == {"$derived"}:
            return _DERIVED[value["$derived"]]
        return {k: _resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v) for v in value]
    return value


def _ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> Schema:
    """A component schema of the data file by reference, a fragment of it as a copy."""
    if name in _DATA["schemas"]:
        return _ref("schemas", name)
    fragment: Schema = _resolve(_DATA["fragments"][name])
    return fragment


def _content(content: tuple[tuple[str, str], ...]) -> Schema:
    return {media: {"schema": _schema(name)} for media, name in content}


def _headers(sets: tuple[str, ...]) -> Schema:
    return {k: v for name in sets for k, v in _resolve(_DATA["headers"][name]).items()}


def _answer(answer: Answer) -> Schema:
    response: Schema = {"description": answer.description, "content": _content(answer.content)}
    if answer.headers:
        response["headers"] = _headers(answer.headers)
    return response


def _body(body: Body) -> Schema:
    request: Schema = {"required": body.required}
    if body.description is not None:
        request["description"] = body.description
    request["content"] = _content(body.content)
    if body.example is not None:
        request["content"]["application/json"]["example"] = _DATA["examples"][body.example]
    return request


def _errors(*statuses: int) -> dict[str, Schema]:
    """References to the shared error responses, with those every request may get."""
    names = {int(s): e["response"] for s, e in _DATA["errors"].items()}
    return {str(s): _ref("responses", names[s]) for s in sorted({*statuses, *_ALWAYS})}


def _parameters(op: Operation) -> list[Schema]:
    """The path's own parameters, then the operation's."""
    own = [name for name in ("model", "version") if f"{{{name}}}" in op.path]
    return [_resolve(_DATA["parameters"][name]) for name in (*own, *op.parameters)]


def _operation(op: Operation) -> Schema:
    # The app times the reading of request bodies (408).
    errors = (*op.errors, 408) if op.body is not None else op.errors
    responses = {"200": _answer(op.ok), **_errors(*errors)}
    responses.update({str(status): _answer(answer) for status, answer in op.answers})
    out: Schema = {
        "summary": op.summary,
        "tags": [op.tag],
        "responses": dict(sorted(responses.items())),
    }
    parameters = _parameters(op)
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = _body(op.body)
    if op.admin:
        out["security"] = [{"bearerAuth": []}]
    return out


def _error_schema(status: int) -> Schema:
    return {
        "type": "object",
        "required": ["error", "code"],
        "additionalProperties": False,
        "properties": {
            "error": {"type": "string", "description": "a human-readable message"},
            "code": {"type": "string", "enum": list(_ERRORS[status][0])},
        },
    }


def _error_response(status: int) -> Schema:
    codes, description = _ERRORS[status]
    response: Schema = {
        "description": f"{description} Codes: {', '.join(codes)}.",
        "content": {"application/json": {"schema": _ref("schemas", f"Error{status}")}},
    }
    headers = _DATA["errors"][str(status)].get("headers")
    if headers:
        response["headers"] = _headers((headers,))
    return response


def _components() -> Schema:
    schemas = _resolve(_DATA["schemas"])
    schemas.update({f"Error{s}": _error_schema(s) for s in _ERRORS})
    errors = _DATA["errors"]
    return {
        "schemas": schemas,
        "responses": {errors[str(s)]["response"]: _error_response(s) for s in _ERRORS},
        "securitySchemes": _resolve(_DATA["securitySchemes"]),
    }


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of every route the app serves."""
    paths: dict[str, Schema] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "mlserve",
            "version": __version__,
            "description": _DATA["info"]["description"],
        },
        "tags": _resolve(_DATA["tags"]),
        "paths": paths,
        "components": _components(),
    }


DOCUMENT = build_document()
_INFER_PATHS = (MODEL + "/infer", VERSION + "/infer")


def model_schema(endpoint: Endpoint) -> tuple[Schema, dict[str, Any]]:
    """One loaded version's request schema (its inputs, and its named feature columns where
    it has them) and an example body (one row of zeros, which the version accepts)."""
    session = endpoint.session
    variants: list[Schema] = [_input_schema(spec) for spec in session.inputs]
    lines = [f"`{spec.name}`: {spec.datatype} {spec.shape_text()}" for spec in session.inputs]
    if endpoint.schema is not None:  # or one input per feature column, by name
        for feature in endpoint.schema.metadata():
            variants.append(
                _input_schema(TensorSpec(feature["name"], feature["datatype"], (-1,)), True)
            )
        names = ", ".join(f"`{n}`" for n in endpoint.schema.names)
        lines.append(f"or one column per feature, by name: {names}")
    outputs = [spec.name for spec in session.outputs]
    schema: Schema = {
        "type": "object",
        "description": f"A request for {endpoint.model} version {endpoint.version}. "
        "Inputs: " + "; ".join(lines) + ". Outputs: " + ", ".join(outputs) + ".",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "minItems": 1, "items": {"oneOf": variants}},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "enum": outputs},
                        "parameters": {"type": "object"},
                    },
                },
            },
        },
    }
    example = {"inputs": [_example_input(spec) for spec in session.inputs]}
    schema["example"] = example
    return schema, example


def _input_schema(spec: TensorSpec, column: bool = False) -> Schema:
    shape = spec.shape_text()
    return {
        "type": "object",
        "title": spec.name,
        "description": f"feature column `{spec.name}`: {spec.datatype}, shape [rows]"
        if column
        else f"input `{spec.name}`: {spec.datatype}, shape {shape} (-1: any size)",
        "required": ["name", "datatype", "shape", "data"],
        "properties": {
            "name": {"type": "string", "enum": [spec.name]},
            "datatype": {"type": "string", "enum": list(V2_TO_NUMPY), "default": spec.datatype},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "data": {"type": "array", "items": {}},
        },
    }


def _example_input(spec: TensorSpec) -> dict[str, Any]:
    shape = [1 if d == -1 else d for d in spec.shape]
    n = 1
    for d in shape:
        n *= d
    zero: Any = "" if spec.datatype == "BYTES" else False if spec.datatype == "BOOL" else 0
    return {"name": spec.name, "datatype": spec.datatype, "shape": shape, "data": [zero] * n}


def model_document(endpoints: list[Endpoint]) -> dict[str, Any]:
    """``DOCUMENT`` with one request schema per loaded version in its components and one
    example per version on the infer operations (a page can try any of them)."""
    if not endpoints:
        return DOCUMENT
    schemas = dict(DOCUMENT["components"]["schemas"])
    examples: dict[str, Any] = {}
    for ep in endpoints:
        name = f"{ep.model}.v{ep.version}.InferenceRequest"
        schemas[name], body = model_schema(ep)
        examples[f"{ep.model} v{ep.version}"] = {
            "summary": f"one row for {ep.model} version {ep.version} ({name})",
            "value": body,
        }
    paths = dict(DOCUMENT["paths"])
    for path in _INFER_PATHS:
        item = orjson.loads(orjson.dumps(paths[path]))  # a copy to change
        media = item["post"]["requestBody"]["content"]["application/json"]
        generic = media.pop("example")  # OpenAPI 3.0: `example` or `examples`, not both
        media["examples"] = {**examples, "generic": {"summary": "the README's", "value": generic}}
        paths[path] = item
    return {
        **DOCUMENT,
        "paths": paths,
        "components": {**DOCUMENT["components"], "schemas": schemas},
    }


_GZIP_FROM = 1024
_VARY = {"vary": "accept-encoding"}


def routes(store: ModelStore[Endpoint] | None = None) -> list[Route]:
    """``GET /v2/openapi.json``: the document with the loaded versions' schemas, rendered
    again only when the loaded versions change."""
    cache: dict[str, Any] = {"key": None, "body": orjson.dumps(DOCUMENT), "gzip": None}

    async def answer(request: Request) -> Response:
        # Compressed for clients that accept it (a thousand versions make megabytes of JSON),
        # once per document, off the event loop.
        body = cache["body"]
        if len(body) < _GZIP_FROM or "gzip" not in request.headers.get("accept-encoding", ""):
            return Response(body, media_type="application/json", headers=_VARY)
        if cache["gzip"] is None:
            cache["gzip"] = await asyncio.to_thread(gzip.compress, body, 6)
        headers = {**_VARY, "content-encoding": "gzip"}
        return Response(cache["gzip"], media_type="application/json", headers=headers)

    async def openapi(request: Request) -> Response:
        if store is None:
            return await answer(request)
        endpoints = [
            ep
            for name in sorted(store.models)
            for _, ep in sorted(store.ready_endpoints(name).items())
        ]
        # What the schemas are made of (ids could be reused by a reloaded version's objects).
        key = [
            (
                ep.model,
                ep.version,
                ep.session.inputs,
                ep.session.outputs,
                ep.schema and ep.schema.features,
            )
            for ep in endpoints
        ]
        if key != cache["key"]:
            # Thousands of versions make a document of megabytes: built off the event loop.
            body = await asyncio.to_thread(lambda: orjson.dumps(model_document(endpoints)))
            cache.update(key=key, body=body, gzip=None)
        return await answer(request)

    return [Route(OPENAPI_PATH, openapi, methods=["GET"])]
