"""A netfilter queue from Python: bind one (nfnetlink_queue), read the packets the kernel queues to it, and answer
each with a verdict and, optionally, a packet mark.

Why by hand: the messages are a handful of fixed structs on a netlink socket, and the libraries that wrap them
(libnetfilter_queue bindings) need a C build; this is the few lines the egress judge (node/egress_judge.py)
needs. The kernel's side: an `NFQUEUE --queue-num N` rule (xtables, as `nft`'s own `queue` is not built into
every kernel) sends packets here; a queue nobody is bound to drops them (never "fail open").

Layout (include/uapi/linux/netfilter/nfnetlink_queue.h): a netlink header (host order), then `nfgenmsg` (family,
version, queue number big-endian), then attributes; the attributes' own structs are big-endian.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import socket
import struct
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
MSG_PACKET, MSG_VERDICT, MSG_CONFIG = 0, 1, 2
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK = 1, 4
CFG_CMD, CFG_PARAMS, CFG_QUEUE_MAXLEN = 1, 2, 3
CMD_BIND, CMD_UNBIND = 1, 2
COPY_PACKET = 2
ATTR_PACKET_HDR, ATTR_VERDICT_HDR, ATTR_MARK, ATTR_PAYLOAD = 1, 2, 3, 10
SOL_NETLINK, NETLINK_NO_ENOBUFS = 270, 5
COPY_BYTES = 0xFFFF  # the whole packet (a queued packet is one segment: GSO is split before queueing)
QUEUE_LENGTH = 4096  # packets the kernel holds for us before it drops new ones
RECEIVE_BUFFER = 8 << 20
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
_NFGEN = struct.Struct("=BBH")  # family, version, res_id (big-endian, packed by hand)


class Verdict(enum.IntEnum):
    DROP = 0
    ACCEPT = 1


def attribute(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * (-length % 4)


def message(kind: int, flags: int, queue: int, attributes: bytes, seq: int = 0) -> bytes:
    body = _NFGEN.pack(socket.AF_UNSPEC, 0, socket.htons(queue)) + attributes
    return _HEADER.pack(_HEADER.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, seq, 0) + body


def attributes_of(data: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while len(data) >= 4:
        length, kind = struct.unpack_from("=HH", data)
        if length < 4 or length > len(data):
            break
        found[kind & 0x7FFF] = data[4:length]
        data = data[(length + 3) & ~3:]
    return found


def config_messages(queue: int) -> list[bytes]:
    """Bind `queue`, copy whole packets, and let the kernel hold QUEUE_LENGTH of them."""
    return [message(MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, queue, attribute(CFG_CMD, struct.pack("=BxH", CMD_BIND, 0)),
                    seq=1),
            message(MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, queue,
                    attribute(CFG_PARAMS, struct.pack(">IB", COPY_BYTES, COPY_PACKET)), seq=2),
            message(MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, queue,
                    attribute(CFG_QUEUE_MAXLEN, struct.pack(">I", QUEUE_LENGTH)), seq=3)]


def verdict_message(queue: int, packet_id: int, verdict: Verdict, mark: int | None = None) -> bytes:
    attrs = attribute(ATTR_VERDICT_HDR, struct.pack(">II", int(verdict), packet_id))
    if mark is not None:
        attrs += attribute(ATTR_MARK, struct.pack(">I", mark))
    return message(MSG_VERDICT, NLM_F_REQUEST, queue, attrs)


@dataclass(frozen=True)
class Queued:
    packet_id: int
    packet: bytes  # the IP packet


def parse(datagram: bytes) -> tuple[list[Queued], list[int]]:
    """The queued packets in one netlink datagram, and the errnos of any error messages (acks are errno 0)."""
    packets: list[Queued] = []
    errors: list[int] = []
    while len(datagram) >= _HEADER.size:
        length, kind, _, _, _ = _HEADER.unpack_from(datagram)
        if length < _HEADER.size or length > len(datagram):
            break
        body = datagram[_HEADER.size:length]
        if kind == NLMSG_ERROR and len(body) >= 4:
            errors.append(-struct.unpack_from("=i", body)[0])
        elif kind == (NFNL_SUBSYS_QUEUE << 8) | MSG_PACKET and len(body) >= _NFGEN.size:
            attrs = attributes_of(body[_NFGEN.size:])
            header, payload = attrs.get(ATTR_PACKET_HDR), attrs.get(ATTR_PAYLOAD)
            if header is not None and len(header) >= 4 and payload is not None:
                packets.append(Queued(struct.unpack_from(">I", header)[0], payload))
        datagram = datagram[(length + 3) & ~3:]
    return packets, errors


class Queue:
    """One bound queue (non-blocking socket: `receive` until it returns nothing)."""

    def __init__(self, number: int) -> None:
        self.number = number
        self._sock: socket.socket | None = None

    def open(self) -> None:
        """Bind the queue; OSError (EBUSY: another process holds it, EPERM: not root) if the kernel refuses."""
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            sock.bind((0, 0))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)  # an overrun drops packets, not the socket
            for request in config_messages(self.number):
                sock.send(request)
                _, errors = parse(sock.recv(65536))
                failed = [e for e in errors if e]
                if failed:
                    raise OSError(failed[0], f"nfqueue {self.number}: {os.strerror(failed[0])}")
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def fileno(self) -> int:
        assert self._sock is not None
        return self._sock.fileno()

    def receive(self) -> list[Queued]:
        assert self._sock is not None
        got: list[Queued] = []
        while True:
            try:
                datagram = self._sock.recv(1 << 17)
            except BlockingIOError:
                return got
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    continue
                raise
            got += parse(datagram)[0]

    def verdict(self, packet_id: int, verdict: Verdict, mark: int | None = None) -> None:
        assert self._sock is not None
        self._sock.send(verdict_message(self.number, packet_id, verdict, mark))

    def close(self) -> None:
        if self._sock is None:
            return
        with contextlib.suppress(OSError):
            self._sock.send(message(MSG_CONFIG, NLM_F_REQUEST, self.number,
                                    attribute(CFG_CMD, struct.pack("=BxH", CMD_UNBIND, 0))))
        self._sock.close()
        self._sock = None
