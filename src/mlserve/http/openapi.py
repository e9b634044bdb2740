"""The OpenAPI 3.0 document of every HTTP endpoint, served at ``GET /v2/openapi.json``.

The document is built once, at import, from the same constants the routes use (datatypes,
error codes, media types). It describes the Open Inference Protocol routes (health, metadata,
infer with the binary tensor extension), Triton's configuration and statistics routes,
explain, the monitoring routes, the dashboard, the API and root pages, the admin and model
repository routes (bearer security), and itself. As served, it also holds one request schema
per loaded version and one example body per version on the infer operations (what the API
page offers to try), rendered again only when the loaded versions change.

Every status an operation can answer is listed; every error body is
``{"error": str, "code": str}`` with the codes of ``errors.py`` for that status.
``tests/test_openapi_fuzz.py`` checks it against the app's routes and fuzzes the live server
against it with schemathesis.
"""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import __version__
from ..errors import codes_by_status
from ..registry.store import ModelStore
from ..runtime.tensors import V2_TO_NUMPY, TensorSpec
from ..serving.endpoint import Endpoint
from ..serving.stats import BACKEND, triton_type
from ..serving.views import PLATFORM
from . import dashboard, docs, monitor

__all__ = ["DOCUMENT", "OPENAPI_PATH", "build_document", "model_document", "routes"]

OPENAPI_PATH = "/v2/openapi.json"

Schema = dict[str, Any]

_MODEL = "/v2/models/{model}"
_VERSION = "/v2/models/{model}/versions/{version}"
_ADMIN = "/v2/admin/models/{model}"

# Per status, what it means. The codes each status can carry are those of errors.py's classes.
_MEANINGS: dict[int, str] = {
    400: (
        "The request is invalid: malformed JSON, a tensor that does not fit the model (names, "
        "shapes, datatypes, values, limits), a bad model name or version, a bad query parameter"
        " or routing change; or not valid HTTP (`invalid_http`: the connection is closed)."
    ),
    401: "No valid `Authorization: Bearer <token>` header.",
    403: "The admin API is disabled: the server has no `MLSERVE_ADMIN_TOKEN`.",
    404: "No such model or version (or the path matches no route).",
    405: "The route exists, not for this method (`Allow` names those it takes).",
    408: (
        "The request body did not arrive within the server's body timeout; the connection is "
        "closed after the answer."
    ),
    409: (
        "The version has not passed its validation gate (`require_gate`), cannot be explained, "
        "or (loading through the repository API) the model's own files are unusable; retrying "
        "will not help until that changes. A routing change naming a version that is loading "
        "or failed (`version_not_ready`) may succeed once it has loaded."
    ),
    413: "The request body is over the server's limit.",
    414: (
        "The request URL is over the request-head limit (`--max-header-bytes`); the connection "
        "is closed."
    ),
    415: "The body's `Content-Encoding` is not one the server decodes (identity, gzip, deflate).",
    431: (
        "The request head is over `--max-header-bytes` or has more than 256 headers; the "
        "connection is closed."
    ),
    500: (
        "The runtime failed on a valid input (`inference_failed`), or a bug (`internal`, "
        "logged; the body carries no details)."
    ),
    503: "Not available now (loading, failed, draining, overloaded); retry after `Retry-After`.",
    504: (
        "The request waited in the batching queue past its timeout (`queue_timeout`), or its "
        "run went past `[execution] run_timeout_s` and was stopped (`run_timeout`)."
    ),
    507: "The change could not be written: the disk is full.",
}
_CODES = codes_by_status()
_ERRORS: dict[int, tuple[tuple[str, ...], str]] = {
    status: (_CODES[status], meaning) for status, meaning in sorted(_MEANINGS.items())
}
_RESPONSE_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    408: "RequestTimeout",
    409: "Conflict",
    413: "PayloadTooLarge",
    405: "MethodNotAllowed",
    414: "URITooLong",
    415: "UnsupportedMediaType",
    431: "HeadersTooLarge",
    500: "InternalError",
    503: "Unavailable",
    504: "QueueTimeout",
    507: "InsufficientStorage",
}


def _ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> Schema:
    return _ref("schemas", name)


def _nullable(schema: Schema) -> Schema:
    return {"allOf": [schema], "nullable": True}


def _json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def _header(description: str, schema: Schema | None = None, *, required: bool = True) -> Schema:
    return {
        "description": description,
        "required": required,
        "schema": schema or {"type": "string"},
    }


