"""A sandbox's own egress rules (E2B's `network.allowOut`/`denyOut`, `allow_internet_access`), in the kernel.

Four interval sets of `veth . address range` pairs in `table inet sandhive_egress` (declared and matched by
`network.egress_script`): `rallow4/6` accept, `rdeny4/6` drop, judged after the DNS path and before the
operator's `--egress-allow` and the default blocked ranges. So, as in E2B, allow beats deny; an allowed range
is reachable even if it is private (issue 8's default drop no longer applies to it); a denied one is dropped
even if the operator allowed it. Everything a rule lets through keeps the kernel's NAT fast path.

A sandbox with rules expresses "no internet" as denying `0.0.0.0/0` and `::/0` (so that its allowed ranges
beat it), not through the slots' `no_internet` set, which `apply` takes its veth out of.

Domain rules (`allowOut: ["example.com", "*.example.com"]`) cannot be judged by address: for a sandbox that has
them, its new TCP connections to ports 80 and 443 that its ranges deny (in `rdeny4`, not in `rallow4`) are
redirected (`chain domains`, nat prerouting) to the node's egress filter (node/egress_filter.py), which reads
the HTTP Host header or TLS SNI and lets through only the names the rules allow. The map `dfilter4` holds
`veth . sandbox address : filter port` for exactly those sandboxes; everything else stays in the kernel.

Judged in place (node/egress_judge.py, node/egress_queue.py), when the node's netfilter queue is up: a sandbox
with domain rules and no header rules is in the set `dqueue` instead of `dfilter4`. Its new connections to ports
80/443 that its ranges deny go to their real destination; the chain `judge` marks their packets for the node's
queue (`dqmark`: veth → the queue's mark) until a verdict is in the connection's conntrack mark (ALLOWED_MARK:
the forward chain accepts it, as fast as any NAT connection; DENIED_MARK: reset). The chain `verdict`, after
the queue, writes the judge's packet mark into the conntrack mark.

Header rules (`rules: {"api.example.com": [{"transform": {"headers": ...}}]}`, node/header_rules.py) need the
filter to see every HTTP request such a sandbox sends, whatever address it goes to: a sandbox with them is in
the set `druled`, and all its new TCP connections to ports 80 and 443 are redirected, not only the denied ones.

The sets outlive the server (a restart keeps surviving sandboxes' rules): `load` reads them back at start (the
domain names from files under /run/sandhive/egress-domains, which the kernel has no place for), and `clear` —
called whenever a slot's network is destroyed — removes a slot's rules before the slot is reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .egress_audit import denied_elements
from .header_rules import HeaderRules, rule_domains
from .hostcmd import run
from .sniff import host_name

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
TABLE = "inet sandhive_egress"
SLOTS_TABLE = "inet sandhive"
EVERYWHERE = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
FILTERED_PORTS = (80, 443)  # HTTP and HTTPS: where a Host header or an SNI names the destination
DOMAINS_DIR = Path("/run/sandhive/egress-domains")
MAX_DOMAIN = 253
ALLOWED_MARK = 0x53000001  # a connection the judge let through (its conntrack mark)
DENIED_MARK = 0x53000002
QUEUE_MARKS = 0x53480000  # | queue number: a packet on its way to that judge's queue (mask 0xffff0000)


def set_declarations() -> list[str]:
    return [f"add set {TABLE} r{verdict}{v} {{ type ifname . ipv{v}_addr; flags interval; }}"
            for verdict in ("allow", "deny") for v in (4, 6)] + denied_declarations(TABLE) + [
        f"add map {TABLE} dfilter4 {{ type ifname . ipv4_addr : inet_service; }}",
        f"add set {TABLE} druled {{ type ifname; }}",
        f"add set {TABLE} dqueue {{ type ifname; }}",
        f"add map {TABLE} dqmark {{ type ifname : mark; }}"]


# What one sandbox may record of its denied attempts: RECORD_BURST at once, then RECORD_RATE a second (each
# packet counts, SYN retransmits too). The `denied` sets are host-wide and bounded (65536 elements living 60 s):
# without a share per source, one sandbox's port scan filled them and every other sandbox's denials went
# unrecorded for a minute. With it, one source holds at most about RECORD_BURST + 60 × RECORD_RATE elements.
RECORD_RATE = 10
RECORD_BURST = 256


def denied_declarations(table: str) -> list[str]:
    """The timed sets each drop rule records its attempts in (`source . destination . protocol . port`), which
    the egress audit reads (node/egress_audit.py): an attempt retried within a minute is one element. And
    `recorders4/6`: each recording source's share (RECORD_RATE), a limit per element."""
    return [f"add set {table} denied{v} {{ type ipv{v}_addr . ipv{v}_addr . inet_proto . inet_service; "
            f"flags dynamic,timeout; timeout 60s; size 65536; }}" for v in (4, 6)] + [
        f"add set {table} recorders{v} {{ type ipv{v}_addr; flags dynamic,timeout; timeout 60s; size 65536; }}"
        for v in (4, 6)]


