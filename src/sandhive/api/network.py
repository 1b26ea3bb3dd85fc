"""A sandbox's `network` settings (E2B's SandboxNetworkConfig): which ones this server honours, their checks,
and the proxy route they make.

Honoured today: `allowPublicTraffic` (false: the sandbox's ports answer only requests carrying its
`trafficAccessToken`), `maskRequestHost` (the Host header its ports see), `httpsPorts` (ports the proxy reaches
with TLS), `allowOut`/`denyOut` of IP addresses and CIDR ranges (kernel rules, node/egress.py), and domain names
in `allowOut` (`example.com`, `*.example.com`, `*`: judged by the node's egress filter on HTTP Host and TLS SNI,
node/egress_filter.py), `dnsServers` (addresses the sandbox may reach whatever its other rules say, as E2B
allows its nameservers), and header `rules` (node/header_rules.py: headers the egress filter puts into plain-HTTP
requests to a domain; HTTPS to such a domain is refused, see docs/network.md). `egressProxy` (an upstream SOCKS5
proxy) is refused with a 400 rather than accepted and not used.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from typing import Any

from ..errors import UserError
from ..node.egress import EgressPolicy, domain_pattern
from ..node.header_rules import HeaderRules, header_rules_of
from ..proxy.access import Route
from ..proxy.routing import ENVD_PORT
from ..store import SandboxRecord

HONOURED = ("allowPublicTraffic", "maskRequestHost", "allowOut", "denyOut", "httpsPorts", "dnsServers", "rules")
RANGES = ("allowOut", "denyOut")
EGRESS = (*RANGES, "dnsServers", "rules")  # replaced together by PUT /sandboxes/{id}/network
MAX_DNS_SERVERS = 10  # as E2B
MAX_HTTPS_PORTS = 64
MAX_RULES = 512  # ranges per list: each is a kernel set element
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
    ports = network.get("httpsPorts")
    if ports is not None:
        if (not isinstance(ports, list) or len(ports) > MAX_HTTPS_PORTS
                or not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports)):
            raise UserError(400, f"network.httpsPorts must be a list of at most {MAX_HTTPS_PORTS} port numbers")
        if ENVD_PORT in ports:
            raise UserError(400, f"network.httpsPorts: port {ENVD_PORT} is envd's, which speaks plain HTTP")
        if ports:
            kept["httpsPorts"] = sorted(set(ports))
    for key in RANGES:
        values = network.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values) or len(values) > MAX_RULES:
            what = "IP addresses, CIDR ranges or domain names" if key == "allowOut" else "IP addresses or CIDR ranges"
            raise UserError(400, f"network.{key} must be a list of at most {MAX_RULES} {what}")
        for value in values:
            _check_range(key, value)
        if values:
            kept[key] = list(values)
    servers = network.get("dnsServers")
    if servers is not None:
        if (not isinstance(servers, list) or len(servers) > MAX_DNS_SERVERS
                or not all(isinstance(v, str) and _ipv4(v) for v in servers)):
            raise UserError(400, f"network.dnsServers must be a list of at most {MAX_DNS_SERVERS} IPv4 addresses")
        if servers:
            kept["dnsServers"] = list(servers)
    rules = network.get("rules")
    if rules is not None:
        try:
            header_rules_of(rules, domain_pattern)
        except ValueError as exc:
            raise UserError(400, f"network.{exc}") from None
        if rules:
            kept["rules"] = rules
    return kept or None


def _ipv4(value: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(value), ipaddress.IPv4Address)
    except ValueError:
        return False


def _check_range(key: str, value: str) -> None:
    if key == "allowOut" and domain_pattern(value) is not None:
        return
    try:
        EgressPolicy.of(deny_out=[value])
    except ValueError:
        if key == "allowOut":
            raise UserError(400, f"network.allowOut: {value!r} is not an IP address, CIDR range or domain name "
                                 "(example.com, *.example.com)") from None
        raise UserError(400, f"network.{key}: {value!r} is not an IP address or CIDR range") from None


def has_rules(network: dict[str, Any] | None) -> bool:
    """Whether the stored settings carry egress rules (then the node must load them: `policy`)."""
    return bool(network and any(network.get(key) for key in EGRESS))


def policy(network: dict[str, Any] | None, internet: bool) -> EgressPolicy:
    """The node's rules of stored settings; without internet, everything is denied that allowOut does not name.
    `dnsServers` are allowed ranges like allowOut's addresses."""
    network = network or {}
    allow = [*(network.get("allowOut") or ()), *(network.get("dnsServers") or ())]
    return EgressPolicy.of(allow, network.get("denyOut") or (), internet, header_rules(network))


def header_rules(network: dict[str, Any] | None) -> HeaderRules:
    """The stored (checked) header rules, merged per domain."""
    rules = (network or {}).get("rules")
    return header_rules_of(rules, domain_pattern) if rules else ()


def updated(current: dict[str, Any] | None, update: dict[str, Any]) -> dict[str, Any] | None:
    """The settings after `PUT /sandboxes/{id}/network`: the egress ones replaced by `update` (omitted ones
    cleared, as E2B does), the port ones kept. UserError 400 for what this server cannot honour."""
    if update.get("egressProxy"):
        raise UserError(400, "network.egressProxy (an upstream SOCKS5 egress proxy) is not supported by this server")
    kept = {key: value for key, value in (current or {}).items() if key not in EGRESS}
    return stored({**kept, **{key: update.get(key) for key in EGRESS}})


def new_traffic_token(network: dict[str, Any] | None) -> str | None:
    """A fresh token when `network` (as stored) makes the ports private; None when they are public."""
    if network and network.get("allowPublicTraffic") is False:
        return secrets.token_hex(32)
    return None


def route_of(record: SandboxRecord, address: str | None = None) -> Route:
    """What the edge proxy needs to reach and guard the sandbox of `record` (at `address` if it moved)."""
    network = record.network or {}
    return Route(address or record.address, traffic_token=record.traffic_access_token,
                 mask_host=network.get("maskRequestHost"), https_ports=frozenset(network.get("httpsPorts") or ()),
                 team=record.team_id)
