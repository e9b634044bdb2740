"""One source for the error contract: every code a client can see is a class of
``mlserve.errors`` with its status and headers, the OpenAPI document lists each status's
codes from those classes, and the server's answers (the connection's own refusals, Starlette's
404/405, the core's errors) carry the class's code and headers."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from mlserve import errors
from mlserve.http import openapi

from .conftest import linear_model, running_server, write_version
from .support.raw_http import exchange

SRC = Path(__file__).resolve().parents[1] / "src" / "mlserve"


def _classes() -> list[type[errors.MLServeError]]:
    found, pending = [], [errors.MLServeError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_the_document_lists_every_class_s_code_under_its_status() -> None:
    by_status = errors.codes_by_status()
    assert set(openapi._ERRORS) == set(by_status)
    for status, (codes, meaning) in openapi._ERRORS.items():
        assert set(codes) == set(by_status[status]) and meaning, status
    sent = {c.code for c in _classes()} - {"client_disconnected", "http_error"}
    assert sent == {code for codes in by_status.values() for code in codes}
    document = openapi.DOCUMENT["components"]["schemas"]
    assert document["Error415"]["properties"]["code"]["enum"] == ["unsupported_media_type"]


def test_no_error_code_is_written_outside_errors_py() -> None:
    """A literal ``"code": "..."`` in the server's source would be a code with no class."""
    pattern = re.compile(r"""["']code["']\s*:\s*["'][a-z_]+["']""")
    for path in SRC.rglob("*.py"):
        if path.name in ("errors.py", "client.py", "openapi.py"):
            continue  # the classes; the client's own fallback; the schema's field
        assert not pattern.search(path.read_text()), path


def test_answers_carry_their_class_s_code_and_headers(tmp_path: Path) -> None:
    write_version(tmp_path / "registry", "m", 1, linear_model())
    with running_server(tmp_path / "registry", "--max-header-bytes", "4096") as srv:
        cases = [
            (b"NOT HTTP\r\n\r\n", errors.InvalidHttp),
            (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nhost: x\r\n\r\n", errors.UriTooLong),
            (
                b"GET / HTTP/1.1\r\nhost: x\r\nx: " + b"a" * 5000 + b"\r\n\r\n",
                errors.HeadersTooLarge,
            ),
        ]
        for data, cls in cases:
            head, _, body = exchange(srv.port, data).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 %d " % cls.status_code), head
            assert b'"code":"%s"' % cls.code.encode() in body, body
        with httpx.Client(base_url=srv.url) as client:
            for method, path, cls in (
                ("GET", "/v2/nothing-here", errors.NotFound),
                ("GET", "/v2/models/m/infer", errors.MethodNotAllowed),
                ("DELETE", "/v2/health/live", errors.MethodNotAllowed),
                ("POST", "/v2/models/nope/infer", errors.ModelNotFound),
            ):
                r = client.request(method, path, content=b"{}")
                assert (r.status_code, r.json()["code"]) == (cls.status_code, cls.code), path
            r = client.get("/v2/admin/models/m/routing")  # no admin token configured
            assert (r.status_code, r.json()["code"]) == (403, errors.Forbidden.code)
