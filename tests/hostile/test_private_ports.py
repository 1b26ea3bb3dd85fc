"""Private ports (issue 16; docs/security.md promise 28): with `network.allow_public_traffic=False`, a sandbox's
ports answer only requests carrying its traffic access token; knowing the sandbox id is not enough, another
sandbox's token is not enough, and the token stays with the proxy. `maskRequestHost` sets the Host the port sees.

The key case (403 without the token, 200 with it, envd unchanged) runs on every backend: the proxy reaches a
port through the backend's own networking (a gVisor sandbox's netstack differs from a container's). The rest
checks the proxy's logic alone and runs once (`one_backend`).

Before the fix the create itself was refused (400), so every port was open to whoever knew the id.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from e2b import Sandbox

from .conftest import Live

one_backend = pytest.mark.one_backend  # the proxy's checks; the same code whatever the backend

ECHO = r'''
import http.server, json
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Echo).serve_forever()
'''
TOKEN_HEADER = "e2b-traffic-access-token"


def start_echo(sbx: Sandbox) -> None:
    sbx.files.write("/tmp/echo.py", ECHO)
    sbx.commands.run("python3 /tmp/echo.py", background=True)
    sbx.commands.run("for i in $(seq 100); do curl -sf localhost:8000 >/dev/null && exit 0; sleep 0.1; done; exit 1")


@pytest.fixture
def private(live: Live, e2b_env: None) -> Iterator[Sandbox]:
    sbx = Sandbox.create(timeout=300, network={"allow_public_traffic": False,
                                               "mask_request_host": "app.internal:${PORT}"})
    try:
        start_echo(sbx)
        yield sbx
    finally:
        sbx.kill()


def get(live: Live, sbx: Sandbox, token: str | None = None) -> httpx.Response:
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "8000"}
    if token is not None:
        headers[TOKEN_HEADER] = token
    return httpx.get(f"{live.url}/", headers=headers, trust_env=False, timeout=10)


def test_a_private_port_needs_its_sandboxs_token(live: Live, private: Sandbox) -> None:
    token = private.traffic_access_token
    assert token
    missing = get(live, private)
    assert missing.status_code == 403 and "'e2b-traffic-access-token' is missing" in missing.json()["message"]
    wrong = get(live, private, "0" * len(token))
    assert wrong.status_code == 403 and "is invalid" in wrong.json()["message"]
    good = get(live, private, token)
    assert good.status_code == 200, good.text
    seen = good.json()
    assert seen["host"] == "app.internal:8000"  # maskRequestHost, ${PORT} filled in
    assert TOKEN_HEADER not in seen  # the token is the proxy's, never the sandbox's
    # envd keeps its own access token: the SDK sends no traffic token there and works as before
    assert private.commands.run("echo envd").stdout == "envd\n"
    detail = httpx.get(f"{live.url}/sandboxes/{private.sandbox_id}", headers={"X-API-Key": live.key},
                       trust_env=False, timeout=10).json()
    assert detail["network"] == {"allowPublicTraffic": False, "maskRequestHost": "app.internal:${PORT}"}


@one_backend
def test_another_sandboxs_token_does_not_open_a_private_port(live: Live, private: Sandbox) -> None:
    other = Sandbox.create(timeout=120, network={"allow_public_traffic": False})
    try:
        assert other.traffic_access_token and other.traffic_access_token != private.traffic_access_token
        assert get(live, private, other.traffic_access_token).status_code == 403
    finally:
        other.kill()


@one_backend
def test_a_public_sandbox_is_open_and_unmasked(live: Live, e2b_env: None) -> None:
    sbx = Sandbox.create(timeout=120)
    try:
        assert sbx.traffic_access_token is None
        start_echo(sbx)
        answer = get(live, sbx)
        assert answer.status_code == 200 and answer.json()["host"] == f"{live.url.split('//')[1]}"
    finally:
        sbx.kill()


@one_backend
def test_a_private_sandbox_stays_private_across_pause_and_resume(live: Live, private: Sandbox) -> None:
    token = private.traffic_access_token
    private.pause()
    resumed = Sandbox.connect(private.sandbox_id)
    assert resumed.traffic_access_token == token
    start_echo(resumed)  # a memory pause keeps it running; a filesystem one needs it started again
    assert get(live, resumed).status_code == 403
    assert get(live, resumed, token).status_code == 200


@one_backend
@pytest.mark.parametrize("network", [{"mask_request_host": "a.test\r\nX-Injected: 1"},
                                     {"allow_out": ["not a name!"]}, {"egress_proxy": {"address": "p.test:1080"}},
                                     {"dns_servers": ["not-an-address"]}])
def test_network_settings_it_cannot_honour_are_a_400(live: Live, network: dict[str, object]) -> None:
    wire = {"mask_request_host": "maskRequestHost", "allow_out": "allowOut", "egress_proxy": "egressProxy",
            "dns_servers": "dnsServers"}
    r = httpx.post(f"{live.url}/sandboxes", headers={"X-API-Key": live.key}, trust_env=False, timeout=30,
                   json={"templateID": "base", "network": {wire[k]: v for k, v in network.items()}})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == 400
