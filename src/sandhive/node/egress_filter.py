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
4. replays the bytes it read and relays both ways with splice(2) through a pipe per direction: the bytes go
   socket to socket inside the kernel, Python only waits for readiness (no copy through user space).

A sandbox with header rules (node/header_rules.py) has all its port 80/443 connections redirected here. One
its ranges allow goes on to the address it asked for (after the default blocked ranges' check); one whose name
has header rules is dialled as in 3 (the headers only ever go to an address of that name), and its requests
get the headers on the way out (`RequestRewriter`; the replies are spliced as above). HTTPS to such a name is
refused: its requests cannot be changed without TLS interception, and sending them without the headers would
fail in a way nobody could see.

When a sandbox's rules change (`EgressRules.apply`), its open connections whose name is no longer allowed are
closed. It listens on every address (a redirect lands on the veth's host address) on a port of its own; the
host firewall lets sandboxes reach it only through the redirect (`ct status dnat`), and anything else that
reaches it is closed as in 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import resource
import socket
import struct
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import network
from .egress import RULES, EgressPolicy, EgressRules, ensure_redirect_accepted
from .egress_audit import EgressEntry
from .header_rules import Headers, RequestRewriter, RewriteError, headers_for
from .resolve import ResolveError, Resolver
from .sniff import MAX_PEEK, Peek, matches, peek

log = logging.getLogger(__name__)

SO_ORIGINAL_DST = 80
PEEK_SECONDS = 5.0
PEEK_READS = 64  # a request head or ClientHello comes in a few segments; a trickle of tiny ones is refused
CONNECT_SECONDS = 10.0
MAX_PER_SANDBOX = 256
MAX_CONNECTIONS = 4096  # at most; fewer when the process may open fewer files (`connection_limit`)
FDS_PER_CONNECTION = 6  # two sockets and a pipe (two ends) per direction
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


PIPE_BYTES = 1 << 20  # each direction's pipe (F_SETPIPE_SZ), and the most one splice moves
F_SETPIPE_SZ = 1031
LINGER_RESET = struct.pack("ii", 1, 0)  # close() sends RST: a refused or cut connection ends at once


@dataclass(eq=False)
class _Connection:
    veth: str
    name: str | None  # None while its first bytes are being read
    task: asyncio.Task[None] | None
    destination: str = ""  # the address the sandbox asked for
    headers: Headers = ()  # the header rules applied to its requests

    def allowed(self, policy: EgressPolicy) -> bool:
        """Whether `policy` (new rules) still lets this connection go on as it was set up."""
        if self.name is None:
            return True  # still being judged: the judgment reads the rules afresh
        if headers_for(self.name, policy.rules) != self.headers:
            return False
        return matches(self.name, policy.domains) or (bool(self.destination) and policy.allows(self.destination))

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    sock.close()


async def _ready(loop: asyncio.AbstractEventLoop, sock: socket.socket, write: bool) -> None:
    waiter: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await waiter
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def rewrite_pump(source: socket.socket, target: socket.socket, rewriter: RequestRewriter) -> int:
    """Move what `source` sends to `target` through `rewriter` (header rules), then half-close `target`; the
    bytes sent. RewriteError (a request stream that cannot be framed) ends the connection."""
    loop = asyncio.get_running_loop()
    sent = 0
    while True:
        data = await loop.sock_recv(source, PIPE_BYTES)
        if not data:
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)
            return sent
        out = rewriter.feed(data)
        if out:
            await loop.sock_sendall(target, out)
            sent += len(out)


async def pump(source: socket.socket, target: socket.socket) -> int:
    """Move everything `source` sends to `target` (then half-close `target`), through a pipe with splice(2);
    the bytes moved. Both sockets non-blocking; errors (a reset) propagate."""
    loop = asyncio.get_running_loop()
    out_fd, in_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        fcntl.fcntl(in_fd, F_SETPIPE_SZ, PIPE_BYTES)
    flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
    moved = 0
    try:
        while True:
            try:
                n = os.splice(source.fileno(), in_fd, PIPE_BYTES, flags=flags)
            except BlockingIOError:
                await _ready(loop, source, write=False)
                continue
            ended = n == 0
            while 0 < n < PIPE_BYTES:  # take what else is there now: fewer, larger moves out
                try:
                    more = os.splice(source.fileno(), in_fd, PIPE_BYTES - n, flags=flags)
                except BlockingIOError:
                    break
                ended = more == 0
                if ended:
                    break
                n += more
            while n:
                try:
                    sent = os.splice(out_fd, target.fileno(), n, flags=flags)
                except BlockingIOError:
                    await _ready(loop, target, write=True)
                    continue
                n -= sent
                moved += sent
            if ended:
                with contextlib.suppress(OSError):
                    target.shutdown(socket.SHUT_WR)
                return moved
    finally:
        os.close(out_fd)
        os.close(in_fd)


async def _both(outward: Coroutine[Any, Any, int], inward: Coroutine[Any, Any, int]) -> tuple[int, int]:
    """Both directions' pumps; when one fails (a reset) or this is cancelled, the other is stopped and has let go
    of its socket's readiness callbacks before the caller closes the sockets."""
    tasks = (asyncio.ensure_future(outward), asyncio.ensure_future(inward))
    try:
        sent, received = await asyncio.gather(*tasks)
        return sent, received
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


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
        self.resolver = Resolver(self.nameservers)
        self.operator_allow = tuple(operator_allow)
        self.stats = FilterStats()
        self._listener: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._checker: asyncio.Task[None] | None = None
        self._lan: tuple[network.Network, ...] = ()
        self.max_connections = connection_limit()

    @property
    def port(self) -> int | None:
        if self._listener is None:
            return None
        return int(self._listener.getsockname()[1])

    async def start(self, port: int = 0) -> int:
        """Listen (on every IPv4 address, `port` 0: a free one), point the rules' redirects here, and adopt the
        surviving sandboxes' redirects."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(1024)
        sock.setblocking(False)
        self._listener = sock
        self._lan = tuple(await asyncio.to_thread(network.host_networks))
        self._acceptor = loop.create_task(self._accept(sock))
        self.rules.filter_port = self.port
        self.rules.listeners.append(self._rules_changed)
        await self.rules.adopt()
        self._checker = loop.create_task(self._keep_admitted())
        log.info("egress filter listening on port %s (nameservers %s)", self.port, ", ".join(self.nameservers))
        assert self.port is not None
        return self.port

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(listener)
            except OSError as exc:  # EMFILE and the like: say so, breathe, go on
                log.warning("egress filter: accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            task = loop.create_task(self._handle(conn, peer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

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
        for task in (self._checker, self._acceptor):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._checker = self._acceptor = None
        if self._rules_changed in self.rules.listeners:
            self.rules.listeners.remove(self._rules_changed)
        if self.rules.filter_port == self.port:
            self.rules.filter_port = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- rules changed: re-judge open connections ------------------------------------------------
    def _rules_changed(self, veth: str, policy: EgressPolicy) -> None:
        for connection in list(self.stats.open.get(veth, ())):
            if not connection.allowed(policy):
                connection.close()

    # ---- one connection ------------------------------------------------------------------------
    async def _handle(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        upstream: socket.socket | None = None
        connection: _Connection | None = None
        try:
            slot = slot_of(peer[0])
            try:
                destination: tuple[str, int] | None = original_destination(conn)
            except OSError:
                destination = None
            policy = self.rules.current(slot.veth) if slot else EgressPolicy()
            if slot is None or destination is None or destination == conn.getsockname()[:2] or not policy.filtered:
                return  # not a redirect from a sandbox with domain or header rules: closed unread (finally)
            connections = self.stats.open.setdefault(slot.veth, set())
            if len(connections) >= MAX_PER_SANDBOX or self._open_count() >= self.max_connections:
                log.warning("egress filter: too many connections from %s", slot.veth)
                return
            connection = _Connection(slot.veth, None, asyncio.current_task())
            connections.add(connection)  # counted from the start: reading first bytes holds memory too
            try:
                result, first = await asyncio.wait_for(self._peek(conn), PEEK_SECONDS)
            except TimeoutError:
                result, first = Peek(True), b""
            name = result.name
            policy = self.rules.current(slot.veth)  # as it is now, after the wait
            entry = EgressEntry(time.time(), "tcp", destination[0], destination[1], "denied", name)
            headers = headers_for(name, policy.rules)
            by_name = name is not None and matches(name, policy.domains)
            if not (by_name or policy.allows(destination[0])):
                self._deny(slot, entry)
                return
            if headers and result.kind != "http":
                self._deny(slot, entry, "header rules apply to plain HTTP only (no TLS interception)")
                return
            connection.name, connection.destination, connection.headers = name or "", destination[0], headers
            if by_name or headers:
                assert name is not None
                upstream = await self._connect(name, destination, policy)
            else:
                upstream = await self._dial(destination, policy)
            if upstream is None:
                self._deny(slot, entry)
                return
            self.stats.allowed += 1
            entry.verdict = "allowed"
            entry.destination = upstream.getpeername()[0]
            self.record(slot.sandbox_ip, entry)
            loop = asyncio.get_running_loop()
            if headers:
                rewriter = RequestRewriter(headers)
                outward = rewrite_pump(conn, upstream, rewriter)
                first = rewriter.feed(first)
            else:
                outward = pump(conn, upstream)
            await loop.sock_sendall(upstream, first)
            sent, received = await _both(outward, pump(upstream, conn))
            entry.ended, entry.bytes_out, entry.bytes_in = time.time(), len(first) + sent, received
        except (OSError, RewriteError, asyncio.CancelledError):
            pass  # a reset, a request stream that cannot be framed, or cut by a rules change or the filter's
            # close: both sockets go below
        finally:
            _reset(conn)
            if upstream is not None:
                _reset(upstream)
            if connection is not None:
                connections = self.stats.open.get(connection.veth, set())
                connections.discard(connection)
                if not connections:
                    self.stats.open.pop(connection.veth, None)

    def _open_count(self) -> int:
        return sum(len(c) for c in self.stats.open.values())

    async def _peek(self, conn: socket.socket) -> tuple[Peek, bytes]:
        """The first bytes' verdict, and the bytes (at most MAX_PEEK plus one read)."""
        loop = asyncio.get_running_loop()
        buffer = b""
        for _ in range(PEEK_READS):
            data = await loop.sock_recv(conn, MAX_PEEK)
            if not data:
                return (peek(buffer) if buffer else Peek(True)), buffer
            buffer += data
            result = peek(buffer)
            if result.done:
                return result, buffer
        return Peek(True), buffer

    def _deny(self, slot: network.Slot, entry: EgressEntry, reason: str = "") -> None:
        self.stats.denied += 1
        entry.reason = reason or None
        log.info("egress filter: %s -> %s:%s %s denied%s", slot.sandbox_ip, entry.destination, entry.port,
                 entry.domain or "(no name)", f": {reason}" if reason else "")
        self.record(slot.sandbox_ip, entry)  # the caller's finally resets the connection

    async def _connect(self, name: str, destination: tuple[str, int], policy: EgressPolicy) -> socket.socket | None:
        """A connection to `name` on the destination's port: to the address asked for if the name has it,
        else to the name's own addresses."""
        try:
            addresses = await self.resolver.addresses(name)
        except ResolveError as exc:
            log.info("egress filter: %s does not resolve (%s)", name, exc)
            return None
        asked, port = destination
        for address in [asked] if asked in addresses else addresses:
            sock = await self._dial((address, port), policy)
            if sock is not None:
                return sock
            log.info("egress filter: %s resolves to %s, which is unreachable or sandboxes may not reach", name,
                     address)
        return None

    async def _dial(self, destination: tuple[str, int], policy: EgressPolicy) -> socket.socket | None:
        if not self.may_dial(destination[0], policy):
            return None
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, destination), CONNECT_SECONDS)
        except (OSError, TimeoutError):
            sock.close()
            return None
        except BaseException:
            sock.close()
            raise
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def may_dial(self, address: str, policy: EgressPolicy) -> bool:
        """Whether the filter may connect to `address` for a sandbox with `policy`: never the host, loopback or
        the sandboxes' subnet; the default blocked ranges only when allowOut or the operator names them."""
        ip = ipaddress.IPv4Address(address)
        if any(ip in n for n in NEVER) or is_local(address):
            return False
        if any(ip in n for n in (*policy.allow, *self.operator_allow) if n.version == 4):
            return True
        return not any(ip in n for n in (*BLOCKED, *self._lan) if n.version == 4)


def connection_limit() -> int:
    """MAX_CONNECTIONS, or as many as half the process's open-file limit allows (the API and the sandboxes'
    proxy need the rest)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft // 2 // FDS_PER_CONNECTION))


def is_local(address: str) -> bool:
    """Whether `address` is one of this host's own (the kernel lets a socket bind only to those), checked at
    the moment of use rather than from a list that an interface change makes stale."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True
