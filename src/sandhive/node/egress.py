"""A sandbox's own egress rules (E2B's `network.allowOut`/`denyOut`, `allow_internet_access`), in the kernel.

Four interval sets of `veth . address range` pairs in `table inet sandhive_egress` (declared and matched by
`network.egress_script`): `rallow4/6` accept, `rdeny4/6` drop, judged after the DNS path and before the
operator's `--egress-allow` and the default blocked ranges. So, as in E2B, allow beats deny; an allowed range
is reachable even if it is private (issue 8's default drop no longer applies to it); a denied one is dropped
even if the operator allowed it. Everything a rule lets through keeps the kernel's NAT fast path.

A sandbox with rules expresses "no internet" as denying `0.0.0.0/0` and `::/0` (so that its allowed ranges
beat it), not through the slots' `no_internet` set, which `apply` takes its veth out of.

The sets outlive the server (a restart keeps surviving sandboxes' rules): `load` reads them back at start, and
`clear` — called whenever a slot's network is destroyed — removes a slot's rules before the slot is reused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .hostcmd import run

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
TABLE = "inet sandhive_egress"
SLOTS_TABLE = "inet sandhive"
EVERYWHERE = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def set_declarations() -> list[str]:
    return [f"add set {TABLE} r{verdict}{v} {{ type ifname . ipv{v}_addr; flags interval; }}"
            for verdict in ("allow", "deny") for v in (4, 6)] + denied_declarations(TABLE)


def denied_declarations(table: str) -> list[str]:
    """The timed sets each drop rule records its attempts in (`source . destination . protocol . port`), which
    the egress audit reads (node/egress_audit.py): an attempt retried within a minute is one element."""
    return [f"add set {table} denied{v} {{ type ipv{v}_addr . ipv{v}_addr . inet_proto . inet_service; "
            f"flags dynamic,timeout; timeout 60s; size 65536; }}" for v in (4, 6)]


def recorded_drop(rule: str, match: str, version: int) -> list[str]:
    """`match` dropped, its TCP/UDP attempts recorded for the audit first (a full set only skips the record)."""
    family = "ip" if version == 4 else "ip6"
    return [f"{rule} {match} meta l4proto {{ tcp, udp }} "
            f"add @denied{version} {{ {family} saddr . {family} daddr . meta l4proto . th dport }}",
            f"{rule} {match} drop"]


def rule_lines(rule: str) -> list[str]:
    """The forward-chain rules that judge by the sets (`rule` is `add rule <table> forward`)."""
    return [f"{rule} iifname . ip daddr @rallow4 accept", f"{rule} iifname . ip6 daddr @rallow6 accept",
            *recorded_drop(rule, "iifname . ip daddr @rdeny4", 4),
            *recorded_drop(rule, "iifname . ip6 daddr @rdeny6", 6)]


@dataclass(frozen=True)
class EgressPolicy:
    """What one sandbox may reach beyond the defaults: ranges allowed (beating denies and the default drops)
    and ranges denied."""

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    @classmethod
    def of(cls, allow_out: Iterable[str] = (), deny_out: Iterable[str] = (), internet: bool = True) -> EgressPolicy:
        """From E2B's fields (CIDRs or bare addresses; ValueError names a bad one)."""
        deny = [*_networks(deny_out), *(() if internet else EVERYWHERE)]
        return cls(tuple(_collapse(_networks(allow_out))), tuple(_collapse(deny)))

    @property
    def empty(self) -> bool:
        return not self.allow and not self.deny

    def allows(self, address: str) -> bool:
        """Whether this policy lets a new connection to `address` through (the defaults aside)."""
        ip = ipaddress.ip_address(address)
        if any(ip in n for n in self.allow if n.version == ip.version):
            return True
        return not any(ip in n for n in self.deny if n.version == ip.version)

    def to_json(self) -> dict[str, list[str]]:
        return {"allow": [str(n) for n in self.allow], "deny": [str(n) for n in self.deny]}


def _networks(values: Iterable[str]) -> list[Network]:
    found: list[Network] = []
    for value in values:
        try:
            found.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or CIDR range: {value!r}") from None
    return found


def _collapse(networks: Sequence[Network]) -> list[Network]:
    v4 = ipaddress.collapse_addresses(n for n in networks if isinstance(n, ipaddress.IPv4Network))
    v6 = ipaddress.collapse_addresses(n for n in networks if isinstance(n, ipaddress.IPv6Network))
    return [*v4, *v6]


def _elements(veth: str, verdict: str, policy: EgressPolicy) -> dict[str, list[str]]:
    """Set name → its `"veth" . range` elements for one verdict ("allow" or "deny")."""
    networks = policy.allow if verdict == "allow" else policy.deny
    out: dict[str, list[str]] = {}
    for n in networks:
        out.setdefault(f"r{verdict}{n.version}", []).append(f'"{veth}" . {n}')
    return out


def _changes(verb: str, veth: str, policy: EgressPolicy) -> list[str]:
    lines = []
    for verdict in ("allow", "deny"):
        for name, elements in _elements(veth, verdict, policy).items():
            lines.append(f"{verb} element {TABLE} {name} {{ {', '.join(elements)} }}")
    return lines


