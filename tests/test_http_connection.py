"""mlserve's own HTTP/1.1 protocol (``http/connection.py``) against a real server process.

Each behaviour that uvicorn's protocol gave, checked over loopback with raw sockets, the
answers parsed by h11 (an HTTP implementation independent of the server's httptools): HEAD
without a body, chunked answers, ``Expect: 100-continue`` on both lanes, pipelined requests
answered in order, HTTP/1.0, bodies in many reads and chunked bodies, smuggling shapes,
websocket upgrades refused, the keep-alive timeout, and a graceful shutdown that finishes
what is in flight and closes idle connections.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import ServerProcess, running_server
from .support.fast_slow import infer_body, write_fast_slow
from .support.raw_http import Reader, connect, read_all, request_bytes

INFER = "/v2/models/fast/infer"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fast_slow(tmp_path_factory.mktemp("connection"))


@pytest.fixture(scope="module")
def srv(root: Path) -> Iterator[ServerProcess]:
    with running_server(root, "--poll-seconds", "0") as server:
        yield server


def test_head_answers_have_no_body(srv: ServerProcess) -> None:
    with connect(srv.port) as s:
        s.sendall(
            request_bytes("HEAD", "/v2/health/live") + request_bytes("GET", "/v2/health/live")
        )
        reader = Reader(s)
        status, headers, body, _ = reader.expect("HEAD", "/v2/health/live")
        assert status == 200 and body == b""
        assert int(headers[b"content-length"]) > 0  # the length a GET would have
        status, headers, body, _ = reader.expect("GET", "/v2/health/live")
        assert status == 200 and len(body) == int(headers[b"content-length"])


@pytest.mark.slow
def test_answers_without_a_length_are_chunked(srv: ServerProcess) -> None:
    target = "/v2/monitor/stream?interval=0.5&max_seconds=1"
    with connect(srv.port) as s:
        s.sendall(request_bytes("GET", target))
        status, headers, body, chunked = Reader(s).expect("GET", target)
    assert status == 200 and chunked and b"content-length" not in headers
    assert body.startswith(b"data: ") or b"\ndata: " in body


@pytest.mark.parametrize("target", [INFER, "/v2/repository/index"])
def test_expect_100_continue(srv: ServerProcess, target: str) -> None:
    """Both lanes: the head is answered 100 before the body is sent; a head the server
    refuses at once gets its answer instead, without a 100."""
    body = infer_body() if target == INFER else b"{}"
    head, _, payload = request_bytes("POST", target, body, expect="100-continue").partition(
        b"\r\n\r\n"
    )
    with connect(srv.port) as s:
        s.sendall(head + b"\r\n\r\n")
        interim = s.recv(65536)
        if target == INFER:
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            s.sendall(payload)
            reader = Reader(s)
            status, _, answer, _ = reader.expect("POST", target)
            assert status == 200 and json.loads(answer)["outputs"]
        else:  # the admin route refuses without a token, before reading the body
            assert interim.startswith(b"HTTP/1.1 401") or interim.startswith(b"HTTP/1.1 403")
    with connect(srv.port) as s:  # an unknown model: 404 at once, no 100
        s.sendall(
            request_bytes("POST", "/v2/models/nosuch/infer", body, expect="100-continue").split(
                b"\r\n\r\n"
            )[0]
            + b"\r\n\r\n"
        )
        assert s.recv(65536).startswith(b"HTTP/1.1 404")


def test_pipelined_requests_are_answered_in_order(srv: ServerProcess) -> None:
    slow = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1], "data": [1e-3]},
                {"name": "size", "datatype": "INT64", "shape": [2], "data": [300, 300]},
            ]
        }
    ).encode()
    sequence = [
        ("POST", "/v2/models/slow/infer", slow),  # answered from a thread: finishes late
        ("GET", "/v2/health/live", None),
        ("POST", INFER, infer_body(2)),
        ("HEAD", "/v2", None),
        ("POST", "/v2/models/nosuch/infer", infer_body()),
        ("GET", "/v2/models/fast", None),
        ("POST", INFER, infer_body(3)),
    ]
    with connect(srv.port) as s:
        s.sendall(b"".join(request_bytes(m, t, b) for m, t, b in sequence))
        reader = Reader(s)
        got = [reader.expect(m, t) for m, t, _ in sequence]
    statuses = [g[0] for g in got]
    assert statuses == [200, 200, 200, 200, 404, 200, 200]
    assert json.loads(got[0][2])["outputs"][0]["name"] == "y"
    assert json.loads(got[2][2])["outputs"][0]["shape"][0] == 2
    assert got[3][2] == b""
    assert json.loads(got[5][2])["name"] == "fast"
    assert json.loads(got[6][2])["outputs"][0]["shape"][0] == 3


def test_garbage_behind_pipelined_requests_is_refused_after_their_answers(
    srv: ServerProcess,
) -> None:
    sequence = [("POST", INFER, infer_body(2)), ("GET", "/v2/health/live", None)]
    with connect(srv.port) as s:
        s.sendall(b"".join(request_bytes(m, t, b) for m, t, b in sequence) + b"GARBAGE\r\n\r\n")
        reader = Reader(s)
        assert [reader.expect(m, t)[0] for m, t, _ in sequence] == [200, 200]
        status, headers, body, _ = reader.expect("GET", "/")
        assert status == 400 and headers[b"connection"] == b"close"
        assert json.loads(body)["code"] == "invalid_http"
        assert reader.closed()


def test_http_1_0_is_answered_then_closed(srv: ServerProcess) -> None:
    for method, target, body in [("GET", "/v2/health/live", None), ("POST", INFER, infer_body())]:
        data = request_bytes(method, target, body).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
        with connect(srv.port) as s:
            s.sendall(data)
            answer = read_all(s, 30)  # connect's timeout
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), answer
        assert b"connection: close" in head.lower()
        assert json.loads(payload)


def test_bodies_in_many_reads_and_chunked_bodies(srv: ServerProcess) -> None:
    body = infer_body(200)
    with connect(srv.port) as s:
        whole = request_bytes("POST", INFER, body)
        s.sendall(whole)
        reader = Reader(s)
        expected = json.loads(reader.expect("POST", INFER)[2])["outputs"]
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for step in (997, 4096):  # the same request a few bytes at a time
            for i in range(0, len(whole), step):
                s.sendall(whole[i : i + step])
            assert json.loads(reader.expect("POST", INFER)[2])["outputs"] == expected
        s.sendall(request_bytes("POST", INFER, body, transfer_encoding="chunked"))
        assert json.loads(reader.expect("POST", INFER)[2])["outputs"] == expected


@pytest.mark.parametrize(
    "shape",
    [
        b"content-length: 10\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"content-length: 10\r\ncontent-length: 11\r\n\r\n" + b"x" * 11,
        b"transfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"transfer-encoding: identity\r\ncontent-length: 2\r\n\r\n{}",
    ],
)
def test_smuggling_shapes_are_refused(srv: ServerProcess, shape: bytes) -> None:
    with connect(srv.port) as s:
        s.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nhost: x\r\n" + shape)
        answer = read_all(s, 30)  # connect's timeout
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    assert answer.count(b"HTTP/1.1") == 1  # nothing smuggled was answered
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "invalid_http"


def test_websocket_upgrade_is_answered_as_http_then_closed(srv: ServerProcess) -> None:
    with connect(srv.port) as s:
        s.sendall(
            b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\n"
            b"upgrade: websocket\r\nsec-websocket-version: 13\r\n"
            b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n\x81\x85garbage"
        )
        answer = read_all(s, 30)  # connect's timeout
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200") and b"connection: close" in head, answer
    assert answer.count(b"HTTP/1.1") == 1


@pytest.mark.slow
def test_idle_keep_alive_connection_is_closed_after_the_timeout(srv: ServerProcess) -> None:
    with connect(srv.port) as s:
        s.sendall(request_bytes("GET", "/v2/health/live"))
        assert Reader(s).expect("GET", "/v2/health/live")[0] == 200
        start = time.monotonic()
        s.settimeout(15)
        assert s.recv(1) == b""
        assert 4.5 <= time.monotonic() - start < 7.0  # uvicorn's timeout_keep_alive: 5 s


@pytest.mark.slow
def test_shutdown_finishes_in_flight_requests_and_closes_idle_connections(root: Path) -> None:
    slow = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1], "data": [1e-3]},
                {"name": "size", "datatype": "INT64", "shape": [2], "data": [3500, 3500]},
            ]
        }
    ).encode()
    server = ServerProcess(root, "--poll-seconds", "0", "--drain-seconds", "30")
    try:
        server.wait_ready()
        with connect(server.port) as idle, connect(server.port) as busy:
            idle.sendall(request_bytes("GET", "/v2/health/live"))
            assert Reader(idle).expect("GET", "/v2/health/live")[0] == 200
            busy.sendall(request_bytes("POST", "/v2/models/slow/infer", slow))
            time.sleep(0.3)  # the request is in the server, its model running
            reader = Reader(busy)
            answers: list[Any] = []
            answered: list[float] = []

            def read() -> None:
                answers.append(reader.expect("POST", "/v2/models/slow/infer"))
                answered.append(time.monotonic())

            thread = threading.Thread(target=read)
            thread.start()
            server.proc.send_signal(signal.SIGTERM)
            idle.settimeout(5)
            assert idle.recv(1) == b""  # closed at once, not after the drain
            idle_closed = time.monotonic()
            thread.join(60)
            assert idle_closed < answered[0]  # ...while the slow request was still running
            status, headers, body, _ = answers[0]
            assert status == 200 and headers.get(b"connection") == b"close", headers
            assert json.loads(body)["outputs"][0]["name"] == "y"
            assert reader.closed()
        assert server.proc.wait(30) == 0
    finally:
        server.stop()


def test_no_private_uvicorn_api_in_the_package() -> None:
    """uvicorn runs the server through its public API only (``uvicorn.run``): what the
    package imports from uvicorn is the top-level module, nothing below it."""
    src = Path(__file__).resolve().parents[1] / "src" / "mlserve"
    offenders = []
    for path in sorted(src.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            words = line.split()
            if words[:1] in (["import"], ["from"]) and any(
                w.startswith("uvicorn.") or w.startswith("uvicorn,") for w in words[1:2]
            ):
                offenders.append(f"{path.relative_to(src)}:{number}: {line.strip()}")
    assert offenders == []
