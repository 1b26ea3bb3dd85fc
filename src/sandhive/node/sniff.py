"""The name a new outgoing connection asks for, read from its first bytes: the Host header of a plain HTTP request
or the server_name (SNI) of a TLS ClientHello. Used by the egress filter (node/egress_filter.py) to judge a
sandbox's connection by its domain rules.

Every byte here comes from sandboxed code: each length is checked against what is there before it is used, the
input is capped (`MAX_PEEK`), and anything that is not a well-formed request or ClientHello is `INVALID`, never
a guess. A name is returned lower-case, without a trailing dot, and only if it is a plausible host name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_PEEK = 16 * 1024 + 5  # one TLS record of the largest plaintext size, or an HTTP request head of 16 KiB
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_METHOD = re.compile(rb"[A-Z]{1,16}")
_VERSION = re.compile(rb"HTTP/1\.[01]")


@dataclass(frozen=True)
class Peek:
    """`done` False: more bytes are needed. Done with `name` None: no acceptable name (malformed, or none sent)."""

    done: bool
    name: str | None = None
    kind: str = ""  # "http" or "tls" once known


MORE = Peek(False)
INVALID = Peek(True)


def host_name(value: str) -> str | None:
    """`value` as a canonical host name (lower-case, no trailing dot), or None if it is not one. IP literals are
    not names: a domain rule never matches them."""
    name = value.strip().lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        return None
    labels = name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        return None
    if labels[-1].isdigit():  # 203.0.113.7 is an address, not a name
        return None
    return name


def peek(data: bytes) -> Peek:
    """Judge the first bytes of a connection (at most MAX_PEEK of them are looked at)."""
    if not data:
        return MORE
    data = data[:MAX_PEEK]
    if data[0] == 0x16:
        return _tls(data)
    return _http(data)


# ---- plain HTTP ----------------------------------------------------------------------------------
def _http(data: bytes) -> Peek:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) >= MAX_PEEK or not _plausible_start(data):
            return INVALID
        return MORE
    lines = data[:end].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _METHOD.fullmatch(parts[0]) or not parts[1] or not _VERSION.fullmatch(parts[2]):
        return INVALID
    hosts = []
    for line in lines[1:]:
        key, sep, value = line.partition(b":")
        if not sep or not key or key != key.strip() or b"\n" in line or b"\r" in line:
            return INVALID  # no obs-fold, no whitespace before the colon (RFC 9112 §5.1), no bare CR or LF
        if key.lower() == b"host":
            hosts.append(value)
    if len(hosts) != 1:  # none, or two: which one the server believes is not ours to guess
        return Peek(True, kind="http")
    try:
        text = hosts[0].decode("ascii").strip()
    except UnicodeDecodeError:
        return Peek(True, kind="http")
    return Peek(True, _strip_port(text), "http")


def _plausible_start(data: bytes) -> bool:
    """Whether a partial request head can still become a valid one (so a slow writer is waited for, and
    anything else is judged at once)."""
    first, space, _ = data.partition(b" ")
    if not space:
        return len(first) <= 16 and re.fullmatch(rb"[A-Z]*", first) is not None
    return _METHOD.fullmatch(first) is not None


def _strip_port(value: str) -> str | None:
    if value.startswith("["):
        return None  # an IPv6 literal
    name, sep, port = value.rpartition(":")
    if sep:
        if not port.isdigit() or len(port) > 5:
            return None
        value = name
    return host_name(value)


# ---- TLS -----------------------------------------------------------------------------------------
class _Short(Exception):
    pass


class _Reader:
    """Bounds-checked big-endian reads over one buffer."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise _Short
        chunk = self.data[self.at:self.at + n]
        self.at += n
        return chunk

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> _Reader:
        return _Reader(self.take(self.number(length_bytes)))

    @property
    def left(self) -> int:
        return len(self.data) - self.at


def _tls(data: bytes) -> Peek:
    if len(data) < 5:
        return MORE
    if data[1] != 3:  # SSL 3.0 / TLS 1.x record versions all start with 3
        return INVALID
    length = int.from_bytes(data[3:5], "big")
    if length < 4 or length > 16 * 1024:
        return INVALID
    if len(data) < 5 + length:
        return MORE
    record = _Reader(data[5:5 + length])
    try:
        if record.number(1) != 1:  # handshake type client_hello
            return INVALID
        size = record.number(3)
        if size > record.left:  # a ClientHello spread over several records: not judged, refused
            return INVALID
        hello = _Reader(record.take(size))
        hello.take(2 + 32)  # legacy_version, random
        session = hello.number(1)
        if session > 32:
            return INVALID
        hello.take(session)
        suites = hello.number(2)
        if suites < 2 or suites % 2:
            return INVALID
        hello.take(suites)
        hello.vector(1)  # compression methods
        if hello.left == 0:
            return Peek(True, kind="tls")  # no extensions: no SNI
        extensions = hello.vector(2)
        if hello.left:
            return INVALID
        name: str | None = None
        seen: set[int] = set()
        while extensions.left:
            kind = extensions.number(2)
            body = extensions.vector(2)
            if kind in seen:
                return INVALID  # a repeated extension is illegal (RFC 8446 §4.2)
            seen.add(kind)
            if kind == 0:
                name = _server_name(body)
                if name is None:
                    return INVALID
        return Peek(True, name, "tls")
    except _Short:
        return INVALID


def _server_name(body: _Reader) -> str | None:
    names = body.vector(2)
    if body.left:
        return None
    found: str | None = None
    while names.left:
        name_type = names.number(1)
        value = names.vector(2).data
        if name_type != 0:
            continue
        if found is not None:
            return None  # two host names (RFC 6066 forbids it)
        try:
            found = host_name(value.decode("ascii"))
        except UnicodeDecodeError:
            return None
        if found is None:
            return None
    return found


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether `name` (canonical, see host_name) matches a domain rule: an exact name, `*.suffix` (any name
    below suffix, not suffix itself, as in E2B), or `*` (every name)."""
    for pattern in patterns:
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]) and len(name) > len(pattern) - 1:
            return True
    return False
