"""A sandbox's own egress rules (issue 16; docs/security.md promise 29), through the released e2b SDK on a live
server, against a "fake internet": a network namespace this test creates (tests/lan.py) holding two documentation
addresses in 198.51.100.0/24 (TEST-NET-2, which the default egress treats as the internet), each routed from the
host to the namespace and never beyond this machine. Each address answers `lan-ok`; port STREAM_PORT streams a
byte every 0.1 s, for the established-connection cut. Every case checks its connections, allowed and denied, in
the sandbox's egress audit (`GET /sandboxes/{id}/logs`).

No packet leaves this machine: the session's leak guard (tests/leak_guard.py) counts what each test's sandboxes
forward out of any interface but the fake internet's, and a test whose sandboxes sent anything fails.

Domain rules (`allowOut: ["allowed.test", "*.example.test"]`) are judged by the node's egress filter on the HTTP
Host header and TLS SNI. For them the fake internet also serves HTTP on port 80 and HTTPS on 443 (a certificate
made here with openssl) on every address, answering with the address it was reached on, the Host and the SNI it
saw, and a nameserver that gives the *.test names the first address. The sandbox is given that certificate as
its CA (`fetch`), and verifies the server against it. The filter resolves names itself (it never
trusts the address a sandbox picked), so those tests run on a server of their own told to ask that nameserver
(`--egress-resolver`).

Before the fix, `network={"deny_out": ...}` was refused (400) and `update_network` answered 404: a sandbox could
reach anything its internet switch allowed.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox

from tests.api.rig import BACKENDS, container_server, create_key
from tests.hostile.conftest import TEAM, Live
from tests.lan import INTERNET_TWO, Lan, host_reaches, lan_namespace
from tests.leak_guard import LeakGuard

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
# argv: address port [name]: read a stream (asked for with `GET /stream` and Host `name` when one is given) until it
# stops for 2 s or ends, counting bytes in /tmp/got, then write the count to /tmp/ended
READER = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as conn:
    if len(sys.argv) > 3:
        conn.sendall(b"GET /stream HTTP/1.1\\r\\nHost: " + sys.argv[3].encode() + b"\\r\\n\\r\\n")
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
"""


# HTTP on 80, HTTPS on 443 (every address), DNS on the link address: argv = cert key dns-address site NAME...
WEB = r"""
import socket, ssl, struct, sys, threading, time
cert, key, dns_address, site = sys.argv[1:5]
names = set(sys.argv[5:])

def answer(conn, sni):
    conn.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
    lines = data.split(b"\r\n")
    path = lines[0].split(b" ")[1].decode()
    host, key = "-", ""
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"host":
            host = v.strip().decode()
        if k.strip().lower() == b"x-api-key":
            key += " key=" + v.strip().decode()
    if path.startswith("/bytes/"):
        n = int(path.split("/")[2])
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % n)
        block = b"\0" * (1 << 20)
        while n > 0:
            n -= conn.send(block[:min(n, len(block))])
        return
    if path == "/stream":
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        while True:
            conn.sendall(b"."); time.sleep(0.1)
    body = f"site={conn.getsockname()[0]} host={host} sni={sni}{key}\n".encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)

def serve(port, tls):
    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.sni_callback = lambda s, name, c: setattr(s, "seen", name)
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64)
    while True:
        c, _ = s.accept()
        def handle(c=c):
            try:
                if context is not None:
                    c = context.wrap_socket(c, server_side=True)
                answer(c, getattr(c, "seen", None) or "-")
            except Exception:
                pass
            finally:
                c.close()
        threading.Thread(target=handle, daemon=True).start()

def dns():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((dns_address, 53))
    while True:
        q, peer = s.recvfrom(512)
        at, labels = 12, []
        while q[at]:
            labels.append(q[at + 1:at + 1 + q[at]].decode().lower()); at += 1 + q[at]
        question = q[12:at + 5]
        name = ".".join(labels)
        known = name in names and question[-4:] == b"\0\1\0\1"
        flags = 0x8180 if known else 0x8183
        reply = struct.pack(">HHHHHH", struct.unpack(">H", q[:2])[0], flags, 1, int(known), 0, 0) + question
        if known:
            reply += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 5, 4) + socket.inet_aton(site)
        s.sendto(reply, peer)

threading.Thread(target=serve, args=(80, False), daemon=True).start()
threading.Thread(target=serve, args=(443, True), daemon=True).start()
dns()
"""
NAMES = ("allowed.test", "other.test", "example.test", "a.example.test")


