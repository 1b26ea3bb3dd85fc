"""Proof that a suite's sandboxes send nothing beyond this machine: a counter in the host's forward path.

A table of the guard's own (`inet sandhive_test_leaks_<pid>`; it blocks nothing, it only counts) counts every
packet forwarded from a watched sandbox's veth out of any interface other than the suite's own ones (its fake
internet's veths). Its chain sits after every filter of the node (priority 500), so it sees only what would
really leave: what the node drops (another sandbox, the host, a denied range) never gets there.

Only the suite's own sandboxes are watched (`watch`, by the slot their id claimed): slots are shared by every
server on the host, and other servers' sandboxes and template builds (which reach the package registries) may
send out at the same time. The guard checks itself when it starts: a packet between two namespaces of its own,
one watched and the other not the suite's, must be counted. The table goes when the guard does, and a table
left by a killed run is removed by the next.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator

from sandhive.node.network import HOST_SLOTS_DIR, Slot
from tests.helpers import wait_until
from tests.lan import lan_namespace

PREFIX = "sandhive_test_leaks_"


def _nft(*args: str, script: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(["nft", *args], input=script, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"nft {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


class LeakGuard:
    """The counter, the watched veths (`watch`, `release`) and the suite's own interfaces (`own`)."""

    def __init__(self) -> None:
        self.table = f"{PREFIX}{os.getpid()}"

    def start(self) -> None:
        _sweep()
        _nft("-f", "-", script=f"""table inet {self.table} {{
  counter leaks {{ }}
  set watched {{ type ifname; }}
  set own {{ type ifname; }}
  set where {{ type ifname . ifname . ipv4_addr; flags dynamic; size 1024; }}
  chain forward {{
    type filter hook forward priority 500; policy accept;
    iifname @watched oifname != @own counter name leaks
    iifname @watched oifname != @own meta nfproto ipv4 add @where {{ iifname . oifname . ip daddr }}
  }}
}}
""")
        self._check_itself()

    def stop(self) -> None:
        _nft("delete", "table", "inet", self.table, check=False)

    def own(self, interface: str) -> None:
        """`interface` is the suite's (its fake internet's veth): what goes out there stays on this machine."""
        _nft("add", "element", "inet", self.table, "own", f'{{ "{interface}" }}')

    def watch(self, sandbox_id: str) -> None:
        """Count what the sandbox's veth forwards (again after a resume: it may come back on another slot)."""
        _nft("add", "element", "inet", self.table, "watched", f'{{ "{sandbox_veth(sandbox_id)}" }}')

    def release(self) -> None:
        """Stop watching every veth (the sandboxes are gone: their slots go to other servers' sandboxes)."""
        _nft("flush", "set", "inet", self.table, "watched")

    def leaked(self) -> tuple[int, list[str]]:
        """Packets counted so far, and (up to 1024) `from-veth -> out-interface destination` seen."""
        counter = json.loads(_nft("-j", "list", "counter", "inet", self.table, "leaks"))
        packets = next(item["counter"]["packets"] for item in counter["nftables"] if "counter" in item)
        where = json.loads(_nft("-j", "list", "set", "inet", self.table, "where"))
        seen = [" ".join(str(part) for part in elem["concat"]) for item in where["nftables"] if "set" in item
                for elem in item["set"].get("elem", []) if isinstance(elem, dict) and "concat" in elem]
        return packets, seen

    def reset(self) -> None:
        _nft("reset", "counter", "inet", self.table, "leaks")
        _nft("flush", "set", "inet", self.table, "where")

    def _check_itself(self) -> None:
        """A UDP packet from one namespace to another through the host, the first one's veth watched and the
        second's not the suite's: the counter must see it (else a zero would prove nothing)."""
        with lan_namespace(extra=()) as sender, lan_namespace(extra=()) as receiver:
            _nft("add", "element", "inet", self.table, "watched", f'{{ "{sender.host_veth}" }}')
            send = ("import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                    f".sendto(b'leak-guard', ({receiver.link_ip!r}, 9))")
            try:
                def counted() -> bool:
                    subprocess.run(["ip", "netns", "exec", sender.netns, "python3", "-c", send], check=True)
                    return self.leaked()[0] > 0
                wait_until(counted, 10, "the leak guard to count a packet it should", interval=0.2)
            finally:
                self.release()
        self.reset()


def sandbox_veth(sandbox_id: str) -> str:
    """The host-side veth of the slot `sandbox_id` holds (its claim file names it: node/network.py)."""
    for claim in HOST_SLOTS_DIR.iterdir():
        with contextlib.suppress(OSError, ValueError):
            if claim.read_text() == sandbox_id:
                return Slot(int(claim.name)).veth
    raise AssertionError(f"sandbox {sandbox_id} holds no network slot under {HOST_SLOTS_DIR}")


def _sweep() -> None:
    """Remove the tables of guards whose process is gone (a run killed before its cleanup)."""
    listing = _nft("list", "tables", check=False)
    for line in listing.splitlines():
        name = line.split()[-1] if line.startswith("table inet ") else ""
        if name.startswith(PREFIX) and name[len(PREFIX):].isdigit() and not os.path.exists(
                f"/proc/{name[len(PREFIX):]}"):
            _nft("delete", "table", "inet", name, check=False)


@contextlib.contextmanager
def guarding() -> Iterator[LeakGuard]:
    guard = LeakGuard()
    try:
        guard.start()
        yield guard
    finally:
        guard.stop()