# Possible on every request: a request head over the server's limits (answered before the
# application sees it) and a bug.
_ALWAYS = (414, 431, 500)


def _errors(*statuses: int) -> dict[str, Schema]:
    """References to the shared error responses, with those every request may get."""
    return {str(s): _ref("responses", _RESPONSE_NAMES[s]) for s in sorted({*statuses, *_ALWAYS})}


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
        "content": _json(_schema(f"Error{status}")),
    }
    if status == 503:
        response["headers"] = {"Retry-After": _header("seconds", {"type": "integer"})}
    elif status == 401:
        response["headers"] = {"WWW-Authenticate": _header('`Bearer realm="mlserve admin"`')}
    return response


def _path_parameters(path: str) -> list[Schema]:
    params: list[Schema] = [
        {
            "name": "model",
            "in": "path",
            "required": True,
            "description": "model name: letters, digits, `_`, `.`, `-`, at most 128, not "
            "starting with `.` (otherwise 400)",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$"},
            "example": "credit-risk",
        }
    ]
    if "{version}" in path:
        params.append(
            {
                "name": "version",
                "in": "path",
                "required": True,
                "description": "a positive integer without leading zeros (otherwise 400)",
                "schema": {"type": "string", "pattern": "^[1-9][0-9]{0,17}$"},
                "example": "1",
            }
        )
    return params


# The README's example: the demo's credit-risk model takes 20 FP32 features as "X".
_EXAMPLE_REQUEST = {
    "id": "loan-42",
    "inputs": [
        {
            "name": "X",
            "datatype": "FP32",
            "shape": [1, 20],
            "data": [
                *(62.5, 0.21, 12.0, 4, 18.0, 36, 7.5, 6.0, 38, 0),
                *(0.35, 14.0, 1, 1, 1, 2.1, 1, 250.0, 0, 1.0),
            ],
        }
    ],
}

_ROUTING_KEY = {
    "name": "mlserve-routing-key",
    "in": "header",
    "required": False,
    "description": "sticky routing key: the same key always lands on the same side of the "
    "stable/canary split (ignored when the URL names a version)",
    "schema": {"type": "string"},
}

_ANSWER_HEADERS = {
    "mlserve-model-version": _header("the version that answered"),
    "mlserve-route": _header(
        "why that version answered",
        {"type": "string", "enum": ["stable", "canary", "pinned"]},
    ),
    "Server-Timing": _header("`queue;dur=…, infer;dur=…, total;dur=…` in milliseconds"),
}