@pytest.fixture(scope="module")
def internet() -> Iterator[Lan]:
    """The fake internet: two addresses outside every range the default egress blocks, with HTTP, HTTPS and a
    nameserver for the domain-rule tests."""
    with lan_namespace(extra=INTERNET_TWO) as made, \
            tempfile.TemporaryDirectory(prefix="sandhive-egress-cert-") as certs:
        made.serve(PORT)
        made.spawn([sys.executable, "-c", STREAM])
        cert, key = Path(certs) / "cert.pem", Path(certs) / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "1", "-subj", "/CN=allowed.test", "-keyout", str(key), "-out", str(cert),
                        "-addext", "subjectAltName=DNS:allowed.test,DNS:other.test,DNS:*.example.test",
                        "-addext", "basicConstraints=critical,CA:TRUE"],
                       check=True, capture_output=True)
        made.spawn([sys.executable, "-c", WEB, str(cert), str(key), made.link_ip, made.addresses[1], *NAMES])
        for address in made.addresses[1:]:
            assert host_reaches(address, PORT), f"the host cannot reach the fake internet at {address}"
        _wait(lambda: _host_fetch(made.addresses[1]), "the fake internet's web server")
        TEST_CA[:] = [cert.read_text()]
        yield made


def _host_fetch(address: str) -> bool:
    import socket

    try:
        with socket.create_connection((address, 80), timeout=2) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x.test\r\n\r\n")
            return b"site=" in conn.recv(4096)
    except OSError:
        return False


@pytest.fixture
def sites(internet: Lan) -> tuple[str, str]:
    return internet.addresses[1], internet.addresses[2]


WATCHING: list[LeakGuard] = []  # the guard `sandbox` hands each new sandbox to, while a test of this module runs


@pytest.fixture(autouse=True)
def no_leaks(leak_guard: LeakGuard, internet: Lan) -> Iterator[None]:
    """Each test's sandboxes are watched from creation to the test's end; a packet they forwarded anywhere but
    to the fake internet fails the test (its teardown), naming where it went."""
    leak_guard.own(internet.host_veth)
    WATCHING[:] = [leak_guard]
    try:
        yield
    finally:
        WATCHING.clear()
        packets, where = leak_guard.leaked()
        leak_guard.release()
        leak_guard.reset()
    assert packets == 0, f"{packets} packets from this test's sandboxes left for beyond this machine: {where}"


def watched(sbx: Sandbox) -> Sandbox:
    for guard in WATCHING:
        guard.watch(sbx.sandbox_id)
    return sbx


def probe(sbx: Sandbox, *addresses: str) -> dict[str, str]:
    sbx.files.write("/tmp/probe.py", PROBE)
    out = sbx.commands.run(f"python3 /tmp/probe.py {' '.join(addresses)}", timeout=60).stdout
    return dict(line.split()[:2] for line in out.splitlines())


def sandbox(live: Live, **create: object) -> Sandbox:
    return watched(Sandbox.create(timeout=180, api_key=live.key, api_url=live.url, sandbox_url=live.url,
                                  **create))  # type: ignore[arg-type]


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
        wanted = {(a, str(PORT), "denied"), (b, str(PORT), "allowed")}
        _wait(lambda: wanted <= egress_seen(live, sbx), lambda: f"the egress audit: {egress_seen(live, sbx)}")
    finally:
        sbx.kill()