def record_denied(version: int) -> str:
    """The statements that record a TCP/UDP attempt in `denied4/6`, within its source's share (RECORD_RATE):
    past it, the rule stops before the record (the drop after it still drops)."""
    family = "ip" if version == 4 else "ip6"
    return (f"meta l4proto {{ tcp, udp }} update @recorders{version} "
            f"{{ {family} saddr limit rate {RECORD_RATE}/second burst {RECORD_BURST} packets }} "
            f"add @denied{version} {{ {family} saddr . {family} daddr . meta l4proto . th dport }}")


def recorded_drop(rule: str, match: str, version: int) -> list[str]:
    """`match` dropped, its TCP/UDP attempts recorded for the audit first (a full set, or a source past its
    share, only skips the record)."""
    return [f"{rule} {match} {record_denied(version)}", f"{rule} {match} drop"]


# The one way into the host from a sandbox besides DNS: a connection this table's `domains` chain redirected
# to the egress filter (a DNAT no sandbox can forge). Part of `table inet sandhive`'s input chain.
REDIRECT_ACCEPT = ('iifname "shv*" meta l4proto tcp ct status dnat ct original proto-dst { '
                   + ", ".join(str(p) for p in FILTERED_PORTS) + " } accept")


async def ensure_redirect_accepted() -> None:
    """Put REDIRECT_ACCEPT back in front of the input chain's drop if the slots' table was reloaded without it
    (by a server of an older version on the same host, which knows no filter): else every filtered connection
    would be dropped on its way to the filter."""
    listing = await run("nft", "list", "chain", *SLOTS_TABLE.split(), "input", check=False)
    if listing and "ct status dnat" not in listing:
        await run("nft", "insert", "rule", *SLOTS_TABLE.split(), "input", *REDIRECT_ACCEPT.split(), check=False)


def redirect_lines(table: str) -> list[str]:
    """`chain domains` (nat prerouting): a sandbox with domain rules has its new connections to ports 80/443 that
    its ranges deny sent to its server's egress filter (the map's port), and `chain ruled` sends all of them for
    one with header rules (`druled`); the source must be the veth's own sandbox address. The input chain of
    `table inet sandhive` accepts exactly these (`ct status dnat`)."""
    rule = f"add rule {table} domains"
    ports = ", ".join(str(p) for p in FILTERED_PORTS)
    return [f"add chain {table} domains {{ type nat hook prerouting priority dstnat; policy accept; }}",
            f"flush chain {table} domains",
            f'{rule} iifname != "shv*" return',
            f"{rule} meta l4proto != tcp return",
            f"{rule} tcp dport != {{ {ports} }} return",
            f"{rule} iifname . ip daddr @rallow4 return",
            f"{rule} iifname . ip daddr != @rdeny4 return",
            f"{rule} meta l4proto tcp redirect to : iifname . ip saddr map @dfilter4",
            # header rules: a chain of its own, just before `domains` (the first NAT decision stands), which a
            # server of an older version on the same host, rewriting `domains`, leaves alone
            f"add chain {table} ruled {{ type nat hook prerouting priority -101; policy accept; }}",
            f"flush chain {table} ruled",
            f'add rule {table} ruled iifname @druled tcp dport {{ {ports} }} '
            f"redirect to : iifname . ip saddr map @dfilter4"]


def judged_lines() -> list[str]:
    """The forward chain's first rules: a connection the judge allowed, and a packet on its way to the judge's
    queue, pass the denied ranges (the judge, not the range, decides them)."""
    return [f"ct mark {ALLOWED_MARK:#x} accept", f"meta mark & 0xffff0000 == {QUEUE_MARKS:#x} accept"]


