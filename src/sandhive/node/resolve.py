"""A small stub resolver: the IPv4 addresses of a name, asked of given nameservers over UDP.

The egress filter connects a connection that a domain rule allowed to the addresses of that name as the node
resolves it, never to the address the sandbox picked (a sandbox can write any Host header or SNI to any
address). It asks the nameserver sandboxes use (the host's, from /etc/resolv.conf) or the one the operator
names (`sandhive serve --egress-resolver`), not the host's /etc/hosts: host-local names are not the internet.

Answers are parsed with every length checked; only A records owned by the name asked, or by a CNAME the answer
leads to from it, count, and only from a reply whose id, question and source match the query.

`Resolver` keeps answers for their TTL (at most MAX_TTL; a name without addresses NEGATIVE_TTL) and asks once
for concurrent lookups of one name: a sandbox opening many connections to one API must not cost a query each,
and the filter's connection setup is then one dictionary lookup.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import struct
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

A, CNAME, IN = 1, 5, 1
PORT = 53
MAX_ANSWERS = 64
MAX_TTL = 300  # seconds an answer is kept at most, whatever its records say
NEGATIVE_TTL = 5  # seconds "no addresses" is kept
MAX_CACHED = 4096  # names


class ResolveError(Exception):
    pass


def query(name: str, ident: int) -> bytes:
    labels = name.rstrip(".").split(".")
    qname = b"".join(bytes([len(label)]) + label.encode("ascii") for label in labels) + b"\0"
    return struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", A, IN)


def _name(message: bytes, at: int) -> tuple[str, int]:
    """The (lower-case) name at `at` and the offset after it; compression pointers followed a bounded number
    of times and only backwards."""
    labels: list[str] = []
    end = -1
    jumps = 0
    while True:
        if at >= len(message):
            raise ResolveError("truncated name")
        length = message[at]
        if length & 0xC0 == 0xC0:
            if at + 1 >= len(message):
                raise ResolveError("truncated pointer")
            target = ((length & 0x3F) << 8) | message[at + 1]
            if end < 0:
                end = at + 2
            if target >= at or jumps > 32:
                raise ResolveError("bad compression pointer")
            jumps += 1
            at = target
            continue
        if length & 0xC0:
            raise ResolveError("bad label")
        if length == 0:
            break
        if at + 1 + length > len(message):
            raise ResolveError("truncated label")
        labels.append(message[at + 1:at + 1 + length].decode("ascii", errors="replace").lower())
        at += 1 + length
        if sum(len(label) + 1 for label in labels) > 255:
            raise ResolveError("name too long")
    return ".".join(labels), (end if end >= 0 else at + 1)


class Answer(NamedTuple):
    addresses: list[str]
    ttl: int  # seconds: the smallest TTL of the records that led to the addresses (0 when there are none)


def parse(message: bytes, ident: int, name: str) -> Answer:
    """The A addresses for `name` in a reply to query `ident` (ResolveError for anything malformed)."""
    if len(message) < 12:
        raise ResolveError("short reply")
    got, flags, qd, an, _, _ = struct.unpack(">HHHHHH", message[:12])
    if got != ident or not flags & 0x8000 or qd != 1:
        raise ResolveError("not our reply")
    if flags & 0x0200:
        raise ResolveError("truncated reply")
    if flags & 0x000F not in (0, 3):  # NOERROR or NXDOMAIN (no addresses)
        raise ResolveError(f"rcode {flags & 0x000F}")
    asked, at = _name(message, 12)
    if asked != name or message[at:at + 4] != struct.pack(">HH", A, IN):
        raise ResolveError("another question")
    at += 4
    owners = {name}
    addresses: list[str] = []
    ttls: list[int] = []
    for _ in range(min(an, MAX_ANSWERS)):
        owner, at = _name(message, at)
        if at + 10 > len(message):
            raise ResolveError("truncated record")
        rtype, rclass, ttl, length = struct.unpack(">HHIH", message[at:at + 10])
        at += 10
        if at + length > len(message):
            raise ResolveError("truncated data")
        if rclass == IN and owner in owners:
            if rtype == A and length == 4:
                addresses.append(str(ipaddress.IPv4Address(message[at:at + 4])))
                ttls.append(ttl)
            elif rtype == CNAME:
                owners.add(_name(message, at)[0])
                ttls.append(ttl)
        at += length
    return Answer(addresses, min(ttls) if addresses else 0)


class _Reply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if not self.future.done():
            self.future.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


async def resolve4(name: str, nameservers: Sequence[str], timeout: float = 2.0) -> Answer:
    """The IPv4 addresses of `name` (empty if it has none); ResolveError if no nameserver answered sensibly."""
    loop = asyncio.get_running_loop()
    last: Exception = ResolveError("no nameserver")
    for server in nameservers:
        ident = secrets.randbelow(0x10000)
        transport, protocol = await loop.create_datagram_endpoint(_Reply, remote_addr=(server, PORT))
        try:
            transport.sendto(query(name, ident))
            data = await asyncio.wait_for(protocol.future, timeout)  # connected UDP: only `server` answers
            return parse(data, ident, name)
        except (OSError, TimeoutError, ResolveError) as exc:
            last = exc
        finally:
            transport.close()
    raise ResolveError(f"cannot resolve {name}: {last}")


class Resolver:
    """`resolve4` of fixed nameservers, with answers kept for their TTL (see the module's docstring)."""

    def __init__(self, nameservers: Sequence[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.nameservers = list(nameservers)
        self.clock = clock
        self._cache: dict[str, tuple[float, list[str]]] = {}  # name → (expires, addresses), oldest first
        self._asking: dict[str, asyncio.Future[list[str]]] = {}
        self.queries = 0

    async def addresses(self, name: str) -> list[str]:
        """`name`'s IPv4 addresses (maybe none); ResolveError if no nameserver answered (not kept)."""
        kept = self._cache.get(name)
        if kept is not None and kept[0] > self.clock():
            return kept[1]
        asking = self._asking.get(name)
        if asking is not None:
            return await asyncio.shield(asking)
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._asking[name] = future
        try:
            self.queries += 1
            answer = await resolve4(name, self.nameservers)
            ttl = min(answer.ttl, MAX_TTL) if answer.addresses else NEGATIVE_TTL
            self._keep(name, self.clock() + ttl, answer.addresses)
            future.set_result(answer.addresses)
            return answer.addresses
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else ResolveError(str(exc)))
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._asking[name]

    def _keep(self, name: str, expires: float, addresses: list[str]) -> None:
        self._cache.pop(name, None)
        if len(self._cache) >= MAX_CACHED:
            now = self.clock()
            for stale in [n for n, (until, _) in self._cache.items() if until <= now]:
                del self._cache[stale]
            while len(self._cache) >= MAX_CACHED:
                del self._cache[next(iter(self._cache))]
        self._cache[name] = (expires, addresses)
