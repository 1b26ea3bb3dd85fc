"""`sandhive sandbox create --deny-out/--private-ports` and `sandhive sandbox network` (issue 16) against a live
server: egress probed from inside the sandbox (`sandbox exec`) against this test's own fake internet
(tests/lan.py, a TEST-NET-2 address in a network namespace, never leaving the machine), private ports through the
server's proxy with and without the token the CLI printed."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.cli.conftest import Cli
from tests.lan import internet_site

pytestmark = [pytest.mark.needs_backend, pytest.mark.one_backend, pytest.mark.timeout(900)]

PORT = 18093
PROBE = ("import socket,sys\n"
         "try:\n"
         "    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); c.settimeout(3)\n"
         "    print('open' if c.recv(16).startswith(b'lan-ok') else 'odd')\n"
         "except OSError:\n"
         "    print('blocked')\n")


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    with internet_site(PORT) as address:
        yield address


def field(table: str, name: str) -> str:
    """A field of `sandbox info`'s table."""
    found = re.search(rf"^{name}\s{{2,}}(.*?)\s*$", table, re.M)
    assert found, f"no {name!r} in:\n{table}"
    return found.group(1)


def probe(cli: Cli, sandbox_id: str, address: str) -> str:
    return cli.ok("sandbox", "exec", sandbox_id, "--", "python3", "-c", PROBE, address, str(PORT)).strip()


def test_create_deny_out_then_network_replaces_the_rules(cli: Cli, site: str) -> None:
    sandbox_id = cli.create("--deny-out", site, "--deny-out", "192.0.2.0/24")
    assert probe(cli, sandbox_id, site) == "blocked"
    # `sandbox egress`: the denied attempt, from the audit (denied attempts are read every 2 s)
    for _ in range(50):
        audit = json.loads(cli.ok("sandbox", "egress", sandbox_id, "--json"))
        if any(e["destination"] == site and e["verdict"] == "denied" for e in audit):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"no denied attempt to {site} in the egress audit: {audit}")
    assert "denied" in cli.ok("sandbox", "egress", sandbox_id)
    info = json.loads(cli.ok("sandbox", "info", sandbox_id, "--json"))
    assert info["network"] == {"deny_out": [site, "192.0.2.0/24"]}
    assert field(cli.ok("sandbox", "info", sandbox_id), "deny out") == f"{site}, 192.0.2.0/24"

    shown = cli.ok("sandbox", "network", sandbox_id, "--clear")
    assert f"Updated the network of {sandbox_id}" in shown and "internet: on" in shown
    assert probe(cli, sandbox_id, site) == "open"
    assert json.loads(cli.ok("sandbox", "info", sandbox_id, "--json"))["network"] is None

    answer = json.loads(cli.ok("sandbox", "network", sandbox_id, "--no-internet", "--allow-out", site, "--json"))
    assert answer == {"sandbox_id": sandbox_id, "allow_internet_access": False, "network": {"allow_out": [site]}}
    assert probe(cli, sandbox_id, site) == "open"  # allow beats the internet switch
    cli.ok("sandbox", "network", sandbox_id, "--no-internet")  # the allow rule is cleared with it
    assert probe(cli, sandbox_id, site) == "blocked"
    assert field(cli.ok("sandbox", "info", sandbox_id), "internet") == "off"


def test_network_needs_something_to_set_and_refusals_are_errors(cli: Cli, sandbox_id: str) -> None:
    nothing = cli("sandbox", "network", sandbox_id)
    assert nothing.returncode == 2 and "--clear" in nothing.stderr
    bad = cli("sandbox", "network", sandbox_id, "--deny-out", "example.com")
    assert bad.returncode == 1 and "not an IP address or CIDR range" in bad.stderr
    domain = cli("sandbox", "create", "--allow-out", "not a name!")
    assert domain.returncode == 1 and "CIDR range or domain name" in domain.stderr
    assert cli("sandbox", "network", "inothere000000000000", "--clear").returncode == 3


def test_private_ports_need_the_printed_token(cli: Cli) -> None:
    data = json.loads(cli.ok("sandbox", "create", "--timeout", "300", "--private-ports", "--mask-host",
                             "app:${PORT}", "--json"))
    sandbox_id, token = data["sandbox_id"], data["traffic_access_token"]
    cli.created.append(sandbox_id)
    assert token and data["network"] == {"allow_public_traffic": False, "mask_request_host": "app:${PORT}"}
    assert field(cli.ok("sandbox", "info", sandbox_id), "ports").startswith("private")
    cli.ok("sandbox", "exec", sandbox_id, "--", "setsid python3 -m http.server 8000 >/dev/null 2>&1 & "
           "for i in $(seq 100); do curl -sf localhost:8000 >/dev/null && exit 0; sleep 0.1; done; exit 1")
    headers = {"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": "8000"}
    assert httpx.get(cli.server.url, headers=headers, trust_env=False, timeout=10).status_code == 403
    answer = httpx.get(cli.server.url, headers={**headers, "E2B-Traffic-Access-Token": token}, trust_env=False,
                       timeout=10)
    assert answer.status_code == 200, answer.text

    plain = cli("sandbox", "create", "--timeout", "60", "--private-ports")
    assert plain.returncode == 0
    other = plain.stdout.strip()
    cli.created.append(other)
    assert other.startswith("i") and "\n" not in other  # stdout stays the id alone
    assert f"Ports of {other} are private" in plain.stderr and "E2B-Traffic-Access-Token: " in plain.stderr
