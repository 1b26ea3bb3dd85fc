"""Attack 4 of issue 12: the server is not a free buffer.

A 300 MB body sent with no API key used to be read whole before the 401 (RSS 102 → 1,261 MB). Here a real
`sandhive serve --backend none` gets such bodies from a streaming client; the server's RSS is read from
/proc/PID/status (host side) before and after, and must grow by less than 64 MB. The answer must come
before the client has sent much of the body.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.api.rig import Server, module_server

BODY_BYTES = 300 * 2**20
CHUNK = 64 * 1024
RSS_GROWTH_LIMIT = 64 * 2**20


server = module_server("bodies")


@pytest.fixture(scope="module")
def api_key(server: Server) -> str:
    return server.key("bodies")


def _server_pid(server: Server) -> int:
    """The PID of the `sandhive serve` process (Popen's own: the console script execs Python directly)."""
    return server.proc.pid


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _stream_raw(server: Server, method: str, path: str, headers: dict[str, str], total: int,
                chunked: bool = False, deadline: float = 120.0) -> tuple[int | None, int, float, bool]:
    """Send a `total`-byte body over a raw socket until the server answers or closes.

    Returns (status or None, bytes of body sent, seconds until the answer, whether the server then closed).
    A raw socket, so the server's answer is seen while the body is still going, as an attacker would see it.
    """
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=deadline)
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {total}\r\n"
    answer: list[bytes] = []
    answered = threading.Event()

    def read() -> None:
        try:
            data = sock.recv(65536)
            answer.append(data)
        except OSError:
            pass
        answered.set()

    reader = threading.Thread(target=read, daemon=True)
    start = time.monotonic()
    sock.sendall((head + "\r\n").encode())
    reader.start()
    sent = 0
    chunk = b"[" + b"1," * (CHUNK // 2 - 1) + b"1"  # valid-looking JSON bytes
    try:
        while sent < total and not answered.is_set() and time.monotonic() - start < deadline:
            piece = chunk[: min(CHUNK, total - sent)]
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
            sent += len(piece)
        if chunked and sent >= total:
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server closed the connection: what we want once it has answered
    answered.wait(deadline)
    elapsed = time.monotonic() - start
    closed = _closed_by_server(sock, answer)
    sock.close()
    data = b"".join(answer)
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
    return status, sent, elapsed, closed


def _closed_by_server(sock: socket.socket, answer: list[bytes], wait: float = 5.0) -> bool:
    """Whether the server closes the connection after answering, rather than reading the rest of the body."""
    sock.settimeout(wait)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
            answer.append(data)
    except ConnectionResetError:
        return True
    except OSError:
        return False


def _assert_bounded(server: Server, method: str, path: str, headers: dict[str, str], expected: set[int],
                    chunked: bool = False) -> None:
    pid = _server_pid(server)
    before = _rss(pid)
    status, sent, elapsed, closed = _stream_raw(server, method, path, headers, BODY_BYTES, chunked)
    after = _rss(pid)
    assert status in expected, f"answered {status} after {sent} bytes ({elapsed:.1f} s)\n{server.output()[-2000:]}"
    assert after - before < RSS_GROWTH_LIMIT, f"server RSS grew by {(after - before) / 2**20:.0f} MB " \
        f"({before / 2**20:.0f} → {after / 2**20:.0f} MB) for a body it refused"
    assert sent < BODY_BYTES // 2, f"the server let the client send {sent / 2**20:.0f} MB before answering"
    assert closed, "the server kept the connection open after refusing the body (it would read the rest)"
    # The server still answers others.
    assert httpx.get(f"{server.url}/health", timeout=10, trust_env=False).status_code == 200


def test_300mb_body_without_key_is_refused_before_it_is_read(server: Server) -> None:
    _assert_bounded(server, "POST", "/sandboxes", {}, {401})


def test_300mb_chunked_body_without_key_is_refused_before_it_is_read(server: Server) -> None:
    _assert_bounded(server, "POST", "/v2/sandboxes", {}, {401}, chunked=True)


def test_300mb_body_with_invalid_key_is_refused_before_it_is_read(server: Server) -> None:
    _assert_bounded(server, "POST", "/sandboxes", {"X-API-Key": "e2b_" + "0" * 40}, {401})


def test_oversized_json_body_with_valid_key_is_413(server: Server, api_key: str) -> None:
    _assert_bounded(server, "POST", "/sandboxes", {"X-API-Key": api_key}, {413})


def test_oversized_chunked_json_body_with_valid_key_is_cut_at_the_limit(server: Server, api_key: str) -> None:
    _assert_bounded(server, "POST", "/v2/sandboxes", {"X-API-Key": api_key}, {413}, chunked=True)


def test_upload_url_with_bad_signature_is_refused_before_the_body(server: Server) -> None:
    files_hash = "a" * 64
    path = f"/templates/tpl/files/{files_hash}/upload?expires={int(time.time()) + 600}&signature={'0' * 64}"
    _assert_bounded(server, "PUT", path, {"Content-Type": "application/octet-stream"}, {401, 403})


def test_error_bodies_keep_e2b_shape(server: Server, api_key: str) -> None:
    with server.client() as anonymous:
        response = anonymous.post("/sandboxes", content=b"{}" + b" " * 2**21)
    assert response.status_code == 401
    assert response.json()["code"] == 401 and response.json()["message"]
    with server.client(api_key) as client:
        response = client.post("/sandboxes", content=b"{}" + b" " * 2**21)
        assert response.status_code == 413
        assert response.json() == {"code": 413, "message": response.json()["message"]}
        small = client.post("/sandboxes", json={"templateID": "base"})
    assert small.status_code not in (401, 413), small.text  # a normal body still reaches the route
