"""Judging a domain-ruled connection in place: hold its first data segments until they name a host (HTTP Host, TLS
SNI), decide once, then let the kernel carry the connection at full speed.

The egress filter (node/egress_filter.py) relays every byte of an allowed connection through a second TCP
connection: measured at 63–65 % of plain NAT for a 100 MB download (splice(2)), and no better through a BPF
sockmap (kernel-thread delivery; see docs/network.md). This is the other design: the connection goes to its
real destination through the kernel's NAT; only its first data segments visit user space (a netfilter queue,
node/nfqueue.py), and the verdict is written into the connection's conntrack mark, so every later packet is
judged by one mark comparison in the kernel.

Per connection (`Flow`, keyed by its 4-tuple): the SYN passes (the handshake reaches the real server, which
learns no data); data segments are held, by their offset from the SYN's sequence number, until the contiguous
bytes from offset 0 are enough for `sniff.peek`; duplicates (retransmissions of a held segment) are dropped;
then `decide` (the caller: name rules, resolution, the address check) says allowed or denied, and every held
segment is released in order with the verdict's mark. A connection that names nothing within `PEEK_SECONDS`, or
sends more than MAX_PEEK first bytes without a name, or ends (FIN) before naming one, is denied. Later packets
of a decided connection that were already queued get its verdict.

The sandbox controls its TCP stack (it is root in its namespace): segments may come out of order, overlap, or
be retransmitted with other bytes. Only the contiguous prefix is read, an overlap keeps the bytes held first,
and what the sandbox claims only ever selects a name that the node then resolves: the destination must be one
of that name's addresses, so no ordering trick takes a connection anywhere a rule does not allow.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .sniff import MAX_PEEK, Peek, peek

PEEK_SECONDS = 5.0
FLOW_IDLE_SECONDS = 120.0  # a decided flow is forgotten this long after its last queued packet
MAX_FLOWS = 65536
MAX_HELD_SEGMENTS = 64
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10

Key = tuple[str, int, str, int]  # source, source port, destination, destination port


class Action(enum.Enum):
    PASS = "pass"  # accept, no mark: not a judgment (handshake, pure ACK)
    ALLOW = "allow"  # accept, marked allowed: the kernel marks the connection and carries it
    DENY = "deny"  # accept, marked denied: the kernel marks the connection and resets it
    DROP = "drop"  # a duplicate of a held segment


@dataclass(frozen=True)
class Segment:
    source: str
    sport: int
    destination: str
    dport: int
    seq: int
    flags: int
    payload: bytes

    @property
    def key(self) -> Key:
        return (self.source, self.sport, self.destination, self.dport)


def segment_of(packet: bytes) -> Segment | None:
    """An IPv4 TCP packet's parts, or None for anything else (every length checked: the sandbox wrote it)."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack_from(">H", packet, 2)[0]
    if ihl < 20 or packet[9] != 6 or total > len(packet) or total < ihl + 20:
        return None
    if struct.unpack_from(">H", packet, 6)[0] & 0x3FFF:  # a fragment: never judged piecemeal
        return None
    tcp = packet[ihl:total]
    offset = (tcp[12] >> 4) * 4
    if offset < 20 or offset > len(tcp):
        return None
    sport, dport, seq = struct.unpack_from(">HHI", tcp)
    return Segment(str(ipaddress.IPv4Address(packet[12:16])), sport, str(ipaddress.IPv4Address(packet[16:20])),
                   dport, seq, tcp[13], bytes(tcp[offset:]))


@dataclass
class Flow:
    key: Key
    base: int | None  # the sequence number of the first data byte (SYN's + 1), once known
    started: float
    last: float
    held: list[tuple[int, int, bytes]] = field(default_factory=list)  # (offset, packet id, payload)
    ended: bool = False  # a FIN came before the name
    verdict: Action | None = None
    deciding: bool = False
    result: Peek | None = None


Decide = Callable[[Flow, Peek], Awaitable[bool]]
Send = Callable[[int, Action], None]


