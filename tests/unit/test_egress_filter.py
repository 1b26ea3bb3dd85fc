"""The egress filter's pure parts (node/egress_filter.py): which slot a source is, where it may connect for a
sandbox, and the splice relay over real sockets. The whole filter runs against a live server in
tests/hostile/test_egress_rules.py."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from sandhive.node.egress import EgressPolicy
from sandhive.node.egress_filter import EgressFilter, is_local, pump, slot_of


def test_a_source_names_its_slot_only_at_a_sandbox_address() -> None:
    slot = slot_of("10.211.0.6")
    assert slot is not None and slot.veth == "shv1" and slot.sandbox_ip == "10.211.0.6"
    assert slot_of("10.211.0.5") is None  # the host's end of the veth
    assert slot_of("203.0.113.6") is None and slot_of("not an address") is None


def test_where_the_filter_may_connect() -> None:
    domain_filter = EgressFilter(nameservers=["192.0.2.53"],
                                 operator_allow=[ipaddress.ip_network("10.1.2.0/24")])
    plain = EgressPolicy.of(["allowed.test"], ["0.0.0.0/0"])
    assert domain_filter.may_dial("203.0.113.7", plain)  # the internet
    for never in ("127.0.0.1", "10.211.0.6", "0.0.0.0", "224.0.0.1"):  # loopback, a sandbox, nothing, multicast
        assert not domain_filter.may_dial(never, EgressPolicy.of(["0.0.0.0/0"]))  # whatever allowOut says
    assert not domain_filter.may_dial("192.168.1.10", plain)  # private: blocked by default
    assert domain_filter.may_dial("192.168.1.10", EgressPolicy.of(["allowed.test", "192.168.1.0/24"]))
    assert domain_filter.may_dial("10.1.2.3", plain)  # the operator's --egress-allow
    assert is_local("127.0.0.1") and not is_local("203.0.113.7")


def test_pump_moves_everything_and_half_closes() -> None:
    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        c, d = socket.socketpair()
        for s in (a, b, c, d):
            s.setblocking(False)
        payload = bytes(range(256)) * 40000 + b"end"

        async def write() -> None:
            await loop.sock_sendall(a, payload)
            a.shutdown(socket.SHUT_WR)

        async def read() -> int:
            got = bytearray()
            while data := await loop.sock_recv(d, 1 << 20):
                got += data
            assert bytes(got) == payload
            return len(got)

        _, moved, received = await asyncio.gather(write(), pump(b, c), read())
        for s in (a, b, c, d):
            s.close()
        return moved, received

    moved, received = asyncio.run(main())
    assert moved == received == 256 * 40000 + 3


def test_when_one_direction_fails_the_other_is_stopped_before_the_sockets_close() -> None:
    from sandhive.node.egress_filter import _both

    async def main() -> None:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()  # the sandbox's side: a writes, b is the filter's
        c, d = socket.socketpair()  # the upstream's side: c is the filter's, d the server (gone)
        for s in (a, b, c, d):
            s.setblocking(False)
        d.close()
        await loop.sock_sendall(a, b"x" * 1000)
        try:
            await asyncio.wait_for(_both(pump(b, c), pump(c, b)), 5)
        except OSError:
            pass
        else:
            raise AssertionError("a write to a closed peer must fail")
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
        for s in (a, b, c):
            s.close()

    asyncio.run(main())
