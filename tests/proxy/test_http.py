"""HTTP through a real EdgeProxy (uvicorn) to a real upstream (uvicorn), both on loopback."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time

import httpx
import pytest

from sandhive.proxy import EdgeProxy
from sandhive.proxy.access import Route as ProxyRoute
from tests.helpers import free_port
from tests.proxy.conftest import SANDBOX_ID, Rig
from tests.proxy.servers import GZIP_PAYLOAD, ServerThread, api_app


def _headers(inspected: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in inspected["headers"]:
        out.setdefault(key, []).append(value)
    return out


def test_header_routing_passes_request_through(rig: Rig) -> None:
    sent = {**rig.sandbox_headers(), "X-Access-Token": "tok", "Authorization": "Basic dXNlcjo=",
            "Connect-Protocol-Version": "1", "Keepalive-Ping-Interval": "50", "Connection": "keep-alive, X-Hop",
            "X-Hop": "drop me", "Content-Type": "application/json"}
    with rig.client() as client:
        r = client.post("/inspect/a%20b/c?x=1&y=%2F", headers=sent, content=b'{"k": 1}')
    assert r.status_code == 200
    seen = r.json()
    assert seen["method"] == "POST"
    assert seen["raw_path"] == "/inspect/a%20b/c"
    assert seen["query"] == "x=1&y=%2F"
    assert seen["body"] == '{"k": 1}'
    headers = _headers(seen)
    for key in ("x-access-token", "authorization", "connect-protocol-version", "keepalive-ping-interval",
                "e2b-sandbox-id", "e2b-sandbox-port", "content-type"):
        assert headers[key] == [{k.lower(): v for k, v in sent.items()}[key]], key
    assert headers["host"] == [f"127.0.0.1:{rig.proxy.port}"]  # the client's Host is kept
    assert "x-hop" not in headers
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert SANDBOX_ID in rig.resolver.calls


def test_host_routing(rig: Rig) -> None:
    with rig.client() as client:
        r = client.get("/inspect/by-host", headers={"Host": f"{rig.upstream.port}-{SANDBOX_ID}.localhost:3000"})
    assert r.status_code == 200
    assert r.json()["raw_path"] == "/inspect/by-host"


@pytest.mark.parametrize("host", [None, "localhost:3000", "api.sandhive.example.com", "8000-itest"])
def test_everything_else_falls_through_to_the_api(rig: Rig, host: str | None) -> None:
    with rig.client() as client:
        r = client.get("/v2/sandboxes", headers={"Host": host} if host else {})
    assert r.status_code == 200
    assert r.json() == {"api": True, "path": "/v2/sandboxes"}


def test_unknown_sandbox_is_502_not_found(rig: Rig) -> None:
    with rig.client() as client:
        r = client.get("/health", headers=rig.sandbox_headers(sandbox_id="inope"))
        bad_id = client.get("/health", headers=rig.sandbox_headers(sandbox_id="../etc"))
        page = client.get("/", headers={**rig.sandbox_headers(sandbox_id="inope"), "Accept": "text/html,*/*"})
    assert r.status_code == 502
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"sandboxId": "inope", "message": "The sandbox was not found", "code": 502}
    assert bad_id.status_code == 502 and "was not found" in bad_id.json()["message"]
    assert "../etc" not in rig.resolver.calls  # ids that cannot exist are never looked up
    assert page.status_code == 502 and page.headers["content-type"].startswith("text/html")
    assert "The sandbox was not found" in page.text


def test_closed_port_is_502_port_not_open(rig: Rig) -> None:
    port = free_port()
    with rig.client() as client:
        r = client.get("/", headers=rig.sandbox_headers(port))
    assert r.status_code == 502
    assert r.json() == {"sandboxId": SANDBOX_ID, "message": "The sandbox is running but port is not open",
                        "code": 502, "port": port}


@pytest.mark.parametrize("headers", [
    {"E2b-Sandbox-Id": SANDBOX_ID, "E2b-Sandbox-Port": "http"},
    {"E2b-Sandbox-Id": SANDBOX_ID, "E2b-Sandbox-Port": "70000"},
    {"E2b-Sandbox-Id": SANDBOX_ID},
    {"E2b-Sandbox-Port": "49983"},
])
def test_bad_target_is_400(rig: Rig, headers: dict[str, str]) -> None:
    with rig.client() as client:
        r = client.get("/", headers=headers)
    assert r.status_code == 400
    assert r.json()["code"] == 400


@pytest.mark.parametrize("path", ["/init", "/init/", "/a/../init", "/%69nit", "/upgrade", "/freeze", "/fsthaw"])
def test_internal_envd_routes_are_404_before_any_lookup(rig: Rig, path: str) -> None:
    rig.resolver.calls.clear()
    with rig.client() as client:
        r = client.post(path, headers=rig.sandbox_headers(49983), content=b"{}")
    assert r.status_code == 404
    assert rig.resolver.calls == []


def test_slow_response_streams_chunk_by_chunk(rig: Rig) -> None:
    rig.state.produced.clear()
    arrivals: list[float] = []
    body = b""
    with rig.client() as client, client.stream("GET", "/slow", headers=rig.sandbox_headers()) as r:
        for chunk in r.iter_raw():
            arrivals.append(time.monotonic())
            body += chunk
    assert body == b"chunk0;chunk1;chunk2;chunk3;chunk4;"
    assert len(rig.state.produced) == 5
    assert arrivals[0] < rig.state.produced[-1] - 0.5  # the first chunk came ~800 ms before the last was made
    assert len(arrivals) >= 4


def test_chunked_request_body_streams_upstream(rig: Rig) -> None:
    rig.state.first_chunk_seen.clear()
    seen_before_last: list[bool] = []

    def body():
        yield b"first chunk;"
        seen_before_last.append(rig.state.first_chunk_seen.wait(5))
        yield b"last chunk;"

    with rig.client() as client:
        r = client.post("/upload", headers=rig.sandbox_headers(), content=body())
    assert r.status_code == 200
    assert seen_before_last == [True]
    assert r.json() == {"chunks": 2, "bytes": len(b"first chunk;last chunk;")}


def test_large_body_with_content_length(rig: Rig) -> None:
    payload = bytes(range(256)) * 20_000  # ~5 MB
    with rig.client() as client:
        r = client.post("/echo", headers=rig.sandbox_headers(), content=payload)
    assert r.status_code == 200
    assert r.content == payload


def test_gzip_passes_through_untouched(rig: Rig) -> None:
    with rig.client() as client:
        with client.stream("GET", "/gzip", headers={**rig.sandbox_headers(), "Accept-Encoding": "gzip"}) as r:
            raw = b"".join(r.iter_raw())
        assert r.headers["content-encoding"] == "gzip"
        assert raw == GZIP_PAYLOAD
        assert int(r.headers["content-length"]) == len(GZIP_PAYLOAD)
        upload = gzip.compress(b"hello " * 1000)
        r = client.post("/echo", headers={**rig.sandbox_headers(), "Content-Encoding": "gzip"}, content=upload)
        assert r.headers["x-got-content-encoding"] == "gzip"
        assert r.content == upload


def test_client_disconnect_closes_upstream_promptly(rig: Rig) -> None:
    """The upstream is idle (like WatchDir with no events); the proxy must still notice the client left."""
    rig.state.stream_started.clear()
    rig.state.stream_cancelled.clear()
    with rig.client() as client, client.stream("GET", "/forever", headers=rig.sandbox_headers()) as r:
        assert next(r.iter_raw()) == b"first;"
        assert rig.state.stream_started.is_set()
    started = time.monotonic()
    assert rig.state.stream_cancelled.wait(5), "upstream stream was not cancelled after the client left"
    assert time.monotonic() - started < 2


def test_upstream_dying_mid_body_is_not_a_clean_end(rig: Rig) -> None:
    """A truncated body must look truncated to the client, or a cut Connect stream could pass as complete."""
    received = b""
    with rig.client() as client, client.stream("GET", "/broken", headers=rig.sandbox_headers()) as r:
        assert r.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in r.iter_raw():
                received += chunk
    assert received == b"partial;"


def test_head_and_expect_continue(rig: Rig) -> None:
    with rig.client() as client:
        head = client.head("/inspect/h", headers=rig.sandbox_headers())
        expect = client.post("/echo", headers={**rig.sandbox_headers(), "Expect": "100-continue"}, content=b"x" * 10)
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0
    assert expect.status_code == 200 and expect.content == b"x" * 10


def test_concurrent_streams_do_not_block_each_other(rig: Rig) -> None:
    """Many idle long-lived streams at once (each holds an upstream connection) plus ordinary traffic."""
    results: list[int] = []

    def one() -> None:
        with rig.client() as client, client.stream("GET", "/slow", headers=rig.sandbox_headers()) as r:
            results.append(len(r.read()))

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    with rig.client() as client:
        assert client.get("/inspect/x", headers=rig.sandbox_headers()).status_code == 200
    for t in threads:
        t.join(10)
    assert results == [35] * 20


def test_upstream_status_and_headers_pass_through(rig: Rig) -> None:
    with rig.client() as client:
        r = client.get("/no-such-route", headers=rig.sandbox_headers())
    assert r.status_code == 404
    assert r.text == "Not Found"  # Starlette's own 404, not the proxy's
    assert r.headers["content-type"].startswith("text/plain")


async def _drive(rig: Rig, method: str, path: str, body_parts: list[bytes]) -> tuple[int, bytes]:
    """Call EdgeProxy as ASGI directly, as an HTTP/2 server would: no Content-Length/Transfer-Encoding."""
    proxy = EdgeProxy(api_app(), rig.resolver)
    incoming = [{"type": "http.request", "body": part, "more_body": i < len(body_parts) - 1}
                for i, part in enumerate(body_parts or [b""])]
    sent: list[dict] = []

    async def receive() -> dict:
        if incoming:
            return incoming.pop(0)
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "http_version": "2", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": b"", "scheme": "http", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
             "headers": [(b"e2b-sandbox-id", SANDBOX_ID.encode()),
                         (b"e2b-sandbox-port", str(rig.upstream.port).encode())]}
    try:
        await asyncio.wait_for(proxy(scope, receive, send), 10)
    finally:
        await proxy.aclose()
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_body_without_framing_headers_is_streamed(rig: Rig) -> None:
    assert await _drive(rig, "POST", "/echo", [b"abc", b"def"]) == (200, b"abcdef")


async def test_no_body_without_framing_headers_sends_none(rig: Rig) -> None:
    status, body = await _drive(rig, "GET", "/inspect/nobody", [])
    assert status == 200
    sent_headers = {key for key, _ in json.loads(body)["headers"]}
    assert "transfer-encoding" not in sent_headers and "content-length" not in sent_headers


def test_a_sandbox_unrouted_while_its_request_connects_is_not_found() -> None:
    """A request routed just before a kill took the sandbox off the proxy finds its port closed: it is E2B's
    "was not found" (killed), not "port is not open" (the SDK's "running but unreachable"); issue 13 item 6."""
    lookups: list[str] = []

    async def resolve_once(sandbox_id: str) -> ProxyRoute | None:  # routed at first, gone when asked again
        lookups.append(sandbox_id)
        return ProxyRoute("127.0.0.1") if len(lookups) == 1 else None

    proxy = ServerThread(EdgeProxy(api_app(), resolve_once)).start()
    try:
        port = free_port()
        headers = {"E2b-Sandbox-Id": SANDBOX_ID, "E2b-Sandbox-Port": str(port)}
        r = httpx.get(f"{proxy.url}/", headers=headers, trust_env=False, timeout=10)
    finally:
        proxy.stop()
    assert lookups == [SANDBOX_ID, SANDBOX_ID]
    assert (r.status_code, r.json()) == (502, {"sandboxId": SANDBOX_ID, "message": "The sandbox was not found",
                                               "code": 502})