def _components() -> Schema:
    datatype = {"type": "string", "enum": list(V2_TO_NUMPY)}
    shape = {"type": "array", "items": {"type": "integer", "minimum": 0}}
    routing_properties = {
        "stable": {"type": "integer", "minimum": 0},
        "canary": {"type": "integer", "minimum": 0},
        "canary_weight": {"type": "number", "minimum": 0, "maximum": 100},
        "shadows": {"type": "array", "items": {"type": "integer", "minimum": 1}},
        "shadow_sample": {"type": "number", "minimum": 0, "maximum": 1},
        "shadow_queue": {"type": "integer", "minimum": 1},
    }
    schemas: dict[str, Schema] = {
        "Datatype": datatype,
        "Live": {
            "type": "object",
            "required": ["live"],
            "additionalProperties": False,
            "properties": {"live": {"type": "boolean"}},
        },
        "Ready": {
            "type": "object",
            "required": ["ready"],
            "additionalProperties": False,
            "properties": {"ready": {"type": "boolean"}},
        },
        "ModelReady": {
            "type": "object",
            "required": ["name", "ready"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "ready": {"type": "boolean"},
                "reason": {
                    "type": "string",
                    "description": "why not, when not ready: loading, failed to load (with "
                    "the failure), refused by its validation gate, unknown, ...",
                },
                "error": {"type": "string", "description": "the reason, as an error body"},
                "code": {
                    "type": "string",
                    "description": "the error code, with `error`",
                    "enum": sorted({*_ERRORS[404][0], *_ERRORS[503][0]}),
                },
            },
        },
        "ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "TensorMetadata": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {
                "name": {"type": "string"},
                "datatype": _schema("Datatype"),
                "shape": {
                    "type": "array",
                    "description": "-1 for a free dimension",
                    "items": {"type": "integer", "minimum": -1},
                },
            },
        },
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs", "parameters"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": _schema("TensorMetadata")},
                "outputs": {"type": "array", "items": _schema("TensorMetadata")},
                "parameters": {
                    "type": "object",
                    "description": "per-version state, failure reason, providers, execution "
                    "mode, warm-up timing, lineage, gate and explain availability; the "
                    "routing split in force",
                },
            },
        },
        "RequestInput": {
            "type": "object",
            "required": ["name", "shape", "datatype"],
            "properties": {
                "name": {"type": "string"},
                "shape": shape,
                "datatype": _schema("Datatype"),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "binary_data_size": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "bytes of this tensor in the binary part",
                        }
                    },
                },
                "data": {
                    "type": "array",
                    "description": "row-major elements, flat or nested; absent for a binary input",
                    "items": {},
                },
            },
        },
        "RequestOutput": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "parameters": {
                    "type": "object",
                    "properties": {"binary_data": {"type": "boolean"}},
                },
            },
        },
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string", "description": "echoed in the answer"},
                "parameters": {
                    "type": "object",
                    "properties": {
                        "routing_key": {"type": "string"},
                        "binary_data_output": {"type": "boolean"},
                        "explain_outputs": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "string"},
                            "description": "explain only: the outputs to explain",
                        },
                    },
                },
                "inputs": {"type": "array", "minItems": 1, "items": _schema("RequestInput")},
                "outputs": {"type": "array", "items": _schema("RequestOutput")},
            },
        },
        "ResponseOutput": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {
                "name": {"type": "string"},
                "datatype": _schema("Datatype"),
                "shape": shape,
                "parameters": {
                    "type": "object",
                    "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                },
                "data": {"type": "array", "description": "flat, row-major", "items": {}},
            },
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "model_version", "outputs"],
            "additionalProperties": False,
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "outputs": {"type": "array", "items": _schema("ResponseOutput")},
            },
        },
        "ExplainResponse": {
            "type": "object",
            "required": ["model_name", "model_version", "method", "rows_evaluated", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "method": {"type": "string", "enum": ["occlusion"]},
                "rows_evaluated": {"type": "integer", "minimum": 1},
                "baseline": {
                    "type": "object",
                    "required": ["source", "feature_names", "statistics", "values"],
                    "properties": {
                        "source": {"type": "string"},
                        "feature_names": {"type": "array", "items": {"type": "string"}},
                        "statistics": {"type": "array", "items": {"type": "string"}},
                        "values": {"type": "array", "items": {"type": "number"}},
                    },
                },
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "datatype", "shape", "attributions"],
                        "properties": {
                            "name": {"type": "string"},
                            "datatype": _schema("Datatype"),
                            "shape": shape,
                            "prediction": {"description": "the model's answer for the rows"},
                            "baseline_prediction": {"description": "its answer at the baseline"},
                            "attributions": {
                                "type": "array",
                                "description": "the output's shape with the feature axis "
                                "inserted after the rows",
                            },
                        },
                    },
                },
            },
        },
        "MonitorReport": {
            "type": "object",
            "required": ["model", "monitoring", "versions"],
            "properties": {
                "model": {"type": "string"},
                "monitoring": {"type": "boolean"},
                "guardrails": {"type": "object", "description": "the last canary verdict"},
                "unavailable_versions": {
                    "type": "object",
                    "description": "versions that do not serve (loading, failed) and why",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["state", "reason"],
                        "properties": {
                            "state": {"type": "string"},
                            "reason": _nullable({"type": "string"}),
                        },
                    },
                },
                "versions": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["requests", "pending", "drift"],
                        "properties": {
                            "requests": {"type": "object"},
                            "pending": {"type": "integer"},
                            "drift": {"type": "object", "nullable": True},
                            "note": {"type": "string"},
                            "predictions": {"type": "object"},
                            "gate": {"type": "object"},
                            "lineage": {"type": "object"},
                            "shadow": {"type": "object"},
                        },
                    },
                },
            },
        },
        "Routing": {
            "type": "object",
            "required": list(routing_properties),
            "properties": routing_properties,
        },
        "RoutingChange": {
            "type": "object",
            "description": "any of the routing keys; the versions named must be ready",
            "additionalProperties": False,
            "properties": routing_properties,
        },
        "RoutingState": {
            "type": "object",
            "required": ["model", "ready_versions", "model_toml", "override", "effective"],
            "properties": {
                "model": {"type": "string"},
                "ready_versions": {"type": "array", "items": {"type": "string"}},
                "model_toml": _nullable(_schema("Routing")),
                "override": _nullable(_schema("Routing")),
                "effective": _schema("Routing"),
            },
        },
        "RepositoryIndex": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "state"],
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "state": {"type": "string"},
                    "reason": {"type": "string"},
                },
            },
        },
    }
    schemas.update(_triton_schemas())
    schemas.update({f"Error{s}": _error_schema(s) for s in _ERRORS})
    responses = {_RESPONSE_NAMES[s]: _error_response(s) for s in _ERRORS}
    return {
        "schemas": schemas,
        "responses": responses,
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "the token of `MLSERVE_ADMIN_TOKEN`",
            }
        },
    }


