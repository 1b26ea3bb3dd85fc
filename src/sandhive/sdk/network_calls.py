"""A sandbox's `network` settings (issue 16): E2B's Python dict shapes in, the API's camelCase bodies out.

`Sandbox.create(network={...})` takes E2B's `SandboxNetworkOpts` keys (`allow_out`, `deny_out`,
`allow_public_traffic`, `mask_request_host`, ...), `update_network({...})` its `SandboxNetworkUpdate` keys, and
`get_info().network` answers `SandboxNetworkInfo`, snake_case again. `allow_out`/`deny_out` are lists or, as in
E2B, callables given a context with `all_traffic` ("0.0.0.0/0"); `allow_out` may name domains (`example.com`,
`*.example.com`); `rules` put headers into plain-HTTP requests to a domain (docs/network.md). `egress_proxy`, which
the server does not honour, is still sent: the server refuses it with a 400 that says so, which becomes
`InvalidArgumentException`. A misspelt key is refused here, before asking: a dropped `deny_out` would silently
leave the sandbox open.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict, cast

from .config import ConnectionConfig
from .errors import Context
from .exceptions import InvalidArgumentException
from .wire import HttpCall

ALL_TRAFFIC = "0.0.0.0/0"


@dataclass(frozen=True)
class SandboxNetworkSelectorContext:
    """What a callable `allow_out`/`deny_out` is given (E2B's): `all_traffic` and the `rules` being set."""

    all_traffic: str = ALL_TRAFFIC
    rules: Mapping[str, Any] = field(default_factory=dict)


Selector = list[str] | Callable[[SandboxNetworkSelectorContext], list[str]]


class SandboxNetworkOpts(TypedDict, total=False):
    """`Sandbox.create(network=...)`: E2B's keys. This server enforces all but `egress_proxy`, which is refused
    with a 400; header `rules` apply to plain HTTP only (HTTPS to a ruled domain is refused)."""

    allow_out: Selector
    deny_out: Selector
    allow_public_traffic: bool
    mask_request_host: str
    dns_servers: list[str]
    egress_proxy: dict[str, Any]
    rules: dict[str, Any]
    https_ports: list[int]


class SandboxNetworkUpdate(TypedDict, total=False):
    """`update_network(...)`: the whole egress configuration; every key left out is cleared on the server."""

    allow_out: Selector
    deny_out: Selector
    allow_internet_access: bool
    dns_servers: list[str]
    egress_proxy: dict[str, Any]
    rules: dict[str, Any]


class SandboxNetworkInfo(TypedDict, total=False):
    """`get_info().network`: the settings the sandbox has now, as `SandboxNetworkOpts` keys."""

    allow_out: list[str]
    deny_out: list[str]
    allow_public_traffic: bool
    mask_request_host: str
    dns_servers: list[str]
    https_ports: list[int]
    rules: dict[str, Any]
    egress_proxy: dict[str, Any]


# snake_case (E2B's Python SDK) → the wire's camelCase (E2B's API)
_CREATE_KEYS = {"allow_out": "allowOut", "deny_out": "denyOut", "allow_public_traffic": "allowPublicTraffic",
                "mask_request_host": "maskRequestHost", "dns_servers": "dnsServers", "egress_proxy": "egressProxy",
                "rules": "rules", "https_ports": "httpsPorts"}
_UPDATE_KEYS = {"allow_out": "allowOut", "deny_out": "denyOut", "dns_servers": "dnsServers",
                "egress_proxy": "egressProxy", "rules": "rules", "allow_internet_access": "allow_internet_access"}
_INFO_KEYS = {wire: key for key, wire in _CREATE_KEYS.items()}


def create_body(network: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The create request's `network` object, or None to send none (the server's defaults)."""
    if network is None:
        return None
    body = _body(network, _CREATE_KEYS, "network")
    return body or None


def update_body(network: Mapping[str, Any]) -> dict[str, Any]:
    """The `PUT /sandboxes/{id}/network` body: only what is given (the server clears the rest)."""
    return _body(network, _UPDATE_KEYS, "update_network")


def _body(network: Mapping[str, Any], keys: dict[str, str], where: str) -> dict[str, Any]:
    if not isinstance(network, Mapping):
        raise InvalidArgumentException(f"{where} takes a dict such as {{'deny_out': ['1.2.3.4']}}, "
                                       f"not {type(network).__name__}")
    for key in network:
        if key not in keys:
            hint = _snake(key)
            raise InvalidArgumentException(
                f"{where}: unknown key {key!r}" + (f" (did you mean {hint!r}?)" if hint in keys else "")
                + f"; the keys are {', '.join(keys)}")
    rules = network.get("rules") or {}
    body: dict[str, Any] = {}
    for key, value in network.items():
        if value is None:
            continue
        if key in ("allow_out", "deny_out"):
            value = _selector(key, value, rules)
        elif key in ("dns_servers", "https_ports"):
            value = list(value)
        body[keys[key]] = value
    return body


def _selector(key: str, value: Any, rules: Mapping[str, Any]) -> list[str]:
    if callable(value):
        value = value(SandboxNetworkSelectorContext(rules=dict(rules)))
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise InvalidArgumentException(f"network {key} must be a list of addresses, ranges or names "
                                       f"(e.g. ['10.0.0.0/8']), not {value!r}")
    return list(value)


def _snake(key: str) -> str:
    """`allowOut` → `allow_out`, `deny-out` → `deny_out`: a misspelt key's likely meaning."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key).replace("-", "_")


def info(data: Mapping[str, Any] | None) -> SandboxNetworkInfo | None:
    """`GET /sandboxes/{id}`'s `network` (camelCase) as `SandboxNetworkInfo`; None when it has no settings."""
    if not data:
        return None
    return cast(SandboxNetworkInfo, {_INFO_KEYS.get(key, key): value for key, value in data.items()
                                     if value is not None})


def update_network(config: ConnectionConfig, sandbox_id: str, network: Mapping[str, Any], *,
                   request_timeout: float | None) -> HttpCall[None]:
    """`PUT /sandboxes/{id}/network`: replace the egress rules at once; omitted ones are cleared."""
    body = update_body(network)
    timeout = config.timeout(request_timeout)
    ctx = Context(what=f"update the network of sandbox {sandbox_id}", server=config.api_url, sandbox_id=sandbox_id,
                  timeout=timeout)
    return HttpCall("PUT", f"{config.api_url}/sandboxes/{sandbox_id}/network", ctx, lambda r: None,
                    headers=config.api_headers(), timeout=timeout, json=body)