def test_no_internet_reaches_nothing_unless_allowed(live: Live, sites: tuple[str, str]) -> None:
    a, b = sites
    closed = sandbox(live, allow_internet_access=False)
    opened = sandbox(live, allow_internet_access=False, network={"allow_out": [a]})
    try:
        assert probe(closed, a, b) == {a: "blocked", b: "blocked"}
        assert probe(opened, a, b) == {a: "open", b: "blocked"}  # allow beats the internet switch, as in E2B
        for sbx, wanted in ((closed, {(a, str(PORT), "denied"), (b, str(PORT), "denied")}),
                            (opened, {(a, str(PORT), "allowed"), (b, str(PORT), "denied")})):
            _wait(lambda sbx=sbx, wanted=wanted: wanted <= egress_seen(live, sbx),
                  lambda sbx=sbx: f"the egress audit: {egress_seen(live, sbx)}")
    finally:
        closed.kill()
        opened.kill()


# argv: address seconds: a SYN to address:PORT every millisecond or so for `seconds`; prints how many connected
HAMMER = """
import select, socket, sys, time
address, until = sys.argv[1], time.monotonic() + float(sys.argv[2])
pending, connected = [], 0
while time.monotonic() < until:
    s = socket.socket(); s.setblocking(False); s.connect_ex((address, @PORT@)); pending.append((time.monotonic(), s))
    _, ready, _ = select.select([], [p for _, p in pending], [], 0.001)
    for p in ready:
        connected += p.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    done = set(ready) | {p for t, p in pending if time.monotonic() - t > 0.3}
    for p in done:
        p.close()
    pending = [(t, p) for t, p in pending if p not in done]
print(connected)
""".replace("@PORT@", str(PORT))


def test_a_firewall_reload_never_lets_a_sandbox_without_internet_out(live: Live, sites: tuple[str, str]) -> None:
    """Every template build and every server start reloads the host's firewall (`network.prepare_host`). It used
    to delete the slots' table and add the sandboxes without internet back one by one after it: in between, each of
    them, on any server of the host, could reach the internet. So a team with internet off got out whenever
    anyone built a template. The reload is one transaction now, and a sandbox sending SYNs all through 20
    reloads connects nowhere."""
    import asyncio

    from sandhive.node import network

    a, _ = sites
    closed = sandbox(live, allow_internet_access=False)
    try:
        assert probe(closed, a) == {a: "blocked"}
        closed.files.write("/tmp/hammer.py", HAMMER)
        hammer = closed.commands.run(f"python3 /tmp/hammer.py {a} 12", background=True, timeout=60)
        time.sleep(1)  # the hammer going
        reloads = 0
        deadline = time.monotonic() + 9
        while time.monotonic() < deadline and reloads < 20:
            asyncio.run(network.prepare_host())  # what a template build does first (templates/builder.py)
            reloads += 1
        result = hammer.wait()
        assert reloads >= 5, f"only {reloads} reloads while the sandbox tried: this proves little"
        assert result.stdout.strip() == "0", f"{result.stdout.strip()} connections out during {reloads} reloads"
        assert probe(closed, a) == {a: "blocked"}
    finally:
        closed.kill()


def test_update_network_both_ways_and_established_connections_are_cut(live: Live, sites: tuple[str, str]) -> None:
    a, b = sites
    sbx = sandbox(live)
    try:
        assert probe(sbx, a, b) == {a: "open", b: "open"}
        sbx.files.write("/tmp/reader.py", READER)
        sbx.commands.run(f"python3 /tmp/reader.py {b} {STREAM_PORT}", background=True)
        _wait(lambda: _read(sbx, "/tmp/got") > 5, "the stream to start")
        sbx.update_network({"deny_out": [b]})
        assert probe(sbx, a, b) == {a: "open", b: "blocked"}
        _wait(lambda: _read(sbx, "/tmp/ended") >= 0, "the established stream to be cut", timeout=15)
        sbx.update_network({})  # omitted fields are cleared: open again
        assert probe(sbx, a, b) == {a: "open", b: "open"}
        sbx.update_network({"allow_internet_access": False, "allow_out": [a]})
        assert probe(sbx, a, b) == {a: "open", b: "blocked"}
        # the audit has every probe, before and after each update: `b` denied twice (within a minute, but under
        # different rules: new rules start afresh), the stream once, ended by the cut
        port = str(PORT)
        wanted = Counter({(a, port, "allowed", ""): 4, (b, port, "allowed", ""): 2, (b, port, "denied", ""): 2,
                          (b, str(STREAM_PORT), "allowed", ""): 1})
        _wait(lambda: not wanted - audit(live, sbx), lambda: f"the egress audit to hold {wanted}: {audit(live, sbx)}")
        # and nothing else: the node's own calls to envd are not the sandbox's egress
        assert {f["destination"] for f in egress_fields(live, sbx)} == {a, b}, audit(live, sbx)
        _wait(lambda: ended(live, sbx, b, STREAM_PORT), lambda: f"the cut stream's entry to have ended: "
              f"{[f for f in egress_fields(live, sbx) if f['destination'] == b]}")
    finally:
        sbx.kill()


