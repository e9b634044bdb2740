"""The fast lane answers exactly as the ASGI lane: response for response, errors included.

Two real servers on one registry, one with ``--fast-lane off``. Each case is sent as raw
bytes to both (one connection per case, so pipelining, keep-alive and split reads are the
client's choice) and the answers are parsed with h11 and compared: status, headers (the
date and the timings' values aside) and body. The models are not the demo's: a
scikit-learn logistic regression on the wine data with a reference profile (monitoring on),
a model that runs on the thread pool (so the fast lane's answer waits), and the echo model
of every datatype. Afterwards both servers' metrics must count the same requests.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httptools
import numpy as np
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression

from mlserve.monitoring.profile import build_profile, save_profile

from .conftest import ServerProcess, echo_model, running_server, slow_batch_model, write_version
from .support.metrics import parse
from .support.raw_http import connect

MAX_BODY = 4096


@pytest.fixture(scope="module")
def wine_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = load_wine()
    x = data.data.astype(np.float32)
    model = LogisticRegression(max_iter=5000).fit(x, data.target)
    proto = convert_sklearn(
        model,
        initial_types=[("X", FloatTensorType([None, x.shape[1]]))],
        options={id(model): {"zipmap": False}},
        target_opset=17,
    )
    root = tmp_path_factory.mktemp("lanes")
    vdir = root / "wine" / "1"
    vdir.mkdir(parents=True)
    (vdir / "model.onnx").write_bytes(proto.SerializeToString())
    save_profile(build_profile(x, [f"f{i}" for i in range(x.shape[1])]), vdir / "reference.json")
    write_version(root, "echo", 1, echo_model())
    write_version(root, "slow", 1, slow_batch_model(1))
    (root / "slow" / "model.toml").write_text('[execution]\nmode = "thread"\n')
    return root


@pytest.fixture(scope="module")
def lanes(wine_registry: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    args = ("--max-body-bytes", str(MAX_BODY), "--body-timeout-seconds", "1")
    with (
        running_server(wine_registry, *args) as fast,
        running_server(wine_registry, *args, "--fast-lane", "off") as slow,
    ):
        yield fast, slow


class _Responses:
    """httptools callbacks collecting whole responses: (status, headers, body)."""

    def __init__(self) -> None:
        self.done: list[Any] = []
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.headers, self.body = [], b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done.append((self.parser.get_status_code(), _headers(self.headers), self.body))


def exchange(port: int, data: bytes | list[bytes], responses: int = 1) -> list[Any]:
    """Send ``data`` (a list: in separate writes) and read ``responses`` answers: (status,
    headers without the varying ones, body) each, then whether the server closed."""
    parsed = _Responses()
    closed = False
    with connect(port, 10) as sock:
        for part in data if isinstance(data, list) else [data]:
            sock.sendall(part)
        while len([r for r in parsed.done if r[0] >= 200]) < responses:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            parsed.parser.feed_data(chunk)
        if not closed:  # did the server keep the connection? A close shows as an empty read.
            sock.settimeout(0.3)
            with contextlib.suppress(TimeoutError):
                closed = sock.recv(1) == b""
    return [*parsed.done, ("closed", closed)]


def _headers(headers: Any) -> list[tuple[bytes, bytes]]:
    kept = []
    for name, value in headers:
        if name == b"date":
            continue
        if name == b"server-timing":  # the names and their order, not the durations
            value = re.sub(rb"dur=[0-9.]+", b"dur=*", value)
        kept.append((name, value))
    return kept


def post(path: str, body: bytes, *headers: bytes, version: bytes = b"1.1") -> bytes:
    head = [b"POST %s HTTP/%s" % (path.encode(), version), b"host: x"]
    head += [b"content-length: %d" % len(body), b"content-type: application/json", *headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def doc(rows: int = 1, name: str = "X", width: int = 13, **extra: Any) -> bytes:
    data = np.random.default_rng(rows).normal(size=(rows, width)).round(3).tolist()
    tensor = {"name": name, "shape": [rows, width], "datatype": "FP32", "data": data}
    return json.dumps({"inputs": [tensor], **extra}).encode()


WINE = "/v2/models/wine/infer"
BINARY_X = np.arange(13, dtype=np.float32).tobytes()
BINARY_HEAD = json.dumps(
    {
        "inputs": [
            {
                "name": "X",
                "shape": [1, 13],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(BINARY_X)},
            }
        ],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }
).encode()

CASES: dict[str, Any] = {
    "ok": post(WINE, doc()),
    "ok-with-id-and-version": post("/v2/models/wine/versions/1/infer", doc(3, id="r-1")),
    "binary": post(
        WINE,
        BINARY_HEAD + BINARY_X,
        b"inference-header-content-length: %d" % len(BINARY_HEAD),
    ),
    "routing-key": post(WINE, doc(2), b"mlserve-routing-key: tenant-7"),
    "thread-pool-model": post(
        "/v2/models/slow/infer",
        json.dumps(
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        ).encode(),
    ),
    "echo-bytes": post(
        "/v2/models/echo/infer",
        json.dumps(
            {"inputs": [{"name": "bytes", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}
        ).encode(),
    ),
    "malformed-json": post(WINE, b'{"inputs": ['),
    "wrong-input-name": post(WINE, doc(name="nope")),
    "nan": post(WINE, doc().replace(b"0.", b"NaN", 1)),
    "unknown-model": post("/v2/models/nosuch/infer", doc()),
    # The model is resolved before the body is parsed: 404, not the body's 400.
    "unknown-model-malformed-body": post("/v2/models/nosuch/infer", b"[{}, {}, {"),
    "bad-version": post("/v2/models/wine/versions/x/infer", doc()),
    "unknown-version": post("/v2/models/wine/versions/9/infer", doc()),
    "bad-model-name": post("/v2/models/..%2f/infer", doc()),
    "too-large-declared": post(WINE, b" " * (MAX_BODY + 1)),
    "bad-content-length": post(WINE, doc()).replace(b"content-length: ", b"content-length: x", 1),
    "bad-binary-header": post(WINE, doc(), b"inference-header-content-length: -1"),
    "binary-header-beyond-body": post(WINE, doc(), b"inference-header-content-length: 99999"),
    "get": b"GET /v2/models/wine/infer HTTP/1.1\r\nhost: x\r\n\r\n",
    "http-1.0": post(WINE, doc(), version=b"1.0"),
    "connection-close": post(WINE, doc(), b"connection: close"),
    "split-reads": [post(WINE, doc())[:40], post(WINE, doc())[40:]],
    "body-in-later-read": [
        post(WINE, doc())[: -len(doc())],
        doc(),
    ],
    "chunked": [
        b"POST /v2/models/wine/infer HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n",
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(doc()), doc()),
    ],
    "chunked-too-large": b"POST /v2/models/wine/infer HTTP/1.1\r\nhost: x\r\n"
    b"transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
    % (MAX_BODY + 1, b"x" * (MAX_BODY + 1)),
    "expect-100-continue": [post(WINE, doc(), b"expect: 100-continue")],
    "body-never-completes": post(WINE, doc())[:-5],  # 408 after the 1 s body timeout
    # Compressed bodies (Content-Encoding), inflated under the same body limit.
    "gzip": post(WINE, gzip.compress(doc(4)), b"content-encoding: gzip"),
    "deflate": post(WINE, zlib.compress(doc(4)), b"content-encoding: Deflate"),
    "identity": post(WINE, doc(), b"content-encoding: identity"),
    "gzip-binary": post(
        WINE,
        gzip.compress(BINARY_HEAD + BINARY_X),
        b"inference-header-content-length: %d" % len(BINARY_HEAD),
        b"content-encoding: gzip",
    ),
    "gzip-bomb": post(WINE, gzip.compress(b" " * (MAX_BODY + 1)), b"content-encoding: gzip"),
    "gzip-corrupt": post(WINE, b"not gzip at all", b"content-encoding: gzip"),
    "gzip-truncated": post(WINE, gzip.compress(doc())[:-12], b"content-encoding: gzip"),
    "gzip-trailing-data": post(WINE, gzip.compress(doc()) + b"xx", b"content-encoding: gzip"),
    "gzip-undeclared": post(WINE, gzip.compress(doc())),
    "brotli": post(WINE, doc(), b"content-encoding: br"),
    "two-codings": post(WINE, gzip.compress(doc()), b"content-encoding: gzip, gzip"),
    # A list of codings split over two headers is one list (RFC 9110 section 5.3).
    "two-coding-headers": post(
        WINE,
        gzip.compress(gzip.compress(doc())),
        b"content-encoding: gzip",
        b"content-encoding: gzip",
    ),
    "identity-then-gzip": post(
        WINE, gzip.compress(doc()), b"content-encoding: identity", b"content-encoding: gzip"
    ),
}
ENCODINGS = {  # case → (status, what the error names)
    "gzip": (200, b""),
    "deflate": (200, b""),
    "identity": (200, b""),
    "gzip-binary": (200, b""),
    "gzip-bomb": (413, b"decompressed (gzip) is over the limit of 4096 bytes"),
    "gzip-corrupt": (400, b"not valid gzip data"),
    "gzip-truncated": (400, b"truncated"),
    "gzip-trailing-data": (400, b"2 bytes after the end of its gzip data"),
    "gzip-undeclared": (400, b"malformed JSON"),
    "brotli": (415, b"Content-Encoding 'br' is not supported"),
    "two-codings": (415, b"'gzip, gzip' is not supported"),
    "two-coding-headers": (415, b"gzip or deflate, one coding"),
    "identity-then-gzip": (200, b""),
}
PIPELINED = {
    "three-pipelined": (post(WINE, doc(1)) + post(WINE, doc(2)) + post(WINE, doc(3)), 3),
    "pipelined-with-thread-model": (
        CASES["thread-pool-model"] + post(WINE, doc(2)) + CASES["thread-pool-model"],
        3,
    ),
    "pipelined-then-garbage": (post(WINE, doc()) + b"GARBAGE\r\n\r\n", 2),
    "pipelined-error-then-ok": (post(WINE, b"{") + post(WINE, doc()), 2),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.slow
def test_lanes_answer_alike(lanes: tuple[ServerProcess, ServerProcess], case: str) -> None:
    fast, asgi = lanes
    got = exchange(fast.port, CASES[case])
    expected = exchange(asgi.port, CASES[case])
    assert got == expected
    assert got[0][0] != 500, got
    if case == "unknown-model-malformed-body":
        assert got[0][0] == 404 and b"unknown model 'nosuch'" in got[0][2]


@pytest.mark.parametrize("case", sorted(ENCODINGS))
@pytest.mark.slow
def test_compressed_bodies(lanes: tuple[ServerProcess, ServerProcess], case: str) -> None:
    """A compressed body answers as the same body sent plain; a bomb, a corrupt or
    truncated stream and an unknown coding are refused with what was wrong."""
    fast, asgi = lanes
    status, message = ENCODINGS[case]
    got = exchange(fast.port, CASES[case])
    assert got == exchange(asgi.port, CASES[case])  # both lanes, and both count it
    ((got_status, _headers, body), _closed) = got
    assert got_status == status, body
    assert message in body, body
    if case in ("gzip", "deflate"):
        ((_s, _h, plain), _c) = exchange(fast.port, post(WINE, doc(4)))
        exchange(asgi.port, post(WINE, doc(4)))
        assert json.loads(body)["outputs"] == json.loads(plain)["outputs"]


@pytest.mark.parametrize("case", sorted(PIPELINED))
@pytest.mark.slow
def test_pipelined_requests_answer_alike(
    lanes: tuple[ServerProcess, ServerProcess], case: str
) -> None:
    fast, asgi = lanes
    data, count = PIPELINED[case]
    got = exchange(fast.port, data, count)
    assert got == exchange(asgi.port, data, count)


def test_answers_are_the_models(lanes: tuple[ServerProcess, ServerProcess]) -> None:
    """Not only alike: right. The fast lane's answer carries the version, the route and the
    timing headers, and its outputs are the model's."""
    fast, asgi = lanes
    ((status, headers, body), _closed) = exchange(fast.port, CASES["ok-with-id-and-version"])
    exchange(asgi.port, CASES["ok-with-id-and-version"])  # both servers count the same
    assert status == 200
    names = [n for n, _ in headers]
    assert names[:2] == [b"content-type", b"content-length"]
    assert (b"mlserve-model-version", b"1") in headers and (b"mlserve-route", b"pinned") in headers
    assert dict(headers)[b"server-timing"] == b"queue;dur=*, infer;dur=*, total;dur=*"
    answer = json.loads(body)
    assert answer["id"] == "r-1" and answer["model_version"] == "1"


@pytest.mark.slow
def test_both_lanes_count_the_same(lanes: tuple[ServerProcess, ServerProcess]) -> None:
    """After the same cases, the two servers' request counters agree series for series."""
    fast, asgi = lanes
    names = ("mlserve_requests_total", "mlserve_input_rejected_total")

    def counters(server: ServerProcess) -> set[tuple[object, float]]:
        (status, _h, body), _ = exchange(
            server.port, b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        assert status == 200
        return {(s.key(), s.value) for s in parse(body.decode()) if s.name in names and s.labels}

    for case in ("ok", "malformed-json", "too-large-declared", "binary"):  # more of both
        exchange(fast.port, CASES[case])
        exchange(asgi.port, CASES[case])
    assert counters(fast) == counters(asgi)