def judge_lines(table: str) -> list[str]:
    """`chain judge` (before the forward chain) and `chain verdict` (after the judge's queue, which xtables'
    NFQUEUE feeds at priority 0: see node/egress_queue.py)."""
    rule = f"add rule {table} judge"
    ports = ", ".join(str(p) for p in FILTERED_PORTS)
    verdict = f"add rule {table} verdict"
    return [f"add chain {table} judge {{ type filter hook forward priority -20; policy accept; }}",
            f"flush chain {table} judge",
            f'{rule} iifname != "shv*" return',
            f"{rule} meta l4proto != tcp return",
            f"{rule} ct mark {DENIED_MARK:#x} reject with tcp reset",
            f"{rule} ct mark {ALLOWED_MARK:#x} return",
            f"{rule} iifname != @dqueue return",
            f"{rule} tcp dport != {{ {ports} }} return",
            f"{rule} iifname . ip daddr @rallow4 return",
            f"{rule} iifname . ip daddr != @rdeny4 return",
            f"{rule} meta mark set iifname map @dqmark",
            f"add chain {table} verdict {{ type filter hook forward priority 10; policy accept; }}",
            f"flush chain {table} verdict",
            f"{verdict} meta mark {ALLOWED_MARK:#x} ct mark set {ALLOWED_MARK:#x} meta mark set 0 accept",
            f"{verdict} meta mark {DENIED_MARK:#x} ct mark set {DENIED_MARK:#x} meta mark set 0 "
            "reject with tcp reset",
            f"{verdict} meta mark & 0xffff0000 == {QUEUE_MARKS:#x} meta mark set 0"]


async def ensure_judged_accepted() -> None:
    """Put `judged_lines` back at the top of the forward chain if a server of an older version reloaded it
    without them (else every judged connection would be dropped by its denied ranges)."""
    listing = await run("nft", "list", "chain", *TABLE.split(), "forward", check=False)
    if listing and f"{QUEUE_MARKS:#x}" not in listing:
        for line in reversed(judged_lines()):
            await run("nft", "insert", "rule", *TABLE.split(), "forward", *line.split(), check=False)


def rule_lines(rule: str) -> list[str]:
    """The forward-chain rules that judge by the sets (`rule` is `add rule <table> forward`)."""
    return [f"{rule} iifname . ip daddr @rallow4 accept", f"{rule} iifname . ip6 daddr @rallow6 accept",
            *recorded_drop(rule, "iifname . ip daddr @rdeny4", 4),
            *recorded_drop(rule, "iifname . ip6 daddr @rdeny6", 6)]


@dataclass(frozen=True)
class EgressPolicy:
    """What one sandbox may reach beyond the defaults: ranges allowed (beating denies and the default drops),
    ranges denied, and domain names allowed (`name`, `*.suffix` or `*`; lower-case), which beat the denies for
    HTTP and HTTPS connections that name them; and header rules, which the filter puts into the plain-HTTP
    requests of the domains they name."""

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    domains: tuple[str, ...] = ()
    rules: HeaderRules = ()

    @classmethod
    def of(cls, allow_out: Iterable[str] = (), deny_out: Iterable[str] = (), internet: bool = True,
           rules: HeaderRules = ()) -> EgressPolicy:
        """From E2B's fields (CIDRs, bare addresses, and in allow_out domain names; ValueError names a bad one)."""
        deny = [*_networks(deny_out), *(() if internet else EVERYWHERE)]
        ranges: list[str] = []
        domains: list[str] = []
        for value in allow_out:
            pattern = domain_pattern(str(value))
            if pattern is None:
                ranges.append(value)
            elif pattern not in domains:
                domains.append(pattern)
        return cls(tuple(_collapse(_networks(ranges))), tuple(_collapse(deny)), tuple(domains), rules)

    @property
    def empty(self) -> bool:
        return not self.allow and not self.deny and not self.domains and not self.rules

    @property
    def filtered(self) -> bool:
        """Whether some of this sandbox's connections go through the egress filter."""
        return bool(self.domains or self.rules)

    def allows(self, address: str) -> bool:
        """Whether this policy lets a new connection to `address` through (the defaults aside)."""
        ip = ipaddress.ip_address(address)
        if any(ip in n for n in self.allow if n.version == ip.version):
            return True
        return not any(ip in n for n in self.deny if n.version == ip.version)

    def to_json(self) -> dict[str, list[str]]:
        return {"allow": [str(n) for n in self.allow], "deny": [str(n) for n in self.deny],
                "domains": list(self.domains), "rules": list(rule_domains(self.rules))}  # names, never values