def ended(live: Live, sbx: Sandbox, address: str, port: int) -> bool:
    """Whether the audit's allowed connection to address:port has its end (the kernel's, or the filter's) in."""
    return any(f["destination"] == address and f.get("port") == str(port) and f["verdict"] == "allowed"
               and "ended" in f for f in egress_fields(live, sbx))


def audit(live: Live, sbx: Sandbox) -> Counter[tuple[str, str, str, str]]:
    """The sandbox's egress audit as (destination, port, verdict, domain or "") → how many entries."""
    return Counter((f["destination"], f.get("port", ""), f["verdict"], f.get("domain", ""))
                   for f in egress_fields(live, sbx))


def test_rules_survive_pause_and_resume_and_do_not_outlive_their_sandbox(live: Live, sites: tuple[str, str]) -> None:
    a, b = sites
    sbx = sandbox(live, network={"deny_out": [a]})
    try:
        sbx.pause()
        resumed = watched(Sandbox.connect(sbx.sandbox_id, api_key=live.key, api_url=live.url, sandbox_url=live.url))
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



# ---- domain rules (the egress filter) ------------------------------------------------------------
FETCH = """
import socket, ssl, sys
address, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    with socket.create_connection((address, port), timeout=5) as conn:
        conn.settimeout(5)
        if port == 443:
            context = ssl.create_default_context(cafile="/tmp/test-ca.pem")  # the test CA the sandbox trusts
            conn = context.wrap_socket(conn, server_hostname=name)
        conn.sendall(f"GET / HTTP/1.1\\r\\nHost: {name}\\r\\nConnection: close\\r\\n\\r\\n".encode())
        data = b""
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    body = data.split(b"\\r\\n\\r\\n", 1)[1].decode().strip() if b"site=" in data else ""
    print(body or "blocked")
except (OSError, ssl.SSLError, IndexError):
    print("blocked")
"""


@pytest.fixture(scope="module", params=BACKENDS)
def resolving(request: pytest.FixtureRequest, internet: Lan) -> Iterator[Live]:
    """A server whose egress filter asks the fake internet's nameserver for names."""
    with container_server("egress-domains", TEAM, "--egress-resolver", internet.link_ip,
                          backend=request.param) as server:
        yield Live(server, server.key(TEAM))


TEST_CA: list[str] = []  # the fake internet's certificate (its own CA), once `internet` made it


def fetch(sbx: Sandbox, address: str, port: int, name: str, timeout: float = 60) -> str:
    """`name`'s page as the sandbox gets it from `address` (HTTPS verified against the fake internet's CA, which
    the sandbox is given here), or "blocked"."""
    sbx.files.write("/tmp/fetch.py", FETCH)
    sbx.files.write("/tmp/test-ca.pem", TEST_CA[0])
    return sbx.commands.run(f"python3 /tmp/fetch.py {address} {port} {name}", timeout=timeout,
                            request_timeout=timeout).stdout.strip()