def _removal(veth: str, policy: EgressPolicy) -> list[str]:
    """Take `policy`'s elements out whether or not they are all still there (add, then delete: a delete of a
    missing element would fail the whole transaction, and another server on the host may have removed some)."""
    return _changes("add", veth, policy) + _changes("delete", veth, policy)


class EgressRules:
    """The rules loaded per veth: the node's one writer of the sets (a lock serialises changes)."""

    def __init__(self) -> None:
        self._current: dict[str, EgressPolicy] = {}
        self._lock = asyncio.Lock()

    def current(self, veth: str) -> EgressPolicy:
        return self._current.get(veth, EgressPolicy())

    async def load(self) -> None:
        """Read back the rules of sandboxes that outlived the server (after `network.prepare_host`)."""
        found: dict[str, tuple[list[Network], list[Network]]] = {}
        for verdict in ("allow", "deny"):
            for v in (4, 6):
                out = await run("nft", "-j", "list", "set", *TABLE.split(), f"r{verdict}{v}", check=False)
                for veth, network in _parse_elements(out):
                    found.setdefault(veth, ([], []))[0 if verdict == "allow" else 1].append(network)
        async with self._lock:
            self._current = {veth: EgressPolicy(tuple(a), tuple(d)) for veth, (a, d) in found.items()}

    async def apply(self, veth: str, policy: EgressPolicy, sandbox_ip: str | None = None) -> None:
        """Replace `veth`'s rules by `policy` in one transaction; then cut its established connections that the
        new rules deny (`sandbox_ip`: its address as the host's conntrack sees it)."""
        async with self._lock:
            old = self._current.get(veth, EgressPolicy())
            lines = _removal(veth, old) + _changes("add", veth, policy)
            # internet-off is one of the deny rules now (see the module's docstring); add-then-delete so the
            # transaction holds whether or not the veth was in the set
            lines += [f'add element {SLOTS_TABLE} no_internet {{ "{veth}" }}',
                      f'delete element {SLOTS_TABLE} no_internet {{ "{veth}" }}']
            await run("nft", "-f", "-", input="\n".join(lines) + "\n")
            if policy.empty:
                self._current.pop(veth, None)
            else:
                self._current[veth] = policy
        if sandbox_ip is not None:
            await cut_denied(sandbox_ip, policy)

    async def clear(self, veth: str) -> None:
        """Remove `veth`'s rules (its slot is being freed); nothing to do for a veth without any."""
        async with self._lock:
            old = self._current.pop(veth, None)
            if old is None or old.empty:
                return
            try:
                await run("nft", "-f", "-", input="\n".join(_removal(veth, old)) + "\n")
            except Exception:  # noqa: BLE001 — logged: a slot left with rules would hand them to its next sandbox
                log.exception("removing the egress rules of %s failed", veth)
                self._current[veth] = old
                raise


def _parse_elements(listing: str) -> list[tuple[str, Network]]:
    """`nft -j list set` output → (veth, range) pairs."""
    try:
        document = json.loads(listing)
    except ValueError:
        return []
    pairs: list[tuple[str, Network]] = []
    for item in document.get("nftables", []):
        for elem in item.get("set", {}).get("elem", []):
            concat = elem.get("concat") if isinstance(elem, dict) else None
            if not concat or len(concat) != 2:
                continue
            veth, value = concat
            if isinstance(value, dict) and "prefix" in value:
                network = ipaddress.ip_network(f"{value['prefix']['addr']}/{value['prefix']['len']}")
            elif isinstance(value, dict) and "range" in value:
                first, last = (ipaddress.ip_address(a) for a in value["range"])
                pairs += [(veth, n) for n in ipaddress.summarize_address_range(first, last)]
                continue
            else:
                network = ipaddress.ip_network(str(value))
            pairs.append((veth, network))
    return pairs


async def cut_denied(sandbox_ip: str, policy: EgressPolicy) -> None:
    """Delete the conntrack entries of `sandbox_ip`'s connections to destinations `policy` now denies, so they
    end at once rather than hang on dropped packets. Connections it still allows are left alone."""
    if policy.empty:
        return
    out = await run("conntrack", "-L", "-s", sandbox_ip, "-o", "extended", check=False)
    for line in out.splitlines():
        fields: dict[str, str] = {}
        for key, _, value in (f.partition("=") for f in line.split() if "=" in f):
            fields.setdefault(key, value)  # the original direction's; the reply's come second
        destination = fields.get("dst")
        if not destination or policy.allows(destination):
            continue
        args = ["conntrack", "-D", "-s", sandbox_ip, "-d", destination]
        parts = line.split()
        if len(parts) > 2 and parts[2] in ("tcp", "udp"):
            args += ["-p", parts[2]]
            if "sport" in fields and "dport" in fields:
                args += ["--sport", fields["sport"], "--dport", fields["dport"]]
        await run(*args, check=False)


RULES = EgressRules()  # the node's one writer (a module-level singleton, like the host's one firewall)
