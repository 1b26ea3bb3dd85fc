"""`network.httpsPorts` (issue 16): the proxy speaks TLS to a sandbox port whose server does (with the sandbox's
own certificate, never verified), and plain HTTP to the others — to an upstream this test serves with a
self-signed certificate made by openssl."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from sandhive.proxy import EdgeProxy
from sandhive.proxy.access import Route
from tests.proxy.conftest import SANDBOX_ID
from tests.proxy.servers import RecordingResolver, ServerThread, UpstreamState, api_app, upstream_app


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        print("skipping httpsPorts tests: openssl is not installed")
        pytest.skip("openssl is not installed")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=sandbox.internal", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


@pytest.fixture(scope="module")
def proxied(certificate: tuple[str, str]) -> Iterator[tuple[ServerThread, ServerThread, RecordingResolver]]:
    upstream = ServerThread(upstream_app(UpstreamState()), tls=certificate).start()
    resolver = RecordingResolver({SANDBOX_ID: Route("127.0.0.1", https_ports=frozenset({upstream.port}))})
    proxy = ServerThread(EdgeProxy(api_app(), resolver)).start()
    try:
        yield upstream, proxy, resolver
    finally:
        proxy.stop()
        upstream.stop()


def _get(proxy: ServerThread, port: int) -> httpx.Response:
    return httpx.get(f"{proxy.url}/inspect/tls", headers={"E2b-Sandbox-Id": SANDBOX_ID,
                                                           "E2b-Sandbox-Port": str(port)}, trust_env=False, timeout=10)


def test_an_https_port_is_reached_over_tls(proxied: tuple[ServerThread, ServerThread, RecordingResolver]) -> None:
    upstream, proxy, _ = proxied
    assert _get(proxy, upstream.port).status_code == 200


def test_without_https_ports_the_same_port_is_plain_http_and_fails(
        proxied: tuple[ServerThread, ServerThread, RecordingResolver]) -> None:
    upstream, proxy, resolver = proxied
    resolver.table[SANDBOX_ID] = "127.0.0.1"
    try:
        assert _get(proxy, upstream.port).status_code == 502  # plain HTTP to a TLS server: the exchange fails
    finally:
        resolver.table[SANDBOX_ID] = Route("127.0.0.1", https_ports=frozenset({upstream.port}))
