"""Header filtering between the client and a sandbox port.

Only hop-by-hop headers (RFC 9110 §7.6.1) are dropped: everything end-to-end — `X-Access-Token`,
`Authorization`, `Connect-*`, `Keepalive-Ping-Interval`, `Content-Encoding`, `Content-Length`, `Host` —
passes untouched, because envd and user apps rely on them and bodies are relayed byte for byte.
"""

from __future__ import annotations

RawHeaders = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
    b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
# The client-side server already answered `Expect: 100-continue`; forwarding it would make the upstream wait.
_REQUEST_ONLY = frozenset({b"expect"})
# A WebSocket handshake is negotiated separately on each hop by the two WebSocket stacks.
_WS_HANDSHAKE = frozenset({
    b"host", b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions",
    b"sec-websocket-protocol", b"sec-websocket-accept", b"user-agent", b"content-length", b"date", b"server",
})


def _connection_tokens(headers: RawHeaders) -> set[bytes]:
    """Headers named in `Connection:` are hop-by-hop too."""
    tokens: set[bytes] = set()
    for key, value in headers:
        if key.lower() == b"connection":
            tokens.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return tokens


def _without(headers: RawHeaders, drop: frozenset[bytes]) -> RawHeaders:
    named = _connection_tokens(headers)
    return [(key, value) for key, value in headers if key.lower() not in drop and key.lower() not in named]


def upstream_request(headers: RawHeaders, client: tuple[str, int] | None, scheme: str) -> RawHeaders:
    """Request headers for the sandbox: end-to-end ones plus the usual X-Forwarded-* trio."""
    out = _without(headers, HOP_BY_HOP | _REQUEST_ONLY)
    forwarded_for = [value for key, value in out if key.lower() == b"x-forwarded-for"]
    out = [(key, value) for key, value in out if key.lower() not in (b"x-forwarded-for", b"x-forwarded-proto")]
    if client is not None:
        forwarded_for.append(client[0].encode())
    if forwarded_for:
        out.append((b"x-forwarded-for", b", ".join(forwarded_for)))
    out.append((b"x-forwarded-proto", b"https" if scheme in ("https", "wss") else b"http"))
    return out


def downstream_response(headers: RawHeaders) -> RawHeaders:
    """Response headers for the client; `Content-Length`/`Content-Encoding` stay since bytes are unchanged."""
    return _without(headers, HOP_BY_HOP)


def websocket_request(headers: RawHeaders, client: tuple[str, int] | None, scheme: str) -> RawHeaders:
    """Handshake headers for the sandbox's WebSocket server, minus those the client library sets itself."""
    return [(key, value) for key, value in upstream_request(headers, client, scheme)
            if key.lower() not in _WS_HANDSHAKE]


def websocket_response(headers: RawHeaders) -> RawHeaders:
    """Handshake response headers worth relaying (e.g. Set-Cookie)."""
    return _without(headers, HOP_BY_HOP | _WS_HANDSHAKE)