def test_an_allowed_domain_beats_deny_everything_by_host_and_sni(resolving: Live, sites: tuple[str, str]) -> None:
    a, b = sites
    sbx = sandbox(resolving, network={"deny_out": ["0.0.0.0/0"], "allow_out": ["allowed.test"]})
    try:
        assert fetch(sbx, a, 80, "allowed.test") == f"site={a} host=allowed.test sni=-"
        assert fetch(sbx, a, 443, "allowed.test") == f"site={a} host=allowed.test sni=allowed.test"
        assert fetch(sbx, a, 80, "other.test") == "blocked"  # the same address, another name
        assert fetch(sbx, a, 443, "other.test") == "blocked"
        assert reaches(sbx, a, STREAM_PORT) == "blocked"  # other ports stay with the kernel's deny
        # a forged Host or SNI does not take the sandbox elsewhere: the name must resolve to the address asked for
        assert fetch(sbx, b, 80, "allowed.test") == "blocked"
        assert fetch(sbx, b, 443, "allowed.test") == "blocked"
        # the egress audit names what the filter judged: the name, where it went, the verdict
        wanted = {(a, "80", "allowed", "allowed.test"), (a, "443", "allowed", "allowed.test"),
                  (a, "80", "denied", "other.test"), (a, "443", "denied", "other.test"),
                  (b, "80", "denied", "allowed.test")}
        _wait(lambda: wanted <= domains_seen(resolving, sbx),
              lambda: f"the egress audit to show {wanted}: {domains_seen(resolving, sbx)}")
        # one entry per judged connection: the kernel's record of it opening is completed by the verdict,
        # not filed beside it as a nameless "allowed" (which a denied connection would then also have)
        nameless = [f for f in egress_fields(resolving, sbx)
                    if f["destination"] in (a, b) and f.get("port") in ("80", "443") and "domain" not in f]
        assert nameless == [], nameless
    finally:
        sbx.kill()


def egress_fields(live: Live, sbx: Sandbox) -> list[dict[str, str]]:
    logs = httpx.get(f"{live.url}/sandboxes/{sbx.sandbox_id}/logs", headers={"X-API-Key": live.key},
                     trust_env=False, timeout=10)
    assert logs.status_code == 200, logs.text
    return [f for f in (entry.get("fields", {}) for entry in logs.json()["logEntries"]) if f.get("logger") == "egress"]


def reaches(sbx: Sandbox, address: str, port: int) -> str:
    """Whether a TCP connect succeeds. (Not `probe`: its port's denied attempts are the audit test's to see, and
    the audit files an attempt once a minute per slot address.)"""
    code = (f"import socket\ntry:\n socket.create_connection(({address!r}, {port}), timeout=3).close()\n"
            f" print('open')\nexcept OSError:\n print('blocked')\n")
    sbx.files.write("/tmp/reaches.py", code)
    return sbx.commands.run("python3 /tmp/reaches.py", timeout=60).stdout.strip()


def domains_seen(live: Live, sbx: Sandbox) -> set[tuple[str, str, str, str]]:
    return {(f["destination"], f.get("port", ""), f["verdict"], f["domain"]) for f in egress_fields(live, sbx)
            if "domain" in f}


def test_a_wildcard_domain_matches_names_below_it_not_itself(resolving: Live, sites: tuple[str, str]) -> None:
    a, _ = sites
    sbx = sandbox(resolving, allow_internet_access=False, network={"allow_out": ["*.example.test"]})
    try:
        assert fetch(sbx, a, 80, "a.example.test") == f"site={a} host=a.example.test sni=-"
        assert fetch(sbx, a, 443, "a.example.test") == f"site={a} host=a.example.test sni=a.example.test"
        assert fetch(sbx, a, 80, "example.test") == "blocked"  # the apex is not below itself, as in E2B
        assert fetch(sbx, a, 443, "allowed.test") == "blocked"
        wanted = {(a, "80", "allowed", "a.example.test"), (a, "443", "allowed", "a.example.test"),
                  (a, "80", "denied", "example.test"), (a, "443", "denied", "allowed.test")}
        _wait(lambda: wanted <= domains_seen(resolving, sbx),
              lambda: f"the egress audit to show {wanted}: {domains_seen(resolving, sbx)}")
    finally:
        sbx.kill()


