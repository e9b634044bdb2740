"""``POST /v2/models/{m}[/versions/{v}]/explain``: feature attributions (``attribution.py``).

A Starlette route: the body is read within the server's size limit and parsed as JSON, the
service explains it, and the answer carries the same version, route and timing headers as
an inference answer. JSON only: the binary tensor extension belongs to ``/infer``.
"""

from __future__ import annotations

import asyncio
from time import perf_counter

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import InvalidInput
from ..names import check_model_name, parse_version
from ..service import InferenceService
from .bodies import read_body
from .operations import Body, Operation, json_ok, per_target

_TIMING = "queue;dur=%.3f, infer;dur=%.3f, total;dur=%.3f"

OPERATIONS = tuple(
    Operation(
        path,
        "POST",
        f"Feature attributions by occlusion on {which}",
        "explain",
        json_ok("The explanation", "ExplainResponse", "answer"),
        (400, 404, 409, 413, 415, 503, 504),
        parameters=("mlserve-routing-key",),
        body=Body(
            (("application/json", "InferenceRequest"),),
            description="The same V2 JSON request as for `/infer` (no binary extension).",
            example="InferenceRequest",
        ),
    )
    for path, which, _ in per_target("/explain")
)


def routes(service: InferenceService, max_body_bytes: int) -> list[Route]:
    """The explain routes bound to ``service``."""
    shedder, pipeline = service.shedder, service.pipeline

    async def explain(request: Request) -> Response:
        start = perf_counter()
        model = check_model_name(request.path_params["model"])
        raw = request.path_params.get("version")
        version = parse_version(raw) if raw is not None else None
        if shedder.share and shedder.shed_this():
            raise shedder.refuse()
        if "inference-header-content-length" in request.headers:
            raise InvalidInput(
                "explain takes a JSON body; the binary tensor extension is for /infer",
                reason="binary",
            )
        body = await read_body(request, max_body_bytes, asyncio.to_thread)
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"malformed JSON body: {exc}", reason="json") from None
        result = await pipeline.explain(
            model, version, document, request.headers.get("mlserve-routing-key")
        )
        payload = orjson.dumps(result.body, option=orjson.OPT_SERIALIZE_NUMPY)
        timing = _TIMING % (
            result.queue_s * 1e3,
            result.infer_s * 1e3,
            (perf_counter() - start) * 1e3,
        )
        headers = {
            "mlserve-model-version": result.version,
            "mlserve-route": result.role,
            "server-timing": timing,
        }
        return Response(payload, media_type="application/json", headers=headers)

    return [
        Route("/v2/models/{model}/explain", explain, methods=["POST"]),
        Route("/v2/models/{model}/versions/{version}/explain", explain, methods=["POST"]),
    ]
