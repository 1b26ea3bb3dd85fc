"""A stand-in for the host's LAN: a network namespace the test creates, behind a veth to the host, with addresses
in private ranges routed to it from the host, and TCP servers inside it.

Sandboxes must not reach such addresses unless the operator allows them (`--egress-allow`); the host itself does,
which proves the test network works. Everything is removed on exit, even when the test fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count

from tests.helpers import stop_process_group

_names = count()

# A one-line server: answer every connection with `lan-ok` and close it.
SERVE = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(b"lan-ok\\n"); c.close()
"""


def _ip(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class Lan:
    """The namespace, its link to the host (`host_ip` host side, `link_ip` inside) and the addresses served."""

    netns: str
    host_veth: str
    host_ip: str
    link_ip: str
    addresses: list[str]
    routes: list[str] = field(default_factory=list)
    servers: list[subprocess.Popen] = field(default_factory=list)

    def spawn(self, argv: Sequence[str], **popen: object) -> subprocess.Popen:
        """A process inside the namespace (its own session), stopped by PID when the namespace goes."""
        popen.setdefault("stdout", subprocess.DEVNULL)
        popen.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *argv], start_new_session=True,
                                **popen)  # type: ignore[call-overload]
        self.servers.append(proc)
        return proc

    def serve(self, port: int) -> None:
        """A TCP server on `port` of every address in the namespace; waits until the host reaches it."""
        proc = self.spawn([sys.executable, "-c", SERVE, str(port)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the lan server exited with {proc.returncode}")
            if host_reaches(self.link_ip, port):
                return
            time.sleep(0.05)
        raise TimeoutError("the lan server did not answer the host")


def host_reaches(address: str, port: int, timeout: float = 2.0) -> bool:
    """The host's own view: does a TCP connect to address:port get the server's greeting?"""
    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=timeout) as conn:
        conn.settimeout(timeout)
        return conn.recv(16).startswith(b"lan-ok")
    return False


def _taken() -> str:
    return _ip("-o", "addr") + _ip("route") + _ip("-o", "link")


def _pick_index(extra: Sequence[str] = ()) -> int:
    """A /24 index free of every address, route and link name on the host (10.212.N/24, 172.29.N/24, 192.168.N/24;
    the sandbox subnet 10.211/16 and the host's resolver stay clear of these), and of the `extra` addresses it
    gives (another namespace's may hold one: `{m}` of one index is `{n}` of another)."""
    taken = _taken()
    start = os.getpid() % 200 + 20
    for step in range(200):
        n = (start + step) % 200 + 20
        ours = [f"{prefix}.{n}." for prefix in ("10.212", "172.29", "192.168")] + [f"shl{n}x"]
        if not any(name in taken for name in ours) \
                and not any(re.search(rf"\b{re.escape(_extra(a, n))}\b(?!\.)", taken) for a in extra):
            return n
    raise RuntimeError("no free test range for the lan namespace")


def _extra(address: str, n: int) -> str:
    """An `extra` address with the namespace's index filled in: `{n}` is N, `{m}` is 255 - N (a second address in
    the same /24)."""
    return address.format(n=n, m=255 - n)


@contextlib.contextmanager
def lan_namespace(extra: Sequence[str] = ("172.29.{n}.1", "192.168.{n}.1")) -> Iterator[Lan]:
    """The namespace with its link net 10.212.N.0/30 (host .1, inside .2) and the `extra` addresses (N filled in,
    see `_extra`), each routed from the host through the veth. The inside's default route points back at the host."""
    n = _pick_index(extra)
    lan = Lan(netns=f"shtest-lan-{os.getpid()}-{next(_names)}", host_veth=f"shl{n}x{next(_names) % 100}",
              host_ip=f"10.212.{n}.1", link_ip=f"10.212.{n}.2",
              addresses=[f"10.212.{n}.2", *(_extra(a, n) for a in extra)])
    for address in lan.addresses:
        ipaddress.ip_address(address)  # a typo fails here, not as a confusing `ip` error
    try:
        _ip("netns", "add", lan.netns)
        _ip("link", "add", lan.host_veth, "type", "veth", "peer", "name", "eth0", "netns", lan.netns)
        _ip("addr", "add", f"{lan.host_ip}/30", "dev", lan.host_veth)
        _ip("link", "set", lan.host_veth, "up")
        inside = ["-n", lan.netns]
        _ip(*inside, "link", "set", "lo", "up")
        _ip(*inside, "addr", "add", f"{lan.link_ip}/30", "dev", "eth0")
        _ip(*inside, "link", "set", "eth0", "up")
        _ip(*inside, "route", "add", "default", "via", lan.host_ip)
        for address in lan.addresses[1:]:
            _ip(*inside, "addr", "add", f"{address}/32", "dev", "lo")
            _ip("route", "add", f"{address}/32", "via", lan.link_ip, "dev", lan.host_veth)
            lan.routes.append(f"{address}/32")
        yield lan
    finally:
        for proc in lan.servers:
            stop_process_group(proc)
        for route in lan.routes:
            _ip("route", "del", route, check=False)
        _ip("link", "del", lan.host_veth, check=False)
        _ip("netns", "del", lan.netns, check=False)


# The fake internet's addresses: TEST-NET-2, which the default egress treats as the internet (it blocks only ranges
# around the host). Not TEST-NET-3: closed networks put the real outside there (on the CI hosts pypi.org and the
# other package registries resolve to 203.0.113.80), and a test's route to such an address would take the host's
# own traffic to the registries into the test's namespace for as long as it runs.
INTERNET = "198.51.100.{n}"
INTERNET_TWO = (INTERNET, "198.51.100.{m}")


@contextlib.contextmanager
def internet_site(port: int) -> Iterator[str]:
    """One address of a fake internet (INTERNET) in a namespace of its own, answering `lan-ok` on `port`; checked
    from the host first."""
    with lan_namespace(extra=(INTERNET,)) as lan:
        lan.serve(port)
        address = lan.addresses[1]
        assert host_reaches(address, port), f"the host cannot reach the fake internet at {address}"
        yield address