def test_update_network_adds_and_removes_a_domain(resolving: Live, sites: tuple[str, str]) -> None:
    a, b = sites
    sbx = sandbox(resolving, network={"deny_out": ["0.0.0.0/0"]})
    try:
        assert fetch(sbx, a, 80, "allowed.test") == "blocked"
        sbx.update_network({"deny_out": ["0.0.0.0/0"], "allow_out": ["allowed.test"]})
        assert fetch(sbx, a, 443, "allowed.test") == f"site={a} host=allowed.test sni=allowed.test"
        sbx.files.write("/tmp/reader.py", READER)
        sbx.commands.run(f"python3 /tmp/reader.py {a} 80 allowed.test", background=True)
        _wait(lambda: _read(sbx, "/tmp/got") > 5, "the stream through the filter to start")
        sbx.update_network({"deny_out": ["0.0.0.0/0"], "allow_out": [b]})  # the name goes, an address comes
        _wait(lambda: _read(sbx, "/tmp/ended") >= 0, "the filtered stream to be cut", timeout=15)
        assert fetch(sbx, a, 80, "allowed.test") == "blocked"
        assert fetch(sbx, b, 80, "other.test") == f"site={b} host=other.test sni=-"  # by address: the kernel's
        sbx.update_network({})  # no rules: nothing is redirected, any name reaches any address
        assert fetch(sbx, b, 80, "allowed.test") == f"site={b} host=allowed.test sni=-"
        # the audit: `a` denied by the kernel before the name was allowed and again after it went (two entries),
        # the name's connections with their name, and `b` by address, before and after the rules went
        wanted = Counter({(a, "80", "denied", ""): 2, (a, "443", "allowed", "allowed.test"): 1,
                          (a, "80", "allowed", "allowed.test"): 1, (b, "80", "allowed", ""): 2})
        _wait(lambda: not wanted - audit(resolving, sbx),
              lambda: f"the egress audit to hold {wanted}: {audit(resolving, sbx)}")
        # a judged connection is cut by a reset, and the kernel forgets a reset connection 10 s later
        _wait(lambda: ended(resolving, sbx, a, 80), lambda: f"the cut stream's entry to have ended: "
              f"{[f for f in egress_fields(resolving, sbx) if f['destination'] == a]}", timeout=30)
    finally:
        sbx.kill()


def test_another_team_can_neither_change_nor_read_a_sandboxs_network(live: Live, sites: tuple[str, str]) -> None:
    """`PUT /sandboxes/{id}/network` and the egress audit answer another team "not found", and change nothing."""
    a, b = sites
    sbx = sandbox(live, network={"deny_out": [a]})
    stranger = create_key(live.server.data_dir, "egress-stranger")
    try:
        headers = {"X-API-Key": stranger}
        put = httpx.put(f"{live.url}/sandboxes/{sbx.sandbox_id}/network", json={}, headers=headers,
                        trust_env=False, timeout=10)
        assert put.status_code == 404, put.text
        logs = httpx.get(f"{live.url}/sandboxes/{sbx.sandbox_id}/logs", headers=headers, trust_env=False, timeout=10)
        assert logs.status_code == 404, logs.text
        assert probe(sbx, a, b) == {a: "blocked", b: "open"}  # its rules stand
    finally:
        sbx.kill()


