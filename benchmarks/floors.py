"""Two floors for the serving benchmark: the same V2 JSON work without mlserve.

``raw_app``: a bare ASGI callable on uvicorn: read the body, orjson-parse it, build
the numpy input, call onnxruntime inline, encode a V2 JSON response. This is the
stack's floor: what any server on uvicorn + onnxruntime pays at minimum.
``starlette_app``: the same work as an ordinary Starlette endpoint.

Both serve ``POST /v2/models/{name}/infer`` for the models named in
``FLOOR_MODELS`` (``name=path.onnx,...``). Run with
``uvicorn --factory benchmarks.floors:raw_app``. No validation beyond what the work
needs: these are lower bounds, not servers.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_OPT = orjson.OPT_SERIALIZE_NUMPY


def _sessions() -> dict[str, tuple[ort.InferenceSession, str, list[str]]]:
    sessions = {}
    for item in os.environ["FLOOR_MODELS"].split(","):
        name, path = item.split("=", 1)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        outputs = [o.name for o in sess.get_outputs()]
        sessions[f"/v2/models/{name}/infer"] = (sess, sess.get_inputs()[0].name, outputs)
    return sessions


def _work(entry: tuple[ort.InferenceSession, str, list[str]], name: str, body: bytes) -> bytes:
    sess, input_name, outputs = entry
    tensor = orjson.loads(body)["inputs"][0]
    x = np.array(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    results = sess.run(outputs, {input_name: x})
    return orjson.dumps(
        {
            "model_name": name,
            "outputs": [
                {
                    "name": n,
                    "datatype": "FP32" if r.dtype == np.float32 else "INT64",
                    "shape": list(r.shape),
                    "data": r.reshape(-1),
                }
                for n, r in zip(outputs, results, strict=True)
            ],
        },
        option=_OPT,
    )


def raw_app() -> Any:
    sessions = _sessions()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        entry = sessions.get(scope["path"])
        if entry is None:
            status, payload = (
                (200, b'{"ready":true}') if scope["path"].startswith("/v2/health") else (404, b"{}")
            )
        else:
            chunks = []
            more = True
            while more:
                message = await receive()
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            status, payload = 200, _work(entry, scope["path"].split("/")[3], b"".join(chunks))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


def starlette_app() -> Starlette:
    sessions = _sessions()

    async def infer(request: Request) -> Response:
        entry = sessions[request.url.path]
        body = await request.body()
        return Response(
            _work(entry, request.path_params["name"], body), media_type="application/json"
        )

    async def ready(request: Request) -> Response:
        return Response(b'{"ready":true}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/v2/models/{name}/infer", infer, methods=["POST"]),
            Route("/v2/health/ready", ready),
        ]
    )
