"""The HTTP/1.1 protocol against hostile clients, on both lanes, over raw sockets.

Regressions for a hostile review of ``http/connection.py``: pipelined answers in order when
a request arrives while an earlier one runs, a client that never reads its answers stops
being read, a half-closed client still gets its answers, an early answer with body bytes
still owed closes the connection, a body still arriving when the shutdown drain ends gets a
JSON 503, no ``100 Continue`` for a body already sent, an ``Upgrade`` request's body is read,
and a chunk size line is bounded.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ServerProcess, running_server
from .support.fast_slow import infer_body, write_fast_slow
from .support.raw_http import Reader, connect, read_all, request_bytes

INFER = "/v2/models/fast/infer"
SLOW = "/v2/models/slow/infer"
LANES = ["on", "off"]


def slow_body(size: int) -> bytes:
    """A thread-mode request that runs two size×size MatMuls."""
    return json.dumps(
        {
            "id": "slow",
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1], "data": [1e-3]},
                {"name": "size", "datatype": "INT64", "shape": [2], "data": [size, size]},
            ],
        }
    ).encode()


def tagged(tag: str) -> bytes:
    document = json.loads(infer_body())
    document["id"] = tag
    return json.dumps(document).encode()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fast_slow(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def servers(root: Path) -> Iterator[dict[str, ServerProcess]]:
    with (
        running_server(root, "--poll-seconds", "0") as fast,
        running_server(root, "--poll-seconds", "0", "--fast-lane", "off") as asgi,
    ):
        yield {"on": fast, "off": asgi}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("lane", LANES)
@pytest.mark.slow
def test_a_request_read_while_an_earlier_one_runs_waits_its_turn(
    servers: dict[str, ServerProcess], lane: str
) -> None:
    """A slow request, a shorter one pipelined behind it, then a third request sent while
    the first still runs: answered 1, 2, 3 (the third used to overtake the second)."""
    for _ in range(4):
        with connect(servers[lane].port) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            second = json.loads(slow_body(150))
            second["id"] = "second"
            s.sendall(
                request_bytes("POST", SLOW, slow_body(1500))
                + request_bytes("POST", SLOW, json.dumps(second).encode())
            )
            time.sleep(0.1)
            s.sendall(request_bytes("POST", INFER, tagged("third")))
            reader = Reader(s)
            got = [reader.expect("POST", target) for target in (SLOW, SLOW, INFER)]
        assert [g[0] for g in got] == [200, 200, 200]
        assert [json.loads(g[2])["id"] for g in got] == ["slow", "second", "third"]


@pytest.mark.parametrize("lane", LANES)
def test_many_pipelined_requests_of_every_kind_are_answered_in_order(
    servers: dict[str, ServerProcess], lane: str
) -> None:
    sequence = []
    for i in range(12):
        sequence += [
            ("POST", INFER, tagged(f"inline-{i}")),
            ("GET", "/v2/health/live", None),
            ("POST", SLOW, slow_body(60 + i)),
        ]
    with connect(servers[lane].port) as s:
        data = b"".join(request_bytes(m, t, b) for m, t, b in sequence)
        for i in range(0, len(data), 700):  # in many reads, some mid-request
            s.sendall(data[i : i + 700])
        reader = Reader(s)
        for i, (method, target, _) in enumerate(sequence):
            status, _, body, _ = reader.expect(method, target)
            assert status == 200, body
            if i % 3 == 0:
                assert json.loads(body)["id"] == f"inline-{i // 3}"
            elif i % 3 == 1:
                assert json.loads(body) == {"live": True}
            else:
                assert json.loads(body)["id"] == "slow"


@pytest.mark.parametrize("lane", LANES)
@pytest.mark.slow
def test_a_client_that_never_reads_stops_being_read(
    servers: dict[str, ServerProcess], lane: str
) -> None:
    """Requests refused at their head (unknown model), pipelined by a client that reads
    nothing: the server stops reading instead of buffering answers without bound."""
    server = servers[lane]
    one = b"POST /v2/models/nope/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
    batch = one * 1000
    before = rss_kib(server.proc.pid)
    sent = [0, 0]  # in the first 3 s, in the 2 s after
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the answers fill it soon
        s.connect(("127.0.0.1", server.port))
        s.setblocking(False)
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < 5:
            try:
                sent[elapsed >= 3] += s.send(batch)
            except BlockingIOError:
                time.sleep(0.01)
        grown = rss_kib(server.proc.pid) - before
    # Once the kernel's socket buffers are full the server reads no more (it read on at its
    # full rate, answering into an unbounded buffer, before).
    assert sent[1] < 2**20, sent
    assert grown < 8 * 1024, f"the server grew {grown} KiB"
    with connect(server.port) as s:  # and it still serves
        s.sendall(request_bytes("GET", "/v2/health/live"))
        assert Reader(s).expect("GET", "/v2/health/live")[0] == 200


@pytest.mark.parametrize("lane", LANES)
def test_a_half_closed_client_gets_its_answers(
    servers: dict[str, ServerProcess], lane: str
) -> None:
    sequence = [
        ("POST", SLOW, slow_body(400)),
        ("POST", INFER, tagged("a")),
        ("GET", "/v2/health/live", None),
        ("POST", INFER, tagged("b")),
    ]
    with connect(servers[lane].port) as s:
        s.sendall(b"".join(request_bytes(m, t, b) for m, t, b in sequence))
        s.shutdown(socket.SHUT_WR)
        reader = Reader(s)
        got = [reader.expect(m, t) for m, t, _ in sequence]
        assert reader.closed(10)
    assert [g[0] for g in got] == [200, 200, 200, 200]
    assert [json.loads(got[i][2]).get("id") for i in (0, 1, 3)] == ["slow", "a", "b"]


@pytest.mark.parametrize("lane", LANES)
def test_an_early_answer_with_the_body_owed_closes_the_connection(
    servers: dict[str, ServerProcess], lane: str
) -> None:
    """413 at the head of an ``Expect: 100-continue`` request whose body is over the limit:
    the client may skip the body, so the connection ends after the answer rather than
    taking what comes next for body bytes."""
    with connect(servers[lane].port) as s:
        s.sendall(
            b"POST " + INFER.encode() + b" HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
            b"content-length: 1000000000000\r\n\r\n"
        )
        time.sleep(0.2)
        s.sendall(request_bytes("POST", INFER, tagged("next")))
        answer = read_all(s)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer
    assert b"connection: close" in head.lower()
    assert json.loads(body)["code"] == "payload_too_large"
    assert answer.count(b"HTTP/1.1") == 1


@pytest.mark.parametrize("lane", LANES)
@pytest.mark.slow
def test_a_body_still_arriving_when_the_drain_ends_is_answered_503(root: Path, lane: str) -> None:
    server = ServerProcess(
        root, "--fast-lane", lane, "--drain-seconds", "1", "--body-timeout-seconds", "30"
    )
    try:
        server.wait_ready()
        body = infer_body()
        with connect(server.port) as s:
            s.sendall(request_bytes("POST", INFER, body)[: -len(body) // 2])
            time.sleep(0.3)
            server.proc.send_signal(signal.SIGTERM)
            answer = read_all(s, 15)
        assert server.proc.wait(30) == 0
    finally:
        server.stop()
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), answer
    lines = head.lower().split(b"\r\n")
    assert b"connection: close" in lines and b"retry-after: 1" in lines
    assert json.loads(payload) == {
        "error": "the server is shutting down: send the request again",
        "code": "server_not_ready",
    }
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "CancelledError" not in log, log


@pytest.mark.parametrize("lane", LANES)
def test_no_100_continue_for_a_body_already_sent(
    servers: dict[str, ServerProcess], lane: str
) -> None:
    with connect(servers[lane].port) as s:
        s.sendall(
            request_bytes("POST", SLOW, slow_body(300))
            + request_bytes("POST", INFER, tagged("e"), expect="100-continue")
            + request_bytes("POST", "/v2/repository/index", b"{}", expect="100-continue")
            + request_bytes("GET", "/v2/health/live", connection="close")
        )
        answer = read_all(s)
    assert b"100 Continue" not in answer, answer
    assert answer.count(b"HTTP/1.1 ") == 4


@pytest.mark.parametrize("lane", LANES)
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_an_upgrade_request_is_answered_with_its_body(
    servers: dict[str, ServerProcess], lane: str, framing: str
) -> None:
    body = tagged("up")
    headers = {"connection": "upgrade", "upgrade": "websocket"}
    if framing == "chunked":
        headers["transfer_encoding"] = "chunked"
    data = request_bytes("POST", INFER, body, **headers)
    with connect(servers[lane].port) as s:
        s.sendall(data + request_bytes("GET", "/v2/health/live"))  # the second: not parsed
        answer = read_all(s)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer
    assert b"connection: close" in head.lower()
    assert json.loads(payload)["id"] == "up"
    assert answer.count(b"HTTP/1.1") == 1


@pytest.mark.parametrize("lane", LANES)
def test_a_chunk_extension_over_the_head_limit_is_refused(
    servers: dict[str, ServerProcess], lane: str
) -> None:
    with connect(servers[lane].port) as s:
        s.sendall(
            b"POST " + INFER.encode() + b" HTTP/1.1\r\nhost: x\r\n"
            b"transfer-encoding: chunked\r\n\r\n5;ext="
        )
        time.sleep(0.1)
        s.sendall(b"x" * 70000)  # over the 64 KiB head limit (all read: no reset at close)
        answer = read_all(s)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert json.loads(body)["code"] == "invalid_http"
    assert b"chunk" in body


@pytest.mark.parametrize("lane", LANES)
@pytest.mark.parametrize(
    ("line", "version"),
    [
        (b"GET /v2/health/live HTTP/2.0", "2.0"),
        (b"POST " + INFER.encode() + b" HTTP/1.2", "1.2"),
        (b"GET /v2/health/live HTTP/3.0", "3.0"),
    ],
)
def test_an_http_version_other_than_1_is_refused_505(
    servers: dict[str, ServerProcess], lane: str, line: bytes, version: str
) -> None:
    # llhttp parses any HTTP/x.y; answering 200 to "HTTP/2.0" in HTTP/1.1 framing would be a
    # lie about the protocol spoken.
    with connect(servers[lane].port) as s:
        s.sendall(line + b"\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        answer = read_all(s)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 505"), answer
    error = json.loads(body)
    assert error["code"] == "http_version_not_supported"
    assert "HTTP/1.1" in error["error"]
    if version == "2.0":  # llhttp parses 2.0 and reports it; others it refuses unnamed
        assert "HTTP/2.0" in error["error"]
    with connect(servers[lane].port) as s:  # the server serves on
        s.sendall(b"GET /v2/health/live HTTP/1.0\r\n\r\n")
        assert read_all(s).startswith(b"HTTP/1.1 200")
