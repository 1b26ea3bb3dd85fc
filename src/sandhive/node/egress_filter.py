"""The node's transparent egress filter: judges by name the connections that only a domain rule can allow.

`table inet sandhive_egress`'s `domains` chain (node/egress.py) redirects here a sandbox's new TCP connections to
ports 80 and 443 that its ranges deny, and only for a sandbox with domain rules. The filter

1. knows the sandbox by the connection's source (its slot's address; the redirect requires the veth's own
   address as source) and the destination it asked for by SO_ORIGINAL_DST; a connection that was not redirected
   from a sandbox with domain rules is closed unread;
2. reads the first bytes (at most `sniff.MAX_PEEK`, for at most `PEEK_SECONDS`): the Host header of an HTTP
   request or the SNI of a TLS ClientHello, and closes the connection unless the name matches a domain rule;
3. resolves the name itself (node/resolve.py) and connects to the address the sandbox asked for if the name
   has it, else to the name's own addresses — never to an address the sandbox made up with a forged Host or
   SNI; an address in the default blocked ranges (private, link-local, the host's LAN) only when the sandbox's
   allowOut or the operator's `--egress-allow` names it, and never the host itself or another sandbox;
4. replays the bytes it read and relays both ways, kernel buffers to kernel buffers (asyncio transports with
   flow control: no per-byte Python work).

When a sandbox's rules change (`EgressRules.apply`), its open connections whose name is no longer allowed are
closed. It listens on every address (a redirect lands on the veth's host address) on a port of its own; the
host firewall lets sandboxes reach it only through the redirect (`ct status dnat`), and anything else that
reaches it is closed as in 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import network
from .egress import RULES, EgressPolicy, EgressRules, ensure_redirect_accepted
from .egress_audit import EgressEntry
from .resolve import ResolveError, resolve4
from .sniff import Peek, matches, peek

log = logging.getLogger(__name__)

SO_ORIGINAL_DST = 80
PEEK_SECONDS = 5.0
PEEK_READS = 64  # a request head or ClientHello comes in a few segments; a trickle of tiny ones is refused
CONNECT_SECONDS = 10.0
MAX_PER_SANDBOX = 256
MAX_CONNECTIONS = 4096
CHECK_SECONDS = 2.0  # how often the host firewall's admission of redirects is checked while any are in use
NEVER = tuple(ipaddress.ip_network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", str(network.SUBNET), "224.0.0.0/4",
                                                 "240.0.0.0/4"))
BLOCKED = tuple(ipaddress.ip_network(n) for n in network.BLOCKED_V4)


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """Where a redirected connection was headed (the conntrack entry's original destination)."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, address = struct.unpack_from(">H4s", raw, 2)
    return socket.inet_ntoa(address), port


def slot_of(address: str) -> network.Slot | None:
    """The slot whose sandbox address `address` is."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return None
    if ip not in network.SUBNET:
        return None
    offset = int(ip) - int(network.SUBNET.network_address)
    return network.Slot(offset // 4) if offset % 4 == 2 else None


@dataclass(eq=False)
class _Connection:
    veth: str
    name: str | None  # None while its first bytes are being read
    inbound: asyncio.Transport
    outbound: asyncio.Transport | None = None

    def close(self) -> None:
        self.inbound.abort()
        if self.outbound is not None:
            self.outbound.abort()


class _Relay(asyncio.Protocol):
    """One direction's reader: what it reads goes to `peer`; when the peer's buffer is full it stops reading."""

    def __init__(self, peer: _Relay | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer = peer
        self.eof = False
        self.received = 0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None and peer.transport.can_write_eof():
            peer.transport.write_eof()
            if peer.eof:
                if self.transport is not None:
                    self.transport.close()
                peer.transport.close()
        return True  # keep the other direction open (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()  # flushes what it still holds, then closes
        if not self.closed.done():
            self.closed.set_result(None)


class _Inbound(_Relay):
    """The sandbox's side: first the peek (buffered here), then a relay."""

    def __init__(self, owner: EgressFilter) -> None:
        super().__init__()
        self.owner = owner
        self.buffer = bytearray()
        self.reads = 0
        self.peeked: asyncio.Future[Peek] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.owner.accepted(self)

    def data_received(self, data: bytes) -> None:
        if self.peeked.done():
            super().data_received(data)
            return
        self.buffer += data
        self.reads += 1
        result = peek(bytes(self.buffer)) if self.reads <= PEEK_READS else Peek(True)
        if result.done:
            assert self.transport is not None
            self.transport.pause_reading()
            self.peeked.set_result(result)

    def eof_received(self) -> bool:
        if not self.peeked.done():
            self.peeked.set_result(peek(bytes(self.buffer)) if self.buffer else Peek(True))
            return False
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.peeked.done():
            self.peeked.set_result(Peek(True))
        super().connection_lost(exc)


@dataclass
class FilterStats:
    allowed: int = 0
    denied: int = 0
    open: dict[str, set[_Connection]] = field(default_factory=dict)


class EgressFilter:
    """The filter's server. `nameservers`: whom to ask for names (default: the host's, as sandboxes use);
    `operator_allow`: `--egress-allow`'s ranges, which a name may resolve into although they are private."""

    def __init__(self, rules: EgressRules = RULES, nameservers: Sequence[str] | None = None,
                 operator_allow: Sequence[network.Network] = (),
                 record: Callable[[str, EgressEntry], None] | None = None) -> None:
        self.rules = rules
        self.record = record or (lambda source, entry: None)
        self.nameservers = list(nameservers) if nameservers else network.host_nameservers()
        self.operator_allow = tuple(operator_allow)
        self.stats = FilterStats()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._checker: asyncio.Task[None] | None = None
        self._lan: tuple[network.Network, ...] = ()

    @property
    def port(self) -> int | None:
        if self._server is None or not self._server.sockets:
            return None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, port: int = 0) -> int:
        """Listen (on every IPv4 address, `port` 0: a free one), point the rules' redirects here, and adopt the
        surviving sandboxes' redirects."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(1024)
        sock.setblocking(False)
        self._lan = tuple(await asyncio.to_thread(network.host_networks))
        self._server = await loop.create_server(lambda: _Inbound(self), sock=sock)
        self.rules.filter_port = self.port
        self.rules.listeners.append(self._rules_changed)
        await self.rules.adopt()
        self._checker = loop.create_task(self._keep_admitted())
        log.info("egress filter listening on port %s (nameservers %s)", self.port, ", ".join(self.nameservers))
        assert self.port is not None
        return self.port

    async def _keep_admitted(self) -> None:
        """`table inet sandhive` is reloaded whole by every server start on the host; one of an older version (or
        an operator's script) leaves out the input rule that admits redirects, and every filtered connection
        would then hang. While sandboxes have domain rules, put it back within CHECK_SECONDS."""
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            if self.rules.redirected():
                try:
                    await ensure_redirect_accepted()
                except Exception:  # noqa: BLE001 — logged; the next round tries again
                    log.exception("checking the host firewall's admission of the egress filter failed")

    async def close(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
            self._checker = None
        if self._rules_changed in self.rules.listeners:
            self.rules.listeners.remove(self._rules_changed)
        if self.rules.filter_port == self.port:
            self.rules.filter_port = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for connections in list(self.stats.open.values()):
            for connection in list(connections):
                connection.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- rules changed: re-judge open connections ------------------------------------------------
    def _rules_changed(self, veth: str, policy: EgressPolicy) -> None:
        for connection in list(self.stats.open.get(veth, ())):
            if connection.name is not None and not matches(connection.name, policy.domains):
                connection.close()

    # ---- one connection ------------------------------------------------------------------------
    def accepted(self, inbound: _Inbound) -> None:
        task = asyncio.get_running_loop().create_task(self._handle(inbound))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, inbound: _Inbound) -> None:
        transport = inbound.transport
        assert transport is not None
        sock: socket.socket = transport.get_extra_info("socket")
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        slot = slot_of(peer[0]) if peer else None
        try:
            destination = original_destination(sock)
        except OSError:
            destination = None
        policy = self.rules.current(slot.veth) if slot else EgressPolicy()
        if slot is None or destination is None or destination == tuple(local[:2]) or not policy.domains:
            transport.abort()  # not a redirect from a sandbox with domain rules
            return
        connections = self.stats.open.setdefault(slot.veth, set())
        if len(connections) >= MAX_PER_SANDBOX or sum(len(c) for c in self.stats.open.values()) >= MAX_CONNECTIONS:
            log.warning("egress filter: too many connections from %s", slot.veth)
            transport.abort()
            return
        connection = _Connection(slot.veth, None, transport)
        connections.add(connection)  # counted from the start: reading first bytes holds memory too
        try:
            try:
                result = await asyncio.wait_for(asyncio.shield(inbound.peeked), PEEK_SECONDS)
            except TimeoutError:
                result = Peek(True)
            name = result.name
            policy = self.rules.current(slot.veth)  # as it is now, after the wait
            entry = EgressEntry(time.time(), "tcp", destination[0], destination[1], "denied", name)
            if name is None or not matches(name, policy.domains):
                self._deny(slot, entry, transport)
                return
            connection.name = name
            outbound = await self._connect(name, destination, policy, inbound)
            if outbound is None:
                self._deny(slot, entry, transport)
                return
            upstream_transport, upstream = outbound
            connection.outbound = upstream_transport
            if transport.is_closing():
                upstream_transport.abort()
                return
            if not matches(name, self.rules.current(slot.veth).domains):  # changed while we connected
                connection.close()
                return
            self.stats.allowed += 1
            entry.verdict = "allowed"
            entry.destination = upstream_transport.get_extra_info("peername")[0]
            self.record(slot.sandbox_ip, entry)
            inbound.peer = upstream
            upstream_transport.write(bytes(inbound.buffer))
            inbound.received = len(inbound.buffer)
            inbound.buffer.clear()
            transport.resume_reading()
            await asyncio.gather(inbound.closed, upstream.closed)
            entry.ended, entry.bytes_out, entry.bytes_in = time.time(), inbound.received, upstream.received
        except BaseException:
            connection.close()
            raise
        finally:
            connections.discard(connection)
            if not connections:
                self.stats.open.pop(slot.veth, None)

    def _deny(self, slot: network.Slot, entry: EgressEntry, transport: asyncio.Transport) -> None:
        self.stats.denied += 1
        log.info("egress filter: %s -> %s:%s %s denied", slot.sandbox_ip, entry.destination, entry.port,
                 entry.domain or "(no name)")
        self.record(slot.sandbox_ip, entry)
        transport.abort()

    async def _connect(self, name: str, destination: tuple[str, int], policy: EgressPolicy,
                       inbound: _Relay) -> tuple[asyncio.Transport, _Relay] | None:
        try:
            addresses = await resolve4(name, self.nameservers)
        except ResolveError as exc:
            log.info("egress filter: %s does not resolve (%s)", name, exc)
            return None
        asked, port = destination
        candidates = [asked] if asked in addresses else addresses
        loop = asyncio.get_running_loop()
        for address in candidates:
            if not self.may_dial(address, policy):
                log.info("egress filter: %s resolves to %s, which sandboxes may not reach", name, address)
                continue
            try:
                transport, protocol = await asyncio.wait_for(
                    loop.create_connection(lambda: _Relay(inbound), address, port), CONNECT_SECONDS)
            except (OSError, TimeoutError):
                continue
            with contextlib.suppress(OSError):
                transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            assert isinstance(transport, asyncio.Transport)
            return transport, protocol
        return None

    def may_dial(self, address: str, policy: EgressPolicy) -> bool:
        """Whether the filter may connect to `address` for a sandbox with `policy`: never the host, loopback or
        the sandboxes' subnet; the default blocked ranges only when allowOut or the operator names them."""
        ip = ipaddress.IPv4Address(address)
        if any(ip in n for n in NEVER) or is_local(address):
            return False
        if any(ip in n for n in (*policy.allow, *self.operator_allow) if n.version == 4):
            return True
        return not any(ip in n for n in (*BLOCKED, *self._lan) if n.version == 4)


def is_local(address: str) -> bool:
    """Whether `address` is one of this host's own (the kernel lets a socket bind only to those), checked at
    the moment of use rather than from a list that an interface change makes stale."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True