def _triton_schemas() -> dict[str, Schema]:
    """Triton's model configuration and statistics, as far as mlserve fills them."""
    count = {"type": "integer", "minimum": 0}
    duration = {
        "type": "object",
        "required": ["count", "ns"],
        "properties": {"count": count, "ns": count},
    }
    tensor = {
        "type": "object",
        "required": ["name", "data_type", "dims"],
        "properties": {
            "name": {"type": "string"},
            "data_type": {"type": "string", "enum": sorted(map(triton_type, V2_TO_NUMPY))},
            "dims": {"type": "array", "items": {"type": "integer", "minimum": -1}},
        },
    }
    stages = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
    return {
        "TritonTensorConfig": tensor,
        "TritonModelConfig": {
            "type": "object",
            "description": "Triton's model configuration extension: the version's signature "
            "and batching (`dims` leave out the batch dimension when `max_batch_size` > 0)",
            "required": [
                "name",
                "platform",
                "backend",
                "version_policy",
                "max_batch_size",
                "input",
                "output",
            ],
            "properties": {
                "name": {"type": "string"},
                "platform": {"type": "string", "enum": [PLATFORM]},
                "backend": {"type": "string", "enum": [BACKEND]},
                "version_policy": {"type": "object"},
                "max_batch_size": count,
                "input": {"type": "array", "items": _schema("TritonTensorConfig")},
                "output": {"type": "array", "items": _schema("TritonTensorConfig")},
                "dynamic_batching": {
                    "type": "object",
                    "required": ["max_queue_delay_microseconds"],
                    "properties": {"max_queue_delay_microseconds": count},
                },
                "parameters": {"type": "object"},
            },
        },
        "TritonDuration": duration,
        "TritonModelStats": {
            "type": "object",
            "required": [
                "name",
                "version",
                "last_inference",
                "inference_count",
                "execution_count",
                "inference_stats",
                "batch_stats",
            ],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "last_inference": {**count, "description": "milliseconds since the epoch"},
                "inference_count": {**count, "description": "rows inferred"},
                "execution_count": {**count, "description": "session runs"},
                "inference_stats": {
                    "type": "object",
                    "required": list(stages),
                    "properties": {
                        k: _schema("TritonDuration") for k in (*stages, "cache_hit", "cache_miss")
                    },
                },
                "batch_stats": {"type": "array", "items": {"type": "object"}},
                "memory_usage": {"type": "array", "items": {"type": "object"}},
            },
        },
        "TritonStatistics": {
            "type": "object",
            "required": ["model_stats"],
            "properties": {"model_stats": {"type": "array", "items": _schema("TritonModelStats")}},
        },
    }


def _operation(
    summary: str,
    ok: Schema,
    errors: tuple[int, ...],
    *,
    tags: tuple[str, ...],
    parameters: list[Schema] | None = None,
    body: Schema | None = None,
    admin: bool = False,
) -> Schema:
    op: Schema = {
        "summary": summary,
        "tags": list(tags),
        "responses": {"200": ok, **_errors(*errors)},
    }
    if body is not None:  # the app times the reading of request bodies (408)
        op["responses"] = {"200": ok, **_errors(*errors, 408)}
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    if admin:
        op["security"] = [{"bearerAuth": []}]
    return op


def _ok(description: str, schema: Schema, headers: Schema | None = None) -> Schema:
    response: Schema = {"description": description, "content": _json(schema)}
    if headers:
        response["headers"] = headers
    return response


