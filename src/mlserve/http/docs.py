"""The API page (``/docs``): Swagger UI over ``/v2/openapi.json``, and the root page (``/``).

Swagger UI 5.35.0 is vendored from npm's ``swagger-ui-dist`` (Apache-2.0; its LICENSE and
NOTICE beside it in ``static/``): the bundle and stylesheet only, stored gzip-compressed and
sent compressed to clients that accept it. Nothing is fetched from anywhere but this server:
the Content-Security-Policy allows only same-origin scripts, styles and connections, and the
page's script turns off Swagger UI's remote validator. ``/`` points to the docs, the dashboard
and the metrics, as a small HTML page or, for ``Accept: application/json``, as JSON.
"""

from __future__ import annotations

import gzip
from importlib import resources

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .dashboard import HEADERS
from .operations import Answer, Operation

# Path → (file in static/, media type); ``.gz`` files are stored compressed.
ASSETS = {
    "/docs": ("docs.html", "text/html; charset=utf-8"),
    "/docs/docs.js": ("docs.js", "text/javascript; charset=utf-8"),
    "/docs/swagger-ui-bundle.js": ("swagger-ui-bundle.js.gz", "text/javascript; charset=utf-8"),
    "/docs/swagger-ui.css": ("swagger-ui.css.gz", "text/css; charset=utf-8"),
}
LINKS = {
    "docs": "/docs",
    "openapi": "/v2/openapi.json",
    "dashboard": "/dashboard",
    "metrics": "/metrics",
}
_ROOT_HTML = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mlserve</title>
<link rel="icon" href="data:,"></head>
<body><h1>mlserve</h1><ul>
<li><a href="/docs">/docs</a>: the API, with requests you can try</li>
<li><a href="/dashboard">/dashboard</a>: live traffic, latency and drift</li>
<li><a href="/metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="/v2/openapi.json">/v2/openapi.json</a>: the OpenAPI document</li>
</ul></body></html>
"""

OPERATIONS = (
    Operation(
        "/",
        "GET",
        "Where to go: the API page, the dashboard, the metrics",
        "meta",
        Answer(
            "A small page; JSON links with `Accept: application/json`",
            (("text/html", "Text"), ("application/json", "RootLinks")),
        ),
    ),
    *(
        Operation(
            path,
            "GET",
            "The API page" if path == "/docs" else f"The API page's {path.rsplit('/', 1)[1]}",
            "meta",
            Answer(name, ((media.split(";")[0], "Text"),)),
        )
        for path, (name, media) in ASSETS.items()
    ),
)


def routes() -> list[Route]:
    """``GET /``, ``GET /docs`` and the page's assets, read from the package once."""
    folder = resources.files(__package__ or "mlserve.http").joinpath("static")

    def serve(path: str, name: str, media: str) -> Route:
        stored = folder.joinpath(name).read_bytes()
        compressed = name.endswith(".gz")
        plain = gzip.decompress(stored) if compressed else stored

        async def endpoint(request: Request) -> Response:
            if compressed and "gzip" in request.headers.get("accept-encoding", ""):
                headers = {**HEADERS, "content-encoding": "gzip", "vary": "accept-encoding"}
                return Response(stored, media_type=media, headers=headers)
            headers = {**HEADERS, "vary": "accept-encoding"} if compressed else HEADERS
            return Response(plain, media_type=media, headers=headers)

        return Route(path, endpoint, methods=["GET"])

    async def root(request: Request) -> Response:
        if "application/json" in request.headers.get("accept", ""):
            return Response(
                orjson.dumps({"name": "mlserve", "links": LINKS}),
                media_type="application/json",
                headers={"vary": "accept"},
            )
        return Response(
            _ROOT_HTML, media_type="text/html; charset=utf-8", headers={**HEADERS, "vary": "accept"}
        )

    return [
        Route("/", root, methods=["GET"]),
        *(serve(path, name, media) for path, (name, media) in ASSETS.items()),
    ]
