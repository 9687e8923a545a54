"""A real server's limits on what one client can make it hold: time, headers, connections."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow

TIMEOUT = 2.0  # the server's --header-timeout and --body-timeout here
CONNECTIONS = 6


@pytest.fixture(scope="module")
def strict(trained_project: Path, tmp_path_factory: pytest.TempPathFactory, launch_for_module):
    """A server with short read deadlines and few connections."""
    server = launch_for_module(
        trained_project,
        tmp_path_factory.mktemp("strict") / "strict.log",
        "--log-level",
        "warning",
        "--header-timeout",
        str(TIMEOUT),
        "--body-timeout",
        str(TIMEOUT),
        "--max-connections",
        str(CONNECTIONS),
    )
    server.wait_until_healthy()
    return server


def connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def seconds_until_closed(client: socket.socket) -> tuple[float, bytes]:
    """How long until the server closes ``client``, and what it sent before."""
    start = time.monotonic()
    received = b""
    with contextlib.suppress(ConnectionResetError):  # closed with data left unread
        while chunk := client.recv(65536):
            received += chunk
    return time.monotonic() - start, received


HEAD = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"


@pytest.mark.parametrize(
    "sent", [b"", HEAD, HEAD + b"X-Slow: " + b"a" * 1000], ids=["nothing", "half", "dribbled"]
)
def test_a_connection_that_does_not_finish_its_headers_is_closed(strict, sent: bytes) -> None:
    with connect(strict) as client:
        client.sendall(sent)
        held, answer = seconds_until_closed(client)
    assert TIMEOUT - 0.5 < held < TIMEOUT + 3
    assert answer == b""


def test_headers_over_64_kib_close_the_connection_at_once(strict) -> None:
    with connect(strict) as client:
        client.sendall(HEAD)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(100):
                client.sendall(b"X-Long: " + b"a" * 8000 + b"\r\n")
        held, _ = seconds_until_closed(client)
    assert held < TIMEOUT - 0.5


def test_a_stalled_body_is_answered_408_and_the_connection_closed(strict) -> None:
    with connect(strict) as client:
        client.sendall(HEAD + b"Content-Length: 5000\r\n\r\n" + b"\x89PNG" * 10)
        held, answer = seconds_until_closed(client)
    assert TIMEOUT - 0.5 < held < TIMEOUT + 3
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in head.lower()
    assert f"did not arrive within {TIMEOUT:g} s (40 bytes received)" in json.loads(body)["detail"]


def test_beyond_the_connection_cap_requests_get_503_until_stalled_ones_are_dropped(
    strict,
) -> None:
    stalled = [connect(strict) for _ in range(CONNECTIONS)]
    try:
        time.sleep(0.5)
        refused = requests.get(f"{strict.url}/health", timeout=10)
        assert refused.status_code == 503
        time.sleep(TIMEOUT + 1)  # the stalled ones are dropped
        assert requests.get(f"{strict.url}/health", timeout=10).status_code == 200
    finally:
        for client in stalled:
            client.close()
    metrics = requests.get(f"{strict.url}/metrics", timeout=10).text
    assert 'celestial_requests_total{route="/health",status="503"} 1.0' in metrics.splitlines()


def test_a_request_answered_before_its_body_came_leaves_the_connection_usable(strict) -> None:
    request = b"POST /predict?k=0 HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
    with connect(strict) as client:
        client.sendall(request + b"Content-Length: 70000\r\n\r\n" + b"\0" * 10)
        first = client.recv(65536)  # refused from the query, before the body is read
        while not first.endswith(b"}"):
            first += client.recv(65536)
        assert first.startswith(b"HTTP/1.1 400 ")
        client.sendall(b"\0" * 69_990)  # the rest of the body, then the next request
        time.sleep(0.5)
        client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        second = client.recv(65536)
    assert second.startswith(b"HTTP/1.1 200 "), second