def _model_paths(paths: dict[str, Schema]) -> None:
    """The model-scoped routes, each with and without a version."""
    infer_body = {
        "required": True,
        "description": "A V2 inference request as JSON; or, with the binary tensor extension, "
        "a JSON header of `Inference-Header-Content-Length` bytes followed by the tensors' raw "
        "bytes (inputs with `parameters.binary_data_size`); with "
        "`Inference-Header-Content-Length: 0` the whole body is the raw tensor of a "
        "single-input model.",
        "content": {
            "application/json": {
                "schema": _schema("InferenceRequest"),
                "example": _EXAMPLE_REQUEST,
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    explain_body = {
        "required": True,
        "description": "The same V2 JSON request as for `/infer` (no binary extension).",
        "content": {
            "application/json": {
                "schema": _schema("InferenceRequest"),
                "example": _EXAMPLE_REQUEST,
            }
        },
    }
    for base in (_MODEL, _VERSION):
        pinned = base == _VERSION
        params = _path_parameters(base)
        which = "the version" if pinned else "the model (its default version)"
        ready_503 = {
            "description": "Not ready: the ready body with `reason` (loading, failed with "
            "its failure, refused by the validation gate); a model whose files cannot be "
            "read adds `error`, `code` and `Retry-After`.",
            "headers": {"Retry-After": _header("seconds (with the error body)", required=False)},
            "content": _json(_schema("ModelReady")),
        }
        ready_404 = {
            "description": "Unknown model or version: the ready body (`ready` false, "
            "`reason`) with the error body's `error` and `code`.",
            "content": _json(_schema("ModelReady")),
        }
        ready_errors = _errors(400, 404)
        ready_errors["404"] = ready_404
        ready_errors["503"] = ready_503
        paths[base] = {
            "get": _operation(
                f"Metadata of {which}",
                _ok("V2 model metadata", _schema("ModelMetadata")),
                (400, 404, 503),
                tags=("v2",),
                parameters=params,
            )
        }
        paths[base + "/ready"] = {
            "get": {
                "summary": f"Whether {which} is ready",
                "tags": ["v2"],
                "parameters": params,
                "responses": {
                    "200": _ok("ready", _schema("ModelReady")),
                    **dict(sorted(ready_errors.items())),
                },
            }
        }
        paths[base + "/config"] = {
            "get": _operation(
                f"Triton's model configuration of {which}",
                _ok("The model configuration", _schema("TritonModelConfig")),
                (400, 404, 503),
                tags=("triton",),
                parameters=params,
            )
        }
        paths[base + "/stats"] = {
            "get": _operation(
                f"Triton's statistics of {which}"
                if pinned
                else "Triton's statistics of the model's ready versions",
                _ok("Counters and times summed over workers", _schema("TritonStatistics")),
                (400, 404, 503),
                tags=("triton",),
                parameters=params,
            )
        }
        paths[base + "/infer"] = {
            "post": _operation(
                f"Inference on {which}",
                {
                    "description": "The V2 inference response: JSON, or with binary outputs "
                    "the JSON header (`Inference-Header-Content-Length` bytes) followed by "
                    "the outputs' raw bytes.",
                    "headers": {
                        **_ANSWER_HEADERS,
                        "Inference-Header-Content-Length": _header(
                            "with binary outputs: the length of the JSON header",
                            {"type": "integer"},
                            required=False,
                        ),
                    },
                    "content": {
                        "application/json": {"schema": _schema("InferenceResponse")},
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                    },
                },
                (400, 404, 409, 413, 415, 503, 504),
                tags=("v2",),
                parameters=[
                    *params,
                    _ROUTING_KEY,
                    {
                        "name": "Inference-Header-Content-Length",
                        "in": "header",
                        "required": False,
                        "description": "binary tensor extension: the length of the JSON header "
                        "at the start of the body (0: the body is one raw tensor)",
                        "schema": {"type": "integer", "minimum": 0},
                    },
                ],
                body=infer_body,
            )
        }
        paths[base + "/explain"] = {
            "post": _operation(
                f"Feature attributions by occlusion on {which}",
                _ok("The explanation", _schema("ExplainResponse"), _ANSWER_HEADERS),
                (400, 404, 409, 413, 503, 504),
                tags=("explain",),
                parameters=[*params, _ROUTING_KEY],
                body=explain_body,
            )
        }
        paths[base + "/monitor"] = {
            "get": _operation(
                f"Drift, data quality and traffic of {which}"
                if pinned
                else "Drift, data quality and traffic of the model's ready versions",
                _ok("The monitoring report", _schema("MonitorReport")),
                (400, 404, 503),
                tags=("monitoring",),
                parameters=params,
            )
        }


def _admin_paths(paths: dict[str, Schema]) -> None:
    params = _path_parameters(_ADMIN)
    state = _ok("The routing now in force", _schema("RoutingState"))
    common = (400, 401, 403, 404, 503)
    change = (*common, 507)  # persisted and audited: 507 when the disk is full
    paths[_ADMIN + "/routing"] = {
        "get": _operation(
            "The model's routing: model.toml's, the override, the effective one",
            state,
            common,
            tags=("admin",),
            parameters=params,
            admin=True,
        ),
        "put": _operation(
            "Change the routing (persisted beside model.toml, audited)",
            state,
            (*change, 409, 413),
            tags=("admin",),
            parameters=params,
            body={"required": True, "content": _json(_schema("RoutingChange"))},
            admin=True,
        ),
        "delete": _operation(
            "Drop the override: model.toml's routing applies again",
            state,
            change,
            tags=("admin",),
            parameters=params,
            admin=True,
        ),
    }
    paths[_ADMIN + "/promote"] = {
        "post": _operation(
            "The canary becomes stable",
            state,
            (*change, 409),
            tags=("admin",),
            parameters=params,
            admin=True,
        )
    }
    paths[_ADMIN + "/rollback"] = {
        "post": _operation(
            "The canary stops taking traffic",
            state,
            change,
            tags=("admin",),
            parameters=params,
            admin=True,
        )
    }
    paths["/v2/repository/index"] = {
        "post": _operation(
            "Every version and its state (model_repository extension)",
            _ok("The index", _schema("RepositoryIndex")),
            (400, 401, 403, 413),
            tags=("admin",),
            body={
                "required": False,
                "content": _json(
                    {
                        "type": "object",
                        "properties": {
                            "ready": {"type": "boolean", "description": "serving ones only"}
                        },
                    }
                ),
            },
            admin=True,
        )
    }
    repo_params = _path_parameters("/v2/repository/models/{model}")
    paths["/v2/repository/models/{model}/load"] = {
        "post": _operation(
            "Load or reload the model from disk now",
            _ok(
                "What changed and the versions' states",
                {
                    "type": "object",
                    "required": ["model", "changes", "versions"],
                    "properties": {
                        "model": {"type": "string"},
                        "changes": {"type": "array", "items": {"type": "string"}},
                        "versions": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                    },
                },
            ),
            (*change, 409),  # 409: the model's own files (model.toml, routing.json) unusable
            tags=("admin",),
            parameters=repo_params,
            admin=True,
        )
    }
    paths["/v2/repository/models/{model}/unload"] = {
        "post": _operation(
            "Retire every version; the watcher leaves the model alone until loaded again",
            _ok(
                "Unloaded",
                {
                    "type": "object",
                    "required": ["model", "unloaded"],
                    "properties": {
                        "model": {"type": "string"},
                        "unloaded": {"type": "boolean", "enum": [True]},
                    },
                },
            ),
            change,
            tags=("admin",),
            parameters=repo_params,
            admin=True,
        )
    }


def _other_paths(paths: dict[str, Schema]) -> None:
    health = {"description": "The probe's answer", "content": _json(_schema("Live"))}
    paths["/v2/health/live"] = {
        "get": {
            "summary": "Liveness",
            "tags": ["v2"],
            "responses": {"200": health, "503": health, **_errors()},
        }
    }
    ready = {"description": "The probe's answer", "content": _json(_schema("Ready"))}
    paths["/v2/health/ready"] = {
        "get": {
            "summary": "Readiness: the initial load has finished, not shutting down",
            "tags": ["v2"],
            "responses": {"200": ready, "503": ready, **_errors()},
        }
    }
    paths["/v2"] = {
        "get": _operation(
            "Server metadata and extensions",
            _ok("Server metadata", _schema("ServerMetadata")),
            (),
            tags=("v2",),
        )
    }
    paths["/v2/models/stats"] = {
        "get": _operation(
            "Triton's statistics of every ready version of every model",
            _ok("Counters and times summed over workers", _schema("TritonStatistics")),
            (),
            tags=("triton",),
        )
    }
    paths["/"] = {
        "get": _operation(
            "Where to go: the API page, the dashboard, the metrics",
            {
                "description": "A small page; JSON links with `Accept: application/json`",
                "content": {
                    "text/html": {"schema": {"type": "string"}},
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["name", "links"],
                            "properties": {
                                "name": {"type": "string"},
                                "links": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string"},
                                },
                            },
                        }
                    },
                },
            },
            (),
            tags=("meta",),
        )
    }
    for path, (name, media) in docs.ASSETS.items():
        paths[path] = {
            "get": _operation(
                "The API page" if path == "/docs" else f"The API page's {path.rsplit('/', 1)[1]}",
                {
                    "description": name,
                    "content": {media.split(";")[0]: {"schema": {"type": "string"}}},
                },
                (),
                tags=("meta",),
            )
        }
    paths[OPENAPI_PATH] = {
        "get": _operation(
            "This document", _ok("OpenAPI 3.0", {"type": "object"}), (), tags=("meta",)
        )
    }
    paths["/metrics"] = {
        "get": _operation(
            "Prometheus metrics (OpenMetrics when the client prefers it)",
            {
                "description": "The exposition",
                "content": {
                    monitor.TEXT_FORMAT.split(";")[0]: {"schema": {"type": "string"}},
                    monitor.OPENMETRICS.split(";")[0]: {"schema": {"type": "string"}},
                },
            },
            (),
            tags=("monitoring",),
        )
    }
    paths["/v2/monitor/stream"] = {
        "get": _operation(
            "Server-Sent Events: one `snapshot` event per interval, until `max_seconds`",
            {
                "description": "The event stream",
                "content": {
                    "text/event-stream": {
                        "schema": {
                            "type": "object",
                            "description": "each event (after a first `retry: 1000`)",
                            "required": ["event", "data"],
                            "properties": {
                                "event": {"type": "string", "enum": ["snapshot"]},
                                "data": {
                                    "type": "string",
                                    "description": "JSON: per version and role, totals, "
                                    "request rate, latency quantiles and buckets, drift; "
                                    "models' routing and guardrails; latest audit entries",
                                },
                            },
                        }
                    }
                },
            },
            (400, 503),
            tags=("monitoring",),
            parameters=[
                {
                    "name": "interval",
                    "in": "query",
                    "required": False,
                    "description": "seconds between snapshots (default 1)",
                    "schema": {"type": "number", "minimum": 0.5, "maximum": 60},
                },
                {
                    "name": "max_seconds",
                    "in": "query",
                    "required": False,
                    "description": f"when the stream ends (default {monitor.STREAM_MAX_SECONDS:g})",
                    "schema": {"type": "number", "minimum": 1, "maximum": 3600},
                },
            ],
        )
    }
    for name in dashboard.STATIC:
        path = "/dashboard" if name.endswith(".html") else f"/dashboard/{name}"
        media = dashboard.MEDIA_TYPES[name[name.rindex(".") :]].split(";")[0]
        paths[path] = {
            "get": _operation(
                f"The live dashboard's {name}",
                {"description": name, "content": {media: {"schema": {"type": "string"}}}},
                (),
                tags=("dashboard",),
            )
        }


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of every route the app serves."""
    paths: dict[str, Schema] = {}
    _other_paths(paths)
    _model_paths(paths)
    _admin_paths(paths)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "mlserve",
            "version": __version__,
            "description": "Open Inference Protocol (KServe V2) over HTTP, with the "
            "binary_tensor_data and model_repository extensions, Triton's "
            "model_configuration and statistics extensions, explanations, monitoring and "
            "admin routing. `components.schemas` holds one request schema per loaded model "
            "and version (`<model>.v<version>.InferenceRequest`), and each infer operation "
            "one example per loaded version.",
        },
        "tags": [
            {"name": "v2", "description": "Open Inference Protocol"},
            {"name": "explain", "description": "feature attributions"},
            {"name": "monitoring", "description": "metrics, drift, live stream"},
            {"name": "dashboard", "description": "the live dashboard"},
            {"name": "admin", "description": "authenticated: routing, model repository"},
            {"name": "triton", "description": "Triton's model configuration and statistics"},
            {"name": "meta", "description": "this document, the API page and the root page"},
        ],
        "paths": paths,
        "components": _components(),
    }


DOCUMENT = build_document()
_INFER_PATHS = (_MODEL + "/infer", _VERSION + "/infer")


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
