"""Which sandbox and port a request is for — E2B's client-proxy rules (wire doc §6.8), as pure functions.

Kept free of I/O so the rules can be unit-tested exhaustively and shared by HTTP and WebSocket traffic.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping

ENVD_PORT = 49983
SANDBOX_ID = re.compile(r"^[a-z0-9]+$")
_DECIMAL = re.compile(r"^[0-9]+$")
_HOST_LABEL = re.compile(r"^([0-9]+)-([a-z0-9]+)$")
# envd routes only the node may call; the public edge answers 404 so nobody can re-init a sandbox.
INTERNAL_ENVD_PATHS = frozenset({"/init", "/upgrade", "/freeze", "/unfreeze", "/fsfreeze", "/fsthaw", "/collapse"})


class BadTarget(ValueError):
    """The request names a sandbox but not validly (400): E2B-shaped, so `sandbox_id` may be known."""

    def __init__(self, message: str, sandbox_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.sandbox_id = sandbox_id


def parse_target(headers: Mapping[str, str], host: str | None, domain: str | None = None) -> tuple[str, int] | None:
    """Return `(sandbox_id, port)` when the request is sandbox traffic, None when it is for the API.

    Headers win: if either `E2b-Sandbox-Id` or `E2b-Sandbox-Port` is present (any case), both are required
    and the port must be decimal 1..65535, else `BadTarget`. Otherwise the Host's left-most label may be
    `<port>-<sandboxID>` (the host needs a dot; with `domain`, it must sit directly under that domain).
    The id from headers is returned as sent; callers check it against `SANDBOX_ID` before resolving.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    sandbox_id = lowered.get("e2b-sandbox-id")
    port = lowered.get("e2b-sandbox-port")
    if sandbox_id is not None or port is not None:
        sandbox_id = (sandbox_id or "").strip()
        if not sandbox_id or port is None:
            raise BadTarget("Both E2b-Sandbox-Id and E2b-Sandbox-Port headers are required", sandbox_id or None)
        return sandbox_id, _port(port.strip(), sandbox_id)
    return _from_host(host, domain)


def _from_host(host: str | None, domain: str | None) -> tuple[str, int] | None:
    if not host:
        return None
    name = host.strip().lower()
    if name.startswith("["):  # an IPv6 literal is never a sandbox host
        return None
    name = name.rsplit(":", 1)[0] if ":" in name else name
    name = name.rstrip(".")
    label, dot, rest = name.partition(".")
    if not dot or not rest:
        return None
    if domain is not None and rest != domain.strip().lower().rstrip("."):
        return None
    match = _HOST_LABEL.match(label)
    if match is None:
        return None
    return match.group(2), _port(match.group(1), match.group(2))


def _port(text: str, sandbox_id: str) -> int:
    if not _DECIMAL.match(text) or not 1 <= int(text) <= 65535:
        raise BadTarget(f"Invalid sandbox port {text!r}: must be a decimal number from 1 to 65535", sandbox_id)
    return int(text)


def is_internal(port: int, path: str) -> bool:
    """True for envd's node-only routes. `path` is the decoded path; dot segments and slashes are normalised
    the way the upstream (httpx, then envd's router) would, so `/a/../init/` cannot slip through."""
    if port != ENVD_PORT:
        return False
    collapsed = re.sub(r"/+", "/", "/" + path)
    normalised = posixpath.normpath(collapsed).rstrip("/") or "/"
    return normalised in INTERNAL_ENVD_PATHS
