"""Header rules (E2B's `network.rules`): headers the node's egress filter puts into a sandbox's plain-HTTP
requests to a named domain, so that a secret (an API key, a token) reaches the server without ever being inside
the sandbox.

`RequestRewriter` sits on the sandbox-to-server direction of one connection. It reads the HTTP/1.x request
stream just far enough to find each request's head and the end of its body (Content-Length or chunked), puts
the rule's headers into every head — replacing any the sandbox sent under the same names — and forwards every
other byte as it came. A stream it cannot frame unambiguously (both Content-Length and Transfer-Encoding, two
different lengths, folded header lines, a head over MAX_HEAD) ends the connection rather than let a request
through without its headers or with a smuggled second one. After an `Upgrade` or a `CONNECT` the connection is
no longer HTTP: the rest passes untouched.

Why only plain HTTP: in an HTTPS connection the request is encrypted end to end; putting headers in needs TLS
interception with a CA the sandbox trusts, which this server does not do. The filter refuses HTTPS connections
to a domain with header rules (node/egress_filter.py) rather than send the request without its headers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from .sniff import matches

Headers = tuple[tuple[str, str], ...]  # (name, value) in the order given
HeaderRules = tuple[tuple[str, Headers], ...]  # (domain pattern, its headers)

MAX_HEAD = 64 * 1024
MAX_LINE = 8 * 1024  # a chunk-size or trailer line
MAX_DOMAINS = 64
MAX_HEADERS = 32
MAX_VALUE = 8 * 1024
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$")  # RFC 9110 field-name
_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")  # no CR, LF or other controls
_CHUNK = re.compile(rb"^([0-9A-Fa-f]{1,16})(;[^\r\n]*)?$")


class RewriteError(Exception):
    """The request stream cannot be framed safely: the connection ends."""


def header_rules_of(rules: object, domain_pattern: Callable[[str], str | None]) -> HeaderRules:
    """E2B's `rules` ({domain: [{"transform": {"headers": {name: value}}}]}) checked and merged per domain (later
    rules override earlier ones). ValueError names what is wrong. `domain_pattern` turns a key into a canonical
    pattern or None (egress.domain_pattern; passed in to keep this module free of the rules' kernel side)."""
    if not isinstance(rules, Mapping) or len(rules) > MAX_DOMAINS:
        raise ValueError(f"rules must map at most {MAX_DOMAINS} domain names to lists of rules")
    merged: dict[str, dict[str, tuple[str, str]]] = {}
    for key, entries in rules.items():
        pattern = domain_pattern(key) if isinstance(key, str) else None
        if pattern is None:
            raise ValueError(f"rules: {key!r} is not a domain name (example.com, *.example.com); "
                             "rules by address are not supported")
        if not isinstance(entries, list):
            raise ValueError(f"rules[{key!r}] must be a list of rules")
        headers = merged.setdefault(pattern, {})
        for entry in entries:
            if not isinstance(entry, Mapping) or set(entry) - {"transform"}:
                raise ValueError(f"rules[{key!r}]: each rule is {{\"transform\": {{\"headers\": {{...}}}}}}")
            transform = entry.get("transform") or {}
            if not isinstance(transform, Mapping) or set(transform) - {"headers"}:
                raise ValueError(f"rules[{key!r}]: a transform has only `headers`")
            given = transform.get("headers") or {}
            if not isinstance(given, Mapping):
                raise ValueError(f"rules[{key!r}]: transform.headers must map header names to values")
            for name, value in given.items():
                if not isinstance(name, str) or not _TOKEN.match(name) or name.lower() == "host":
                    raise ValueError(f"rules[{key!r}]: {name!r} is not a header name this server sets")
                if not isinstance(value, str) or len(value) > MAX_VALUE or not _VALUE.match(value):
                    raise ValueError(f"rules[{key!r}]: the value of {name} must be text of at most {MAX_VALUE} "
                                     "characters without line breaks")
                headers[name.lower()] = (name, value)
        if len(headers) > MAX_HEADERS:
            raise ValueError(f"rules[{key!r}]: at most {MAX_HEADERS} headers")
    return tuple((pattern, tuple(h.values())) for pattern, h in merged.items() if h)


def headers_for(name: str | None, rules: HeaderRules) -> Headers:
    """The headers for requests to host `name`: every matching domain's, the most specific pattern last (so an
    exact name's value beats a wildcard's)."""
    if name is None or not rules:
        return ()
    found = [(pattern, headers) for pattern, headers in rules if matches(name, (pattern,))]
    found.sort(key=lambda item: (0 if item[0] == "*" else 1 if item[0].startswith("*.") else 2, len(item[0])))
    merged: dict[str, tuple[str, str]] = {}
    for _, headers in found:
        for header in headers:
            merged[header[0].lower()] = header
    return tuple(merged.values())


def rule_domains(rules: HeaderRules) -> tuple[str, ...]:
    return tuple(pattern for pattern, _ in rules)


class RequestRewriter:
    """One connection's sandbox-to-server bytes in, the same bytes out with `headers` in every request head."""

    def __init__(self, headers: Iterable[tuple[str, str]]) -> None:
        self.headers = tuple(headers)
        self._names = {name.lower().encode() for name, _ in self.headers}
        self._added = b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in self.headers)
        self._buffer = b""
        self._state = "head"  # head | body | chunk-size | chunk-data | chunk-end | trailers | raw
        self._left = 0  # bytes left of a body or chunk
        self.requests = 0

    def feed(self, data: bytes) -> bytes:
        """What to send on for `data` (possibly nothing yet); RewriteError ends the connection."""
        if self._state == "raw":
            return data
        self._buffer += data
        out = bytearray()
        while self._buffer:
            if self._state == "head":
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_HEAD:
                        raise RewriteError("request head too large")
                    break
                head, self._buffer = self._buffer[:end], self._buffer[end + 4:]
                out += self._rewrite(head)
            elif self._state == "body" or self._state == "chunk-data":
                take = self._buffer[:self._left]
                self._buffer = self._buffer[len(take):]
                self._left -= len(take)
                out += take
                if self._left == 0:
                    self._state = "head" if self._state == "body" else "chunk-end"
            elif self._state == "chunk-end":
                if len(self._buffer) < 2:
                    break
                if self._buffer[:2] != b"\r\n":
                    raise RewriteError("chunk not followed by CRLF")
                out += self._buffer[:2]
                self._buffer = self._buffer[2:]
                self._state = "chunk-size"
            else:  # chunk-size or trailers: line by line
                line = self._line()
                if line is None:
                    break
                out += line + b"\r\n"
                if self._state == "trailers":
                    if not line:
                        self._state = "head"
                    continue
                match = _CHUNK.match(line)
                if match is None:
                    raise RewriteError("malformed chunk size")
                self._left = int(match.group(1), 16)
                self._state = "chunk-data" if self._left else "trailers"
            if self._state == "raw":
                out += self._buffer
                self._buffer = b""
        return bytes(out)

    def _line(self) -> bytes | None:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > MAX_LINE:
                raise RewriteError("line too long")
            return None
        line, self._buffer = self._buffer[:end], self._buffer[end + 2:]
        return line

    def _rewrite(self, head: bytes) -> bytes:
        lines = head.split(b"\r\n")
        request_line, fields = lines[0], lines[1:]
        parts = request_line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise RewriteError("not an HTTP/1.x request line")
        kept: list[bytes] = []
        lengths: set[bytes] = set()
        chunked = upgrade = False
        for line in fields:
            if not line or line[:1] in (b" ", b"\t"):
                raise RewriteError("folded or empty header line")
            name, colon, value = line.partition(b":")
            if not colon or name != name.strip() or not name:
                raise RewriteError("malformed header line")
            lower, value = name.lower(), value.strip()
            if lower == b"content-length":
                if not value.isdigit():
                    raise RewriteError("bad Content-Length")
                lengths.add(value.lstrip(b"0") or b"0")
            elif lower == b"transfer-encoding":
                if value.lower() != b"chunked" or chunked:
                    raise RewriteError("unsupported Transfer-Encoding")
                chunked = True
            elif lower == b"upgrade":
                upgrade = True
            if lower not in self._names:
                kept.append(line)
        if len(lengths) > 1 or (lengths and chunked):
            raise RewriteError("ambiguous request length")
        self.requests += 1
        if upgrade or parts[0] == b"CONNECT":
            self._state = "raw"
        elif chunked:
            self._state = "chunk-size"
        elif lengths and (length := int(next(iter(lengths)))) > 0:
            self._state, self._left = "body", length
        else:
            self._state = "head"
        return b"\r\n".join([request_line, *kept]) + b"\r\n" + self._added + b"\r\n"

