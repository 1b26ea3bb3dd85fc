"""Sandhive's SDK network settings (issue 16) against a live server: `Sandbox.create(network=...)`,
`update_network` and private ports, checked from inside the sandbox and through the server's proxy.

Egress is probed against a "fake internet" of this test's own (tests/lan.py): a network namespace holding a
TEST-NET-2 address routed from the host, serving `lan-ok`, that no packet leaves the machine for.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sandhive import AsyncSandbox, InvalidArgumentException, Sandbox
from tests.lan import internet_site
from tests.sdk.conftest import Live

pytestmark = [pytest.mark.needs_backend, pytest.mark.one_backend, pytest.mark.timeout(900),
              pytest.mark.usefixtures("sdk_env")]

PORT = 18092
PROBE = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as conn:
        conn.settimeout(3)
        print("open" if conn.recv(16).startswith(b"lan-ok") else "odd")
except OSError:
    print("blocked")
"""
HTTP = """
import http.server
class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "5"); self.end_headers(); self.wfile.write(b"hello")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Hello).serve_forever()
"""


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """One address of the fake internet (outside every range the default egress blocks), serving on PORT."""
    with internet_site(PORT) as address:
        yield address


def probe(sbx: Sandbox, address: str) -> str:
    sbx.files.write("/tmp/probe.py", PROBE)
    return sbx.commands.run(f"python3 /tmp/probe.py {address} {PORT}", timeout=60).stdout.strip()


def test_deny_out_blocks_and_update_network_opens(live: Live, site: str) -> None:
    sbx = Sandbox.create(timeout=300, network={"deny_out": [site]})
    try:
        assert probe(sbx, site) == "blocked"
        info = sbx.get_info()
        assert info.network == {"deny_out": [site]} and info.allow_internet_access is not False
        sbx.update_network({})  # every rule left out is cleared
        assert probe(sbx, site) == "open"
        assert sbx.get_info().network is None
        Sandbox.update_network(sbx.sandbox_id, {"deny_out": lambda ctx: [ctx.all_traffic], "allow_out": [site]})
        assert probe(sbx, site) == "open"  # allow beats deny
        sbx.update_network({"allow_internet_access": False})
        assert probe(sbx, site) == "blocked"
        assert sbx.get_info().allow_internet_access is False
    finally:
        sbx.kill()


def test_settings_the_server_refuses_are_invalid_arguments(live: Live) -> None:
    with pytest.raises(InvalidArgumentException, match="not an IP address or CIDR range"):
        Sandbox.create(timeout=60, network={"deny_out": ["not-an-address!"]})
    with pytest.raises(InvalidArgumentException, match="CIDR range or domain name"):
        Sandbox.create(timeout=60, network={"allow_out": ["not a name!"]})


def get(live: Live, sbx: Sandbox, token: str | None = None) -> httpx.Response:
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "8000"}
    if token is not None:
        headers["E2B-Traffic-Access-Token"] = token
    return httpx.get(f"{live.url}/", headers=headers, trust_env=False, timeout=10)


def test_private_ports_answer_only_with_the_token(live: Live) -> None:
    sbx = Sandbox.create(timeout=300, network={"allow_public_traffic": False, "mask_request_host": "app:${PORT}"})
    try:
        token = sbx.traffic_access_token
        assert token
        sbx.files.write("/tmp/hello_server.py", HTTP)
        sbx.commands.run("python3 /tmp/hello_server.py", background=True)
        sbx.commands.run("for i in $(seq 100); do curl -sf localhost:8000 >/dev/null && exit 0; sleep 0.1; done; "
                         "exit 1")
        assert get(live, sbx).status_code == 403
        answer = get(live, sbx, token)
        assert (answer.status_code, answer.text) == (200, "hello")
        assert sbx.get_info().network == {"allow_public_traffic": False, "mask_request_host": "app:${PORT}"}
        assert Sandbox.connect(sbx.sandbox_id).traffic_access_token == token
    finally:
        sbx.kill()


async def test_the_async_face(live: Live, site: str) -> None:
    sbx = await AsyncSandbox.create(timeout=300, network={"deny_out": [site]})
    try:
        assert sbx.traffic_access_token is None
        await sbx.files.write("/tmp/probe.py", PROBE)
        run = f"python3 /tmp/probe.py {site} {PORT}"
        assert (await sbx.commands.run(run, timeout=60)).stdout.strip() == "blocked"
        await AsyncSandbox.update_network(sbx.sandbox_id, {})
        assert (await sbx.commands.run(run, timeout=60)).stdout.strip() == "open"
        await sbx.update_network({"deny_out": [site]})
        assert (await sbx.get_info()).network == {"deny_out": [site]}
    finally:
        await sbx.kill()
