"""Open Inference Protocol routes other than infer: health, server and model metadata, model
readiness (with the reason when not ready), and Triton's model configuration and statistics
extensions. Declares those operations for the OpenAPI document, and infer's (served by
``infer.py`` before Starlette)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import MLServeError
from ..names import check_model_name, parse_version
from ..service import InferenceService
from ..serving.triton import TritonViews
from .operations import Answer, Body, Operation, json_ok, per_target


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


_PROBE = Answer("The probe's answer", (("application/json", "Live"),))
_READY = Answer("The probe's answer", (("application/json", "Ready"),))
_STATS = "Counters and times summed over workers"
_MODEL_ERRORS = (400, 404, 503)
_INFER_OK = Answer(
    "The V2 inference response: JSON, or with binary outputs the JSON header "
    "(`Inference-Header-Content-Length` bytes) followed by the outputs' raw bytes.",
    (("application/json", "InferenceResponse"), ("application/octet-stream", "Binary")),
    ("answer", "binary"),
)
_INFER_BODY = Body(
    (("application/json", "InferenceRequest"), ("application/octet-stream", "Binary")),
    description="A V2 inference request as JSON; or, with the binary tensor extension, a JSON "
    "header of `Inference-Header-Content-Length` bytes followed by the tensors' raw bytes "
    "(inputs with `parameters.binary_data_size`); with `Inference-Header-Content-Length: 0` "
    "the whole body is the raw tensor of a single-input model.",
    example="InferenceRequest",
)

# The operations of routes(), and infer's: served before Starlette, by infer.py's handler
# (and the fast lane), and declared here with the rest of the protocol.
OPERATIONS = (
    Operation("/v2/health/live", "GET", "Liveness", "v2", _PROBE, answers=((503, _PROBE),)),
    Operation(
        "/v2/health/ready",
        "GET",
        "Readiness: the initial load has finished, not shutting down",
        "v2",
        _READY,
        answers=((503, _READY),),
    ),
    Operation(
        "/v2",
        "GET",
        "Server metadata and extensions",
        "v2",
        json_ok("Server metadata", "ServerMetadata"),
    ),
    Operation(
        "/v2/models/stats",
        "GET",
        "Triton's statistics of every ready version of every model",
        "triton",
        json_ok(_STATS, "TritonStatistics"),
    ),
    *(
        op
        for path, which, pinned in per_target("")
        for op in (
            Operation(
                path,
                "GET",
                f"Metadata of {which}",
                "v2",
                json_ok("V2 model metadata", "ModelMetadata"),
                _MODEL_ERRORS,
            ),
            Operation(
                path + "/ready",
                "GET",
                f"Whether {which} is ready",
                "v2",
                json_ok("ready", "ModelReady"),
                (400,),
                answers=(
                    (
                        404,
                        Answer(
                            "Unknown model or version: the ready body (`ready` false, "
                            "`reason`) with the error body's `error` and `code`.",
                            (("application/json", "ModelReady"),),
                        ),
                    ),
                    (
                        503,
                        Answer(
                            "Not ready: the ready body with `reason` (loading, failed with its "
                            "failure, refused by the validation gate); a model whose files "
                            "cannot be read adds `error`, `code` and `Retry-After`.",
                            (("application/json", "ModelReady"),),
                            ("retry-with-error",),
                        ),
                    ),
                ),
            ),
            Operation(
                path + "/config",
                "GET",
                f"Triton's model configuration of {which}",
                "triton",
                json_ok("The model configuration", "TritonModelConfig"),
                (*_MODEL_ERRORS, 409),  # 409: no version may serve unpinned (its gate)
            ),
            Operation(
                path + "/stats",
                "GET",
                f"Triton's statistics of {which}"
                if pinned
                else "Triton's statistics of the model's ready versions",
                "triton",
                json_ok(_STATS, "TritonStatistics"),
                _MODEL_ERRORS,
            ),
            Operation(
                path + "/infer",
                "POST",
                f"Inference on {which}",
                "v2",
                _INFER_OK,
                (400, 404, 409, 413, 415, 503, 504),
                parameters=("mlserve-routing-key", "Inference-Header-Content-Length"),
                body=_INFER_BODY,
            ),
        )
    ),
)


def routes(service: InferenceService) -> list[Route]:
    """The V2 routes bound to ``service``."""
    views = service.views
    triton = TritonViews(service.store, service.hub.merged)

    async def live(request: Request) -> Response:
        ok = views.live()
        return JSONResponse({"live": ok}, status_code=200 if ok else 503)

    async def ready(request: Request) -> Response:
        ok = views.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def server_metadata(request: Request) -> Response:
        return JSONResponse(views.server_metadata())

    async def model_metadata(request: Request) -> Response:
        model, version = _target(request)
        return JSONResponse(views.model_metadata(model, version))

    async def model_ready(request: Request) -> Response:
        """200 ready; 503 not ready; 404 unknown. Not ready, the body is the error body of
        what a request to it would get (its code: loading or failed, refused by its gate,
        ...) with ``"ready": false`` and the ``reason`` besides, and Retry-After only where
        waiting helps."""
        model, version = _target(request)
        body: dict[str, Any] = {"name": model}
        if version is not None:
            body["version"] = str(version)
        try:
            why = views.model_ready(model, version)
        except MLServeError as exc:
            if exc.status_code not in (404, 503):
                raise
            why = exc
        if why is None:
            body["ready"] = True
            return JSONResponse(body)
        body.update(ready=False, reason=why.message, error=why.message, code=why.code)
        headers = {k.decode(): v.decode() for k, v in why.headers}
        return JSONResponse(
            body, status_code=404 if why.status_code == 404 else 503, headers=headers
        )

    async def model_config(request: Request) -> Response:
        model, version = _target(request)
        return JSONResponse(triton.model_config(model, version))

    async def model_stats(request: Request) -> Response:
        if "model" in request.path_params:
            model, version = _target(request)
        else:
            model, version = None, None
        # The merge over workers reads their files: off the event loop, like /metrics.
        return JSONResponse(await asyncio.to_thread(triton.model_stats, model, version))

    return [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        # Before /v2/models/{model}: "stats" there is Triton's, not a model's name.
        Route("/v2/models/stats", model_stats, methods=["GET"]),
        Route("/v2/models/{model}", model_metadata, methods=["GET"]),
        Route("/v2/models/{model}/config", model_config, methods=["GET"]),
        Route("/v2/models/{model}/stats", model_stats, methods=["GET"]),
        Route("/v2/models/{model}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}", model_metadata, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/config", model_config, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/stats", model_stats, methods=["GET"]),
    ]


def _target(request: Request) -> tuple[str, int | None]:
    model = check_model_name(request.path_params["model"])
    raw = request.path_params.get("version")
    return model, parse_version(raw) if raw is not None else None
