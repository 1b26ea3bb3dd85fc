"""Slow-loris clients: connections that trickle headers or bodies are closed; they never starve others.

A real `sandhive serve --backend none` with short timeouts (2 s) so the test is quick; the defaults
(10 s headers, 30 s bodies) behave the same, only slower.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.api.rig import Server, start_server

TIMEOUT = 2.0
GRACE = 3.0  # scheduling slack on a loaded 2-core machine


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("slow") / "data", "--header-timeout", str(TIMEOUT),
                       "--body-timeout", str(TIMEOUT), "--keep-alive-timeout", "2")
    try:
        yield srv
    finally:
        srv.stop()


def _connect(server: Server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _trickle_until_closed(sock: socket.socket, data: bytes, limit: float) -> tuple[float, bytes]:
    """Send `data` a byte a second (well, every 0.5 s) until the server closes; (seconds, what it answered)."""
    start = time.monotonic()
    sock.settimeout(0.5)
    answer = b""
    for byte in data:
        if time.monotonic() - start > limit:
            break
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        try:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        except TimeoutError:
            continue
        except OSError:
            break
    return time.monotonic() - start, answer


def _whole_response(sock: socket.socket) -> bytes:
    """One response, head and body (by its Content-Length): they may arrive in separate segments."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"the server closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, "the server closed mid-body"
        body += chunk
    return data


def _closed(sock: socket.socket) -> bool:
    """Whether the server has closed `sock` (a 408 it wrote first is read past)."""
    sock.settimeout(0.05)
    try:
        while sock.recv(4096):
            pass
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def _health(server: Server) -> float:
    start = time.monotonic()
    assert httpx.get(f"{server.url}/health", timeout=5, trust_env=False).status_code == 200
    return time.monotonic() - start


def test_trickled_headers_are_cut_and_others_still_answered(server: Server) -> None:
    sock = _connect(server)
    try:
        head = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200 + b"\r\n\r\n"
        sock.sendall(head[:5])
        assert _health(server) < 2  # answered while the slow client is connected
        elapsed, answer = _trickle_until_closed(sock, head[5:], TIMEOUT + GRACE + 10)
    finally:
        sock.close()
    assert elapsed < TIMEOUT + GRACE, f"a client trickling headers held its connection {elapsed:.1f} s"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer


def test_trickled_json_body_is_cut(server: Server) -> None:
    key = server.key("slow")
    sock = _connect(server)
    try:
        body = b'{"templateID": "base"' + b" " * 200 + b"}"
        sock.sendall(b"POST /sandboxes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"X-API-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        elapsed, answer = _trickle_until_closed(sock, body, TIMEOUT + GRACE + 10)
    finally:
        sock.close()
    assert elapsed < TIMEOUT + GRACE, f"a client trickling its body held the request {elapsed:.1f} s"
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b'"code":408' in answer.replace(b" ", b"")


def test_many_idle_connections_do_not_starve_others(server: Server) -> None:
    idle = []
    try:
        for _ in range(300):
            sock = _connect(server)
            sock.sendall(b"GET /he")  # a request begun and never finished
            idle.append(sock)
        assert _health(server) < 2
        time.sleep(TIMEOUT + GRACE)
        closed = sum(_closed(sock) for sock in idle)
        assert closed == len(idle), f"{len(idle) - closed} of {len(idle)} idle connections still open"
        assert _health(server) < 2
    finally:
        for sock in idle:
            sock.close()


def test_idle_keep_alive_connection_is_closed(server: Server) -> None:
    sock = _connect(server)
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(10)
        response = _whole_response(sock)
        assert response.startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        rest = sock.recv(4096)  # nothing more is sent: the server closes after its keep-alive timeout
        assert rest == b"" and time.monotonic() - start < 2 + GRACE
    finally:
        sock.close()