class Judge:
    """Packets in (`packet`), verdicts out (`send(packet id, action)`); `decide` judges a flow's first bytes.
    Call `expire()` every second or so."""

    def __init__(self, send: Send, decide: Decide, clock: Callable[[], float] = time.monotonic) -> None:
        self.send = send
        self.decide = decide
        self.clock = clock
        self.flows: dict[Key, Flow] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def packet(self, packet_id: int, packet: bytes) -> None:
        segment = segment_of(packet)
        if segment is None:
            self.send(packet_id, Action.DENY)  # not something a rule can judge: the connection is refused
            return
        now = self.clock()
        flow = self.flows.get(segment.key)
        if flow is not None and flow.verdict is not None:
            flow.last = now
            self.send(packet_id, flow.verdict)
            return
        if segment.flags & RST:
            self.send(packet_id, Action.PASS)
            if flow is not None:
                self._finish(flow, Action.DROP)
            return
        if segment.flags & SYN:
            if flow is None and not self._room():
                self.send(packet_id, Action.DENY)
                return
            if flow is None:
                flow = self.flows[segment.key] = Flow(segment.key, (segment.seq + 1) % 2**32, now, now)
            self.send(packet_id, Action.PASS)
            return
        if not segment.payload and not segment.flags & FIN:
            self.send(packet_id, Action.PASS)  # a pure ACK carries nothing to judge
            return
        if flow is None:  # no SYN seen (the judge started mid-connection): its first data is the start
            if not self._room():
                self.send(packet_id, Action.DENY)
                return
            flow = self.flows[segment.key] = Flow(segment.key, segment.seq, now, now)
        flow.last = now
        if flow.base is None:
            flow.base = segment.seq
        offset = (segment.seq - flow.base) % 2**32
        if any(held == offset for held, _, _ in flow.held) or len(flow.held) >= MAX_HELD_SEGMENTS \
                or offset >= 2 * MAX_PEEK:
            self.send(packet_id, Action.DROP if len(flow.held) < MAX_HELD_SEGMENTS else Action.DENY)
            return
        flow.held.append((offset, packet_id, segment.payload))
        if segment.flags & FIN:
            flow.ended = True
        if not flow.deciding:
            self._look(flow)

    def _room(self) -> bool:
        if len(self.flows) < MAX_FLOWS:
            return True
        self.expire()
        return len(self.flows) < MAX_FLOWS

    def _look(self, flow: Flow) -> None:
        result = peek(prefix(flow.held))
        if not result.done and (flow.ended or len(prefix(flow.held)) >= MAX_PEEK):
            result = Peek(True)
        if not result.done:
            return
        flow.deciding, flow.result = True, result
        task = asyncio.get_running_loop().create_task(self._decide(flow, result))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _decide(self, flow: Flow, result: Peek) -> None:
        try:
            allowed = result.name is not None and await self.decide(flow, result)
        except Exception:  # noqa: BLE001 — a judgment that fails is a refusal
            allowed = False
        self._finish(flow, Action.ALLOW if allowed else Action.DENY)

    def _finish(self, flow: Flow, action: Action) -> None:
        """Release the held segments in order with `action`, and remember it for the flow's later packets."""
        for _, packet_id, _ in sorted(flow.held):
            self.send(packet_id, action)
        flow.held.clear()
        if action is Action.DROP:  # reset before a verdict: nothing to remember
            self.flows.pop(flow.key, None)
            return
        flow.verdict = action

    def expire(self) -> None:
        """Deny flows that named nothing within PEEK_SECONDS; forget decided ones idle for FLOW_IDLE_SECONDS."""
        now = self.clock()
        for flow in list(self.flows.values()):
            if flow.verdict is None and not flow.deciding and now - flow.started > PEEK_SECONDS:
                self._finish(flow, Action.DENY)
            elif flow.verdict is not None and now - flow.last > FLOW_IDLE_SECONDS:
                del self.flows[flow.key]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def prefix(held: list[tuple[int, int, bytes]]) -> bytes:
    """The contiguous bytes from offset 0 (an overlapping segment adds only what is past the bytes held)."""
    out = bytearray()
    for offset, _, payload in sorted(held):
        if offset > len(out):
            break
        out += payload[len(out) - offset:]
    return bytes(out)
