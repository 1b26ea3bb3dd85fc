"""A paused private sandbox with auto-resume (issues 14 and 16): the proxy checks the traffic token before it wakes
the sandbox, so knowing a sandbox's id is not enough to resume it (and run up its owner's bill)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sandhive.proxy import EdgeProxy
from sandhive.proxy.access import Route
from tests.proxy.conftest import SANDBOX_ID
from tests.proxy.servers import RecordingResolver, ServerThread, UpstreamState, api_app, upstream_app

TOKEN = "t0ken"


@pytest.fixture
def sleeping() -> Iterator[tuple[ServerThread, ServerThread, list[str]]]:
    upstream = ServerThread(upstream_app(UpstreamState())).start()
    woken: list[str] = []

    async def wake() -> Route | None:
        woken.append(SANDBOX_ID)
        return Route("127.0.0.1", traffic_token=TOKEN)

    proxy = ServerThread(EdgeProxy(api_app(), RecordingResolver(
        {SANDBOX_ID: Route("", traffic_token=TOKEN, wake=wake)}))).start()
    try:
        yield upstream, proxy, woken
    finally:
        proxy.stop()
        upstream.stop()


def _get(proxy: ServerThread, port: int, token: str | None) -> httpx.Response:
    headers = {"E2b-Sandbox-Id": SANDBOX_ID, "E2b-Sandbox-Port": str(port)}
    if token:
        headers["e2b-traffic-access-token"] = token
    return httpx.get(f"{proxy.url}/inspect/x", headers=headers, trust_env=False, timeout=10)


def test_a_stranger_does_not_wake_a_private_sandbox(sleeping: tuple[ServerThread, ServerThread, list[str]]) -> None:
    upstream, proxy, woken = sleeping
    assert _get(proxy, upstream.port, None).status_code == 403
    assert _get(proxy, upstream.port, "guess").status_code == 403
    assert woken == []
    assert _get(proxy, upstream.port, TOKEN).status_code == 200
    assert woken == [SANDBOX_ID]
