"""An upstream app standing in for a sandbox port, and an EdgeProxy (around a tiny API) in front of it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from sandhive.proxy import EdgeProxy
from tests.proxy.servers import RecordingResolver, ServerThread, UpstreamState, api_app, upstream_app

SANDBOX_ID = "itest"


@dataclass
class Rig:
    upstream: ServerThread
    proxy: ServerThread
    state: UpstreamState
    resolver: RecordingResolver

    def sandbox_headers(self, port: int | None = None, sandbox_id: str = SANDBOX_ID) -> dict[str, str]:
        return {"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": str(port or self.upstream.port)}

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.proxy.url, trust_env=False, timeout=10, **kwargs)


def proxy_rig(routes: dict[str, str] | None = None, **proxy_options: object) -> Iterator[Rig]:
    """An upstream and an EdgeProxy (with `proxy_options`, e.g. timeouts and caps) in front of it, in threads;
    `routes` maps sandbox ids to addresses (default: SANDBOX_ID on loopback). Stopped when the generator ends."""
    state = UpstreamState()
    resolver = RecordingResolver(routes or {SANDBOX_ID: "127.0.0.1"})
    upstream = ServerThread(upstream_app(state)).start()
    try:
        proxy = ServerThread(EdgeProxy(api_app(), resolver, **proxy_options)).start()  # type: ignore[arg-type]
    except BaseException:
        upstream.stop()
        raise
    try:
        yield Rig(upstream, proxy, state, resolver)
    finally:
        proxy.stop()
        upstream.stop()


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    yield from proxy_rig()
