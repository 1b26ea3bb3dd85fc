"""The egress judge (node/egress_judge.py) and the netfilter queue codec (node/nfqueue.py): first segments held
until they name a host, released in order with one verdict; what a sandbox's own TCP stack can do to confuse
it (out of order, overlap, duplicates, silence, FIN before a name). Pure: packets are built here, no kernel."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from sandhive.node import nfqueue
from sandhive.node.egress_judge import ACK, FIN, PEEK_SECONDS, RST, SYN, Action, Flow, Judge, prefix, segment_of
from sandhive.node.sniff import Peek

SRC, DST = "10.211.0.2", "203.0.113.7"
REQUEST = b"GET / HTTP/1.1\r\nHost: allowed.test\r\nUser-Agent: t\r\n\r\n"


def tcp(seq: int, flags: int, payload: bytes = b"", sport: int = 40000, dport: int = 80) -> bytes:
    header = struct.pack(">HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0)
    total = 20 + len(header) + len(payload)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, 6, 0, socket.inet_aton(SRC), socket.inet_aton(DST))
    return ip + header + payload


class Rig:
    def __init__(self, allow: bool = True) -> None:
        self.now = [100.0]
        self.sent: list[tuple[int, Action]] = []
        self.asked: list[str | None] = []
        self.allow = allow
        self.judge = Judge(lambda pid, action: self.sent.append((pid, action)), self.decide, lambda: self.now[0])

    async def decide(self, flow: Flow, result: Peek) -> bool:
        self.asked.append(result.name)
        return self.allow and result.name == "allowed.test"

    def feed(self, *packets: tuple[int, bytes]) -> None:
        for pid, packet in packets:
            self.judge.packet(pid, packet)

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)


def run(coroutine: object) -> None:
    asyncio.run(coroutine)  # type: ignore[arg-type]


def test_segments_are_parsed_with_every_length_checked() -> None:
    segment = segment_of(tcp(1000, ACK, b"hi"))
    assert segment is not None and segment.key == (SRC, 40000, DST, 80) and segment.payload == b"hi"
    good = tcp(1, ACK, b"x")
    for bad in (good[:30], b"\x60" + good[1:], good[:9] + b"\x11" + good[10:],  # short, IPv6, UDP
                good[:6] + b"\x20\x00" + good[8:]):  # a fragment
        assert segment_of(bad) is None


def test_the_handshake_passes_and_the_request_is_released_with_the_verdict() -> None:
    async def scenario() -> None:
        rig = Rig()
        rig.feed((1, tcp(999, SYN)), (2, tcp(1000, ACK)), (3, tcp(1000, ACK, REQUEST)))
        await rig.settle()
        assert rig.sent == [(1, Action.PASS), (2, Action.PASS), (3, Action.ALLOW)] and rig.asked == ["allowed.test"]
        rig.feed((4, tcp(1000 + len(REQUEST), ACK, b"more")))  # queued before the kernel saw the mark
        assert rig.sent[-1] == (4, Action.ALLOW)
    run(scenario())


def test_another_name_is_denied() -> None:
    async def scenario() -> None:
        rig = Rig()
        rig.feed((1, tcp(0, SYN)), (2, tcp(1, ACK, REQUEST.replace(b"allowed.test", b"other.test"))))
        await rig.settle()
        assert rig.sent[-1] == (2, Action.DENY)
    run(scenario())


def test_a_name_split_over_segments_out_of_order_with_a_duplicate() -> None:
    async def scenario() -> None:
        rig = Rig()
        a, b, c = REQUEST[:10], REQUEST[10:25], REQUEST[25:]
        rig.feed((1, tcp(0, SYN)), (2, tcp(1 + 25, ACK, c)), (3, tcp(1, ACK, a)))
        await rig.settle()
        assert rig.asked == [] and [p for p, _ in rig.sent] == [1]  # held: the middle is missing
        rig.feed((4, tcp(1, ACK, a)))  # a retransmission of a held segment
        assert rig.sent[-1] == (4, Action.DROP)
        rig.feed((5, tcp(1 + 10, ACK, b)))
        await rig.settle()
        assert rig.sent[2:] == [(3, Action.ALLOW), (5, Action.ALLOW), (2, Action.ALLOW)]  # in stream order
    run(scenario())


def test_overlapping_segments_keep_the_bytes_held_first() -> None:
    held = [(0, 1, b"GET / HT"), (4, 2, b"XXXXXXXXTP/1.1")]
    assert prefix(held) == b"GET / HT" + b"XXXXTP/1.1"  # bytes 4..7 stay as first held


def test_silence_a_fin_before_a_name_and_too_many_bytes_are_denied() -> None:
    async def scenario() -> None:
        rig = Rig()
        rig.feed((1, tcp(0, SYN)), (2, tcp(1, ACK, b"GET / HTTP/1.1\r\n")))
        rig.now[0] += PEEK_SECONDS + 1
        rig.judge.expire()
        assert rig.sent[-1] == (2, Action.DENY)
        rig.feed((3, tcp(0, SYN, sport=40001)), (4, tcp(1, ACK | FIN, b"GET / HTTP/1.1\r\n", sport=40001)))
        await rig.settle()
        assert rig.sent[-1] == (4, Action.DENY) and rig.asked == []  # ended before a name: never asked
        rig.feed((5, tcp(0, SYN, sport=40002)), (6, tcp(1, ACK, b"\x16\x03\x01" + b"\0" * 1400, sport=40002)))
        await rig.settle()
        assert rig.sent[-1] == (6, Action.DENY)  # not a ClientHello
    run(scenario())


def test_a_reset_forgets_the_flow_and_a_failing_decision_denies() -> None:
    async def scenario() -> None:
        rig = Rig()
        rig.feed((1, tcp(0, SYN)), (2, tcp(1, ACK, REQUEST[:5])), (3, tcp(6, RST | ACK)))
        assert (2, Action.DROP) in rig.sent and (3, Action.PASS) in rig.sent and not rig.judge.flows

        async def broken(flow: Flow, result: Peek) -> bool:
            raise RuntimeError("resolver down")
        rig.judge.decide = broken
        rig.feed((4, tcp(0, SYN, sport=40003)), (5, tcp(1, ACK, REQUEST, sport=40003)))
        await rig.settle()
        assert rig.sent[-1] == (5, Action.DENY)
    run(scenario())


def test_queue_messages_round_trip() -> None:
    binding = nfqueue.config_messages(7)
    assert len(binding) == 3 and all(struct.unpack_from("=H", m, 4)[0] == (3 << 8) | 2 for m in binding)
    assert struct.unpack_from(">H", binding[0], 18)[0] == 7  # the queue number, big-endian
    verdict = nfqueue.verdict_message(7, 42, nfqueue.Verdict.ACCEPT, 0x53000001)
    attrs = nfqueue.attributes_of(verdict[20:])
    assert struct.unpack(">II", attrs[nfqueue.ATTR_VERDICT_HDR]) == (1, 42)
    assert struct.unpack(">I", attrs[nfqueue.ATTR_MARK]) == (0x53000001,)
    packet = tcp(5, ACK, b"hi")
    body = nfqueue.attribute(nfqueue.ATTR_PACKET_HDR, struct.pack(">IHB", 9, 0x0800, 2)) + nfqueue.attribute(
        nfqueue.ATTR_PAYLOAD, packet)
    queued = nfqueue.message(nfqueue.MSG_PACKET, 0, 7, body)
    error = struct.pack("=IHHII", 36, nfqueue.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -16) + b"\0" * 16
    packets, errors = nfqueue.parse(queued + error)
    assert packets == [nfqueue.Queued(9, packet)] and errors == [16]


@pytest.mark.parametrize("junk", [b"", b"\x01\x00", struct.pack("=IHHII", 4, 0, 0, 0, 0)])
def test_junk_netlink_is_ignored(junk: bytes) -> None:
    assert nfqueue.parse(junk) == ([], [])
