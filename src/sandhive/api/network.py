"""A sandbox's `network` settings (E2B's SandboxNetworkConfig): which ones this server honours, their checks,
and the proxy route they make.

Honoured today: `allowPublicTraffic` (false: the sandbox's ports answer only requests carrying its
`trafficAccessToken`) and `maskRequestHost` (the Host header its ports see). Egress rules (`allowOut`,
`denyOut`, ...) are refused with a 400 rather than accepted and not enforced.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from ..errors import UserError
from ..proxy.access import Route
from ..store import SandboxRecord

HONOURED = ("allowPublicTraffic", "maskRequestHost")
# A Host header value: a name or address with an optional port and the `${PORT}` placeholder. Nothing that
# could end the header (CR, LF) or smuggle another one.
_MASK = re.compile(r"^[A-Za-z0-9.\-_:\[\]]*(\$\{PORT\}[A-Za-z0-9.\-_:\[\]]*)*$")
MAX_MASK = 253


def unsupported(network: dict[str, Any] | None) -> str | None:
    """The first key of `network` this server cannot honour (set to something other than its default)."""
    for key, value in (network or {}).items():
        if value is not None and key not in HONOURED:
            return key
    return None


def stored(network: dict[str, Any] | None) -> dict[str, Any] | None:
    """The honoured settings of `network`, checked (UserError 400), as kept in the sandbox's record."""
    if not network:
        return None
    kept: dict[str, Any] = {}
    public = network.get("allowPublicTraffic")
    if public is not None:
        if not isinstance(public, bool):
            raise UserError(400, "network.allowPublicTraffic must be true or false")
        kept["allowPublicTraffic"] = public
    mask = network.get("maskRequestHost")
    if mask is not None:
        if not isinstance(mask, str) or not mask or len(mask) > MAX_MASK or not _MASK.match(mask):
            raise UserError(400, "network.maskRequestHost must be a host name or address (optionally with a port "
                                 f"or ${{PORT}}), at most {MAX_MASK} characters")
        kept["maskRequestHost"] = mask
    return kept or None


def new_traffic_token(network: dict[str, Any] | None) -> str | None:
    """A fresh token when `network` (as stored) makes the ports private; None when they are public."""
    if network and network.get("allowPublicTraffic") is False:
        return secrets.token_hex(32)
    return None


def route_of(record: SandboxRecord, address: str | None = None) -> Route:
    """What the edge proxy needs to reach and guard the sandbox of `record` (at `address` if it moved)."""
    network = record.network or {}
    return Route(address or record.address, traffic_token=record.traffic_access_token,
                 mask_host=network.get("maskRequestHost"))