def domain_pattern(value: str) -> str | None:
    """`value` as a domain rule (lower-case, no trailing dot), or None when it is not one (an address or range,
    or not a name at all). `*` alone allows every name, `*.example.com` every name below example.com."""
    text = value.strip().lower()
    if text == "*":
        return text
    with contextlib.suppress(ValueError):
        ipaddress.ip_network(text, strict=False)
        return None
    suffix = text[2:] if text.startswith("*.") else text
    name = host_name(suffix)
    if name is None or len(text) > MAX_DOMAIN:
        return None
    return f"*.{name}" if text.startswith("*.") else name


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
    """The rules loaded per veth: the node's one writer of the sets (a lock serialises changes). `filter_port` is
    where this server's egress filter listens (None: no filter runs, and connections that only a domain rule
    would allow stay dropped); `listeners` hear of every change (the filter re-judges its open connections)."""

    def __init__(self, domains_dir: Path = DOMAINS_DIR) -> None:
        self._current: dict[str, EgressPolicy] = {}
        self._ports: dict[str, tuple[str, int]] = {}  # veth → (sandbox address, filter port) in dfilter4
        self._marks: dict[str, int] = {}  # veth → queue mark in dqmark
        self._lock = asyncio.Lock()
        self.domains_dir = domains_dir
        self.filter_port: int | None = None
        self.queue_mark: int | None = None  # this server's judge's queue (None: judged by the filter instead)
        self.listeners: list[Callable[[str, EgressPolicy], None]] = []

    def current(self, veth: str) -> EgressPolicy:
        return self._current.get(veth, EgressPolicy())

    def redirected(self) -> bool:
        """Whether any sandbox's connections are redirected to a filter now."""
        return bool(self._ports)

    def queued(self) -> bool:
        """Whether any sandbox's connections are judged in place now."""
        return bool(self._marks)

    async def load(self) -> None:
        """Read back the rules of sandboxes that outlived the server (after `network.prepare_host`)."""
        found: dict[str, tuple[list[Network], list[Network]]] = {}
        for verdict in ("allow", "deny"):
            for v in (4, 6):
                out = await run("nft", "-j", "list", "set", *TABLE.split(), f"r{verdict}{v}", check=False)
                for veth, network in _parse_elements(out):
                    found.setdefault(veth, ([], []))[0 if verdict == "allow" else 1].append(network)
        ports = _parse_map(await run("nft", "-j", "list", "map", *TABLE.split(), "dfilter4", check=False))
        marks = _parse_marks(await run("nft", "-j", "list", "map", *TABLE.split(), "dqmark", check=False))
        named = await asyncio.to_thread(self._read_domains)
        for veth in named:
            found.setdefault(veth, ([], []))
        async with self._lock:
            self._current = {veth: EgressPolicy(tuple(a), tuple(d), *named.get(veth, ((), ())))
                             for veth, (a, d) in found.items()}
            self._ports = ports
            self._marks = marks

    async def adopt(self) -> None:
        """Point the surviving sandboxes' domain redirects and queue marks at this server's filter and judge
        (`filter_port`, `queue_mark`, now set) — those whose filter or judge is gone. Another live server's
        sandboxes stay with it (servers of tests share a host)."""
        async with self._lock:
            if self.filter_port is None:
                return
            listening, bound = _listening_ports(), bound_queues()
            lines = []
            for veth, (address, port) in list(self._ports.items()):
                if port != self.filter_port and port not in listening \
                        and self._current.get(veth, EgressPolicy()).filtered:
                    lines += [f'delete element {TABLE} dfilter4 {{ "{veth}" . {address} }}',
                              f'add element {TABLE} dfilter4 {{ "{veth}" . {address} : {self.filter_port} }}']
                    self._ports[veth] = (address, self.filter_port)
            if self.queue_mark is not None:
                for veth, mark in list(self._marks.items()):
                    if mark != self.queue_mark and mark & 0xFFFF not in bound:
                        lines += [f'delete element {TABLE} dqmark {{ "{veth}" }}',
                                  f'add element {TABLE} dqmark {{ "{veth}" : {self.queue_mark:#x} }}']
                        self._marks[veth] = self.queue_mark
            if lines:
                await run("nft", "-f", "-", input="\n".join(lines) + "\n", check=False)

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
            queued = bool(policy.domains) and not policy.rules and sandbox_ip is not None \
                and self.queue_mark is not None
            redirect = policy.filtered and not queued and sandbox_ip is not None and self.filter_port is not None
            if policy.filtered and not (redirect or queued):
                log.warning("sandbox on %s has domain or header rules but no egress filter runs: only its ranges "
                            "apply", veth)
            lines += [f'add element {TABLE} druled {{ "{veth}" }}', f'delete element {TABLE} druled {{ "{veth}" }}',
                      f'add element {TABLE} dqueue {{ "{veth}" }}', f'delete element {TABLE} dqueue {{ "{veth}" }}']
            if self._marks.pop(veth, None) is not None:  # its own transaction, like dfilter4's below
                await run("nft", "delete", "element", *TABLE.split(), "dqmark", f'{{ "{veth}" }}', check=False)
            if queued:
                assert self.queue_mark is not None
                lines += [f'add element {TABLE} dqueue {{ "{veth}" }}',
                          f'add element {TABLE} dqmark {{ "{veth}" : {self.queue_mark:#x} }}']
                self._marks[veth] = self.queue_mark
            if redirect and policy.rules:
                lines.append(f'add element {TABLE} druled {{ "{veth}" }}')
            await asyncio.to_thread(self._write_domains, veth, policy.domains, policy.rules)
            previous = self._ports.pop(veth, None)
            if previous is not None:  # its own transaction: deleting an element that is gone must not undo the rest
                await run("nft", "delete", "element", *TABLE.split(), "dfilter4",
                          f'{{ "{veth}" . {previous[0]} }}', check=False)
            if redirect:
                assert sandbox_ip is not None and self.filter_port is not None
                lines.append(f'add element {TABLE} dfilter4 {{ "{veth}" . {sandbox_ip} : {self.filter_port} }}')
                self._ports[veth] = (sandbox_ip, self.filter_port)
            await run("nft", "-f", "-", input="\n".join(lines) + "\n")
            if redirect:
                await ensure_redirect_accepted()
            if queued:
                await ensure_judged_accepted()
            if policy.empty:
                self._current.pop(veth, None)
            else:
                self._current[veth] = policy
        for listener in self.listeners:
            listener(veth, policy)
        if sandbox_ip is not None:
            await cut_denied(sandbox_ip, policy)

    async def clear(self, veth: str) -> None:
        """Remove `veth`'s rules (its slot is being freed); nothing to do for a veth without any."""
        async with self._lock:
            old = self._current.pop(veth, None)
            previous = self._ports.pop(veth, None)
            await asyncio.to_thread(self._write_domains, veth, (), ())
            await run("nft", "delete", "element", *TABLE.split(), "druled", f'{{ "{veth}" }}', check=False)
            await run("nft", "delete", "element", *TABLE.split(), "dqueue", f'{{ "{veth}" }}', check=False)
            if self._marks.pop(veth, None) is not None:
                await run("nft", "delete", "element", *TABLE.split(), "dqmark", f'{{ "{veth}" }}', check=False)
            if previous is not None:
                await run("nft", "delete", "element", *TABLE.split(), "dfilter4",
                          f'{{ "{veth}" . {previous[0]} }}', check=False)
            for listener in self.listeners:
                listener(veth, EgressPolicy())
            if old is None or old.empty:
                return
            try:
                await run("nft", "-f", "-", input="\n".join(_removal(veth, old)) + "\n")
            except Exception:  # noqa: BLE001 — logged: a slot left with rules would hand them to its next sandbox
                log.exception("removing the egress rules of %s failed", veth)
                self._current[veth] = old
                raise

    def _write_domains(self, veth: str, domains: Sequence[str], rules: HeaderRules) -> None:
        """Keep what the kernel has no place for: the domain names and the header rules (their values are
        secrets: the file is root's alone)."""
        path = self.domains_dir / veth
        if not domains and not rules:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        self.domains_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump({"domains": list(domains), "rules": [[p, [list(h) for h in hs]] for p, hs in rules]}, out)
        os.replace(temporary, path)

    def _read_domains(self) -> dict[str, tuple[tuple[str, ...], HeaderRules]]:
        found: dict[str, tuple[tuple[str, ...], HeaderRules]] = {}
        if not self.domains_dir.is_dir():
            return found
        for path in self.domains_dir.iterdir():
            with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
                saved = json.loads(path.read_text())
                if isinstance(saved, list):  # written by an earlier version: the domain names alone
                    saved = {"domains": saved}
                patterns = tuple(p for p in (domain_pattern(str(v)) for v in saved.get("domains", ())) if p)
                rules: HeaderRules = tuple((str(p), tuple((str(n), str(v)) for n, v in hs))
                                           for p, hs in saved.get("rules", ()))
                if (patterns or rules) and not path.name.endswith(".tmp"):
                    found[path.name] = (patterns, rules)
        return found


