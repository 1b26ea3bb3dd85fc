"""A sandbox's own egress rules (issue 16; docs/security.md promise 29), through the released e2b SDK on a live
server, against a "fake internet": a network namespace this test creates (tests/lan.py) holding documentation
addresses (TEST-NET-2 and -3, which the default egress treats as the internet), each routed from the host to the
namespace and never beyond this machine. Each address answers `lan-ok`; port STREAM_PORT streams a byte every
0.1 s, for the established-connection cut.

Before the fix, `network={"deny_out": ...}` was refused (400) and `update_network` answered 404: a sandbox could
reach anything its internet switch allowed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from e2b import Sandbox

from tests.api.rig import create_key
from tests.hostile.conftest import Live
from tests.lan import Lan, host_reaches, lan_namespace

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]

PORT = 18082
STREAM_PORT = 18083
PROBE = """
import socket, sys
for address in sys.argv[1:]:
    try:
        with socket.create_connection((address, @PORT@), timeout=3) as conn:
            conn.settimeout(3)
            print(address, "open" if conn.recv(16).startswith(b"lan-ok") else "odd")
    except OSError:
        print(address, "blocked")
""".replace("@PORT@", str(PORT))
STREAM = """
import socket, threading, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", @PORT@)); s.listen(16)
def feed(c):
    try:
        while True:
            c.sendall(b"."); time.sleep(0.1)
    except OSError:
        pass
while True:
    c, _ = s.accept(); threading.Thread(target=feed, args=(c,), daemon=True).start()
""".replace("@PORT@", str(STREAM_PORT))
READER = """
import socket, sys
with socket.create_connection((sys.argv[1], @PORT@), timeout=3) as conn:
    conn.settimeout(2)
    got = 0
    try:
        while True:
            data = conn.recv(64)
            if not data:
                break
            got += len(data)
            open("/tmp/got", "w").write(str(got))
    except OSError:
        pass
open("/tmp/ended", "w").write(str(got))
""".replace("@PORT@", str(STREAM_PORT))


@pytest.fixture(scope="module")
def internet() -> Iterator[Lan]:
    """The fake internet: two addresses outside every range the default egress blocks."""
    with lan_namespace(extra=("203.0.113.{n}", "198.51.100.{n}")) as made:
        made.serve(PORT)
        made.spawn([sys.executable, "-c", STREAM])
        for address in made.addresses[1:]:
            assert host_reaches(address, PORT), f"the host cannot reach the fake internet at {address}"
        yield made


@pytest.fixture
def sites(internet: Lan) -> tuple[str, str]:
    return internet.addresses[1], internet.addresses[2]


def probe(sbx: Sandbox, *addresses: str) -> dict[str, str]:
    sbx.files.write("/tmp/probe.py", PROBE)
    out = sbx.commands.run(f"python3 /tmp/probe.py {' '.join(addresses)}", timeout=60).stdout
    return dict(line.split()[:2] for line in out.splitlines())


def sandbox(live: Live, **create: object) -> Sandbox:
    return Sandbox.create(timeout=180, api_key=live.key, api_url=live.url, sandbox_url=live.url,
                          **create)  # type: ignore[arg-type]


def test_deny_out_blocks_one_address_and_not_the_other(live: Live, sites: tuple[str, str]) -> None:
    a, b = sites
    sbx = sandbox(live, network={"deny_out": [a]})
    try:
        assert probe(sbx, a, b) == {a: "blocked", b: "open"}
        # the egress audit: both attempts, with their verdicts, in the sandbox's logs
        wanted = {(a, str(PORT), "denied"), (b, str(PORT), "allowed")}
        _wait(lambda: wanted <= egress_seen(live, sbx),
              lambda: f"the egress audit to show both attempts {wanted}: {egress_seen(live, sbx)}")
        # denied attempts are counted for the operator (GET /sandhive/node with an admin key), not shown to teams
        admin = create_key(live.server.data_dir, "egress-operator", "--admin")
        assert node_status(live, admin)["egressDeniedTotal"] >= 1
        assert node_status(live, live.key).get("egressDeniedTotal") is None
    finally:
        sbx.kill()


def node_status(live: Live, key: str) -> dict:
    answer = httpx.get(f"{live.url}/sandhive/node", headers={"X-API-Key": key}, trust_env=False, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def egress_seen(live: Live, sbx: Sandbox) -> set[tuple[str, str, str]]:
    logs = httpx.get(f"{live.url}/sandboxes/{sbx.sandbox_id}/logs", headers={"X-API-Key": live.key},
                     trust_env=False, timeout=10)
    assert logs.status_code == 200, logs.text
    return {(f["destination"], f.get("port", ""), f["verdict"]) for f in
            (entry.get("fields", {}) for entry in logs.json()["logEntries"]) if f.get("logger") == "egress"}


def test_deny_everything_but_one_address(live: Live, sites: tuple[str, str]) -> None:
    a, b = sites
    sbx = sandbox(live, network={"deny_out": ["0.0.0.0/0"], "allow_out": [b]})
    try:
        assert probe(sbx, a, b) == {a: "blocked", b: "open"}
    finally:
        sbx.kill()


def test_no_internet_reaches_nothing_unless_allowed(live: Live, sites: tuple[str, str]) -> None:
    a, b = sites
    closed = sandbox(live, allow_internet_access=False)
    opened = sandbox(live, allow_internet_access=False, network={"allow_out": [a]})
    try:
        assert probe(closed, a, b) == {a: "blocked", b: "blocked"}
        assert probe(opened, a, b) == {a: "open", b: "blocked"}  # allow beats the internet switch, as in E2B
    finally:
        closed.kill()
        opened.kill()


def test_update_network_both_ways_and_established_connections_are_cut(live: Live, sites: tuple[str, str]) -> None:
    a, b = sites
    sbx = sandbox(live)
    try:
        assert probe(sbx, a, b) == {a: "open", b: "open"}
        sbx.files.write("/tmp/reader.py", READER)
        sbx.commands.run(f"python3 /tmp/reader.py {b}", background=True)
        _wait(lambda: _read(sbx, "/tmp/got") > 5, "the stream to start")
        sbx.update_network({"deny_out": [b]})
        assert probe(sbx, a, b) == {a: "open", b: "blocked"}
        _wait(lambda: _read(sbx, "/tmp/ended") >= 0, "the established stream to be cut", timeout=15)
        sbx.update_network({})  # omitted fields are cleared: open again
        assert probe(sbx, a, b) == {a: "open", b: "open"}
        sbx.update_network({"allow_internet_access": False, "allow_out": [a]})
        assert probe(sbx, a, b) == {a: "open", b: "blocked"}
    finally:
        sbx.kill()


def test_rules_survive_pause_and_resume_and_do_not_outlive_their_sandbox(live: Live, sites: tuple[str, str]) -> None:
    a, b = sites
    sbx = sandbox(live, network={"deny_out": [a]})
    try:
        sbx.pause()
        resumed = Sandbox.connect(sbx.sandbox_id, api_key=live.key, api_url=live.url, sandbox_url=live.url)
        assert probe(resumed, a, b) == {a: "blocked", b: "open"}
    finally:
        sbx.kill()
    # the slot goes to the next sandbox without the rules (its veth's set elements went with it)
    listing = subprocess.run(["nft", "list", "set", "inet", "sandhive_egress", "rdeny4"], capture_output=True,
                             text=True).stdout
    assert a not in listing


def _read(sbx: Sandbox, path: str) -> int:
    out = sbx.commands.run(f"cat {path} 2>/dev/null || echo -1").stdout.strip()
    return int(out or -1)


def _wait(condition: object, what: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
