"""The live dashboard: one HTML page, its script and stylesheet, shipped in the package.

The page is fed by the Server-Sent Events stream (``/v2/monitor/stream``) and computes
request rates and p99 latency itself from successive snapshots. It is read-only and
unauthenticated, like ``/metrics``. Nothing is fetched from anywhere but this server: the
Content-Security-Policy allows only same-origin scripts, styles and connections.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .operations import Answer, Operation

STATIC = ("dashboard.html", "dashboard.js", "dashboard.css")
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def _path(name: str) -> str:
    return "/dashboard" if name.endswith(".html") else f"/dashboard/{name}"


OPERATIONS = tuple(
    Operation(
        _path(name),
        "GET",
        f"The live dashboard's {name}",
        "dashboard",
        Answer(name, ((MEDIA_TYPES[name[name.rindex(".") :]].split(";")[0], "Text"),)),
    )
    for name in STATIC
)


def routes() -> list[Route]:
    """``GET /dashboard`` and its two assets, read from the package once."""
    folder = resources.files(__package__ or "mlserve.http").joinpath("static")
    files = {name: folder.joinpath(name).read_bytes() for name in STATIC}

    def serve(name: str) -> Route:
        body = files[name]
        media = MEDIA_TYPES[name[name.rindex(".") :]]
        path = _path(name)

        async def endpoint(request: Request) -> Response:
            return Response(body, media_type=media, headers=HEADERS)

        return Route(path, endpoint, methods=["GET"])

    return [serve(name) for name in STATIC]
