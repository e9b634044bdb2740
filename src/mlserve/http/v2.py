"""Open Inference Protocol routes other than infer: health, server and model metadata."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..registry.layout import check_model_name, parse_version
from ..service import InferenceService


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def routes(service: InferenceService) -> list[Route]:
    """The V2 routes bound to ``service``."""
    views = service.views

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
        model, version = _target(request)
        ok = views.model_ready(model, version)
        body: dict[str, Any] = {"name": model, "ready": ok}
        if version is not None:
            body["version"] = str(version)
        return JSONResponse(body, status_code=200 if ok else 503)

    return [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/models/{model}", model_metadata, methods=["GET"]),
        Route("/v2/models/{model}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}", model_metadata, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/ready", model_ready, methods=["GET"]),
    ]


def _target(request: Request) -> tuple[str, int | None]:
    model = check_model_name(request.path_params["model"])
    raw = request.path_params.get("version")
    return model, parse_version(raw) if raw is not None else None