# ---- header rules, DNS servers, egress proxies ------------------------------------------------------
def test_a_header_rule_reaches_the_server_and_never_the_sandbox(resolving: Live, sites: tuple[str, str]) -> None:
    """`rules` put a header into the plain-HTTP requests to a domain, replacing one the sandbox forged; HTTPS to
    that domain is refused (no TLS interception) rather than sent without it; the value is nowhere inside."""
    a, b = sites
    secret = f"hdr-{secrets.token_hex(8)}"
    rules = {"allowed.test": [{"transform": {"headers": {"X-Api-Key": secret}}}]}
    sbx = sandbox(resolving, network={"deny_out": ["0.0.0.0/0"], "allow_out": ["allowed.test"], "rules": rules})
    try:
        assert fetch(sbx, a, 80, "allowed.test") == f"site={a} host=allowed.test sni=- key={secret}"
        sbx.files.write("/tmp/forge.py", FETCH.replace("Connection: close", "X-Api-Key: forged\\r\\nConnection: close"))
        out = sbx.commands.run(f"python3 /tmp/forge.py {a} 80 allowed.test", timeout=60).stdout.strip()
        assert out == f"site={a} host=allowed.test sni=- key={secret}"  # one header: the rule's
        assert fetch(sbx, a, 443, "allowed.test") == "blocked"
        assert fetch(sbx, a, 80, "other.test") == "blocked"  # a rule allows nothing by itself
        found = sbx.commands.run(f"env; grep -rl {secret} /etc /home /root /tmp /run /var /opt 2>/dev/null; true",
                                 timeout=120).stdout
        assert secret not in found and "X-Api-Key" not in found
        _wait(lambda: (a, "443", "denied", "allowed.test") in domains_seen(resolving, sbx),
              lambda: f"the refused HTTPS request in the egress audit: {domains_seen(resolving, sbx)}")
    finally:
        sbx.kill()
    # with the internet open, the ruled name still gets its header and every other request passes untouched
    sbx = sandbox(resolving, network={"rules": rules})
    try:
        assert fetch(sbx, b, 80, "allowed.test") == f"site={a} host=allowed.test sni=- key={secret}"
        assert fetch(sbx, b, 80, "other.test") == f"site={b} host=other.test sni=-"
        assert fetch(sbx, b, 443, "other.test") == f"site={b} host=other.test sni=other.test"
        assert probe(sbx, b) == {b: "open"}  # other ports are the kernel's, as without rules
        sbx.update_network({})  # the rules go: the name's requests go out as the sandbox wrote them
        assert fetch(sbx, a, 80, "allowed.test") == f"site={a} host=allowed.test sni=-"
    finally:
        sbx.kill()


def test_dns_servers_are_reachable_and_an_egress_proxy_is_refused(live: Live, sites: tuple[str, str]) -> None:
    a, b = sites
    sbx = sandbox(live, allow_internet_access=False, network={"dns_servers": [b]})
    try:
        assert probe(sbx, a, b) == {a: "blocked", b: "open"}
        wanted = {(a, str(PORT), "denied"), (b, str(PORT), "allowed")}
        _wait(lambda: wanted <= egress_seen(live, sbx), lambda: f"the egress audit: {egress_seen(live, sbx)}")
    finally:
        sbx.kill()
    with pytest.raises(Exception, match="egressProxy"):
        sandbox(live, network={"egress_proxy": {"address": f"{a}:1080"}})



def test_the_judge_removes_its_queue_rule_and_sweeps_those_of_dead_judges() -> None:
    """A judge's NFQUEUE rule goes with it; one a killed judge left (its queue unbound) is swept by the next start.
    A stale rule only ever drops packets marked for a queue nobody holds (fail closed), but must not pile up."""
    import asyncio

    from sandhive.node import egress_queue
    from sandhive.node.egress_filter import EgressFilter

    tool = egress_queue.iptables()
    assert tool is not None, "iptables is missing: `make debian-packages` installs it"
    dead = egress_queue.FIRST_QUEUE - 1
    subprocess.run([tool, "-w", "-I", *egress_queue.rule_spec(dead)], check=True)

    def rules() -> str:
        return subprocess.run([tool, "-w", "-S", "FORWARD"], capture_output=True, text=True, check=True).stdout

    async def scenario() -> int:
        judged = EgressFilter(nameservers=["127.0.0.1"])
        await judged.start()
        try:
            assert judged.judge is not None and judged.judge.queue is not None, "the judge did not start"
            number = judged.judge.queue.number
            listing = rules()
            assert f"--queue-num {dead}" not in listing and f"--queue-num {number}" in listing
        finally:
            await judged.close()
        return number

    try:
        number = asyncio.run(scenario())
        assert f"--queue-num {number}" not in rules()
    finally:
        subprocess.run([tool, "-w", "-D", *egress_queue.rule_spec(dead)], capture_output=True)
