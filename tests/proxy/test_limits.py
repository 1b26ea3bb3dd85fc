"""The proxy's upstream read timeout (between chunks, not total) and its connection cap per sandbox."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.proxy.conftest import SANDBOX_ID, Rig, proxy_rig

CAP = 3
READ_TIMEOUT = 1.0


def _rig(read_timeout: float) -> Iterator[Rig]:
    timeout = httpx.Timeout(connect=5.0, read=read_timeout, write=5.0, pool=5.0)
    yield from proxy_rig({SANDBOX_ID: "127.0.0.1", "iother": "127.0.0.1"}, max_connections_per_sandbox=CAP,
                         timeout=timeout)


@pytest.fixture(scope="module")
def limited() -> Iterator[Rig]:
    yield from _rig(READ_TIMEOUT)


@pytest.fixture(scope="module")
def capped() -> Iterator[Rig]:
    yield from _rig(60.0)  # streams stay open for the whole test


def test_a_stream_with_chunks_closer_than_the_read_timeout_is_not_cut(limited: Rig) -> None:
    # /slow sends 5 chunks 0.2 s apart: longer in total than nothing, each gap far below the timeout.
    with limited.client() as c:
        r = c.get("/slow", headers=limited.sandbox_headers())
    assert r.status_code == 200 and r.text == "".join(f"chunk{i};" for i in range(5))


def test_an_upstream_silent_past_the_read_timeout_is_dropped(limited: Rig) -> None:
    with limited.client() as c, c.stream("GET", "/forever", headers=limited.sandbox_headers()) as r:
        assert r.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):  # cut, never mistaken for a complete body
            r.read()
    assert limited.state.stream_cancelled.wait(5)


def test_connections_per_sandbox_are_capped(capped: Rig) -> None:
    limited = capped
    clients = [httpx.Client(base_url=limited.proxy.url, trust_env=False, timeout=10) for _ in range(CAP)]
    streams = []
    try:
        for client in clients:
            limited.state.stream_started.clear()
            stream = client.stream("GET", "/forever", headers=limited.sandbox_headers())
            streams.append(stream)
            assert stream.__enter__().status_code == 200
        with limited.client() as c:
            over = c.post("/echo", content=b"x", headers=limited.sandbox_headers())
            assert over.status_code == 429, over.text
            assert over.headers["retry-after"] and str(CAP) in over.json()["message"]
            # Another sandbox is not affected by this one's connections.
            other = c.post("/echo", content=b"x", headers=limited.sandbox_headers(sandbox_id="iother"))
            assert other.status_code == 200
    finally:
        for stream in streams:
            threading.Thread(target=stream.__exit__, args=(None, None, None), daemon=True).start()
        for client in clients:
            client.close()
    # Once they end, the sandbox takes connections again.
    with limited.client() as c:
        for _ in range(20):
            if c.post("/echo", content=b"x", headers=limited.sandbox_headers()).status_code == 200:
                break
            threading.Event().wait(0.2)
        else:
            pytest.fail("the cap was not released when the connections ended")


def test_an_unbounded_read_ends_when_its_sandbox_leaves_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The code interpreter's /execute has no idle bound (http.UNBOUNDED_READS); a killed sandbox's netns sends no
    FIN, so without the route check the upstream socket — and the client's request — would hang for ever."""
    from sandhive.proxy import http as proxy_http

    monkeypatch.setattr(proxy_http, "ROUTE_CHECK_SECONDS", 0.2, raising=False)
    rig_gen = _rig(READ_TIMEOUT)
    rig = next(rig_gen)
    try:
        monkeypatch.setattr(proxy_http, "UNBOUNDED_READS", {(rig.upstream.port, "GET", "/forever")})
        with rig.client() as c, c.stream("GET", "/forever", headers=rig.sandbox_headers()) as r:
            assert r.status_code == 200
            assert rig.state.stream_started.wait(5)
            assert not rig.state.stream_cancelled.wait(READ_TIMEOUT * 2)  # no idle bound: still open
            del rig.resolver.table[SANDBOX_ID]  # the sandbox is killed
            with pytest.raises(httpx.RemoteProtocolError):  # cut, never mistaken for a complete body
                r.read()
        assert rig.state.stream_cancelled.wait(5)
    finally:
        rig_gen.close()