def _parse_map(listing: str) -> dict[str, tuple[str, int]]:
    """`nft -j list map dfilter4` output → veth → (sandbox address, filter port)."""
    try:
        document = json.loads(listing)
    except ValueError:
        return {}
    found: dict[str, tuple[str, int]] = {}
    for item in document.get("nftables", []):
        for elem in item.get("map", {}).get("elem", []):
            with contextlib.suppress(TypeError, ValueError, KeyError, IndexError):
                key, port = elem
                veth, address = key["concat"]
                found[str(veth)] = (str(ipaddress.IPv4Address(address)), int(port))
    return found


def _listening_ports() -> set[int]:
    """The TCP ports something listens on in this network namespace (/proc/net/tcp, state 0A)."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[3] == "0A":
                    with contextlib.suppress(ValueError, IndexError):
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def bound_queues() -> set[int]:
    """The netfilter queues some process holds (/proc/net/netfilter/nfnetlink_queue, first column)."""
    with contextlib.suppress(OSError):
        return {int(line.split()[0]) for line in
                Path("/proc/net/netfilter/nfnetlink_queue").read_text().splitlines() if line.split()}
    return set()


def _parse_marks(listing: str) -> dict[str, int]:
    """`nft -j list map dqmark` output → veth → queue mark."""
    try:
        document = json.loads(listing)
    except ValueError:
        return {}
    found: dict[str, int] = {}
    for item in document.get("nftables", []):
        for elem in item.get("map", {}).get("elem", []):
            with contextlib.suppress(TypeError, ValueError, KeyError, IndexError):
                veth, mark = elem
                found[str(veth)] = int(mark)
    return found


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


async def forget_denied(address: str, only: Collection[tuple[str, str, str, str]] | None = None) -> None:
    """Take `address`'s attempts (those in `only`, when given) out of the denied sets (the egress audit's record;
    a slot is being freed, or its rules changed). An element lives a minute and the audit files it when it first
    appears, so one left behind would hide the same attempt by the slot's next sandbox, or under its new rules.
    A slot being freed also loses its share of the record (`recorders4`): its next sandbox starts with a whole
    one, not what a port scan of the last left."""
    lines = []
    for table in (TABLE, SLOTS_TABLE):
        if only is None:
            lines.append(f"delete element {table} recorders4 {{ {address} }}")
        listing = await run("nft", "-j", "list", "set", *table.split(), "denied4", check=False)
        for element in denied_elements(listing):
            source, destination, protocol, port = element
            if source == address and (only is None or element in only):
                lines.append(f"delete element {table} denied4 {{ {source} . {destination} . {protocol} . {port} }}")
    for line in lines:  # one by one: an element that expired meanwhile must not undo the others
        await run("nft", *line.split(), check=False)


async def cut_denied(sandbox_ip: str, policy: EgressPolicy) -> None:
    """Delete the conntrack entries of `sandbox_ip`'s connections to destinations `policy` now denies, so they
    end at once rather than hang on dropped packets. Connections it still allows are left alone, and so are
    those the egress filter carries (it closes the ones whose name the new rules no longer allow)."""
    if policy.empty:
        return
    out = await run("conntrack", "-L", "-s", sandbox_ip, "-o", "extended", check=False)
    for line in out.splitlines():
        fields: dict[str, str] = {}
        sources: list[str] = []
        for key, _, value in (f.partition("=") for f in line.split() if "=" in f):
            fields.setdefault(key, value)  # the original direction's; the reply's come second
            if key == "src":
                sources.append(value)
        destination = fields.get("dst")
        if not destination or policy.allows(destination):
            continue
        if policy.domains and fields.get("mark") == str(ALLOWED_MARK):
            continue  # judged by name: the judge re-judges it (node/egress_queue.py)
        if len(sources) > 1 and sources[1] != destination:
            continue  # redirected to the egress filter, which re-judges its own connections
        args = ["conntrack", "-D", "-s", sandbox_ip, "-d", destination]
        parts = line.split()
        if len(parts) > 2 and parts[2] in ("tcp", "udp"):
            args += ["-p", parts[2]]
            if "sport" in fields and "dport" in fields:
                args += ["--sport", fields["sport"], "--dport", fields["dport"]]
        await run(*args, check=False)


RULES = EgressRules()  # the node's one writer (a module-level singleton, like the host's one firewall)
