"""Per-sandbox networking: a network namespace behind a veth pair, NAT out, and a host firewall.

Slot N owns 10.211.0.0/16's N-th /30: the host side of the veth is .1 of it, the sandbox side .2. The
sandbox also holds the guest address 169.254.0.21 (the same in every sandbox, so clones need no
re-addressing). The host firewall (`table inet sandhive`) drops sandbox-to-sandbox traffic and any
sandbox traffic to the host itself (every host address: the server's own ports, whatever interface they
sit on), NATs the rest out when the sandbox has internet access, and drops it when it does not. The one
exception on the host: a connection that `table inet sandhive_egress`'s `domains` chain redirected to the
node's egress filter (node/egress_filter.py) — a DNAT to ports 80/443 that no sandbox can forge.

Default egress (`table inet sandhive_egress`, see `egress_script`): a sandbox reaches the internet, not
the places around its host. Private, shared, link-local, loopback, multicast and reserved ranges (IPv4
and IPv6) and the host's own LAN are dropped, except one DNS path (udp/tcp 53 to the host's nameserver,
which is what the sandbox's /etc/resolv.conf names) and the ranges the operator allows
(`sandhive serve --egress-allow CIDR`). It is its own table so that reloading the policy never touches
the slots' NAT and `no_internet` memberships, and an accept in it cannot override a drop in the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import egress
from .admission import HostFull
from .hostcmd import HostCommandError, run
from .runtime import GUEST_ADDRESS

SUBNET = ipaddress.IPv4Network("10.211.0.0/16")
SLOTS = SUBNET.num_addresses // 4
VETH_PREFIX = "shv"
TABLE = "sandhive"
NETNS_DIR = Path("/run/netns")

EGRESS_TABLE = "sandhive_egress"

def _record(match: str) -> str:
    """The slots' table records what it drops for the egress audit, as node/egress.py's rules do (`denied4/6`)."""
    return f"{match} {egress.record_denied(4)}\n    {match} {egress.record_denied(6)}"


FIREWALL_CHAINS = ("input", "forward", "postrouting")  # FIREWALL's chains, flushed before it is loaded again
FIREWALL = f"""
table inet {TABLE} {{
  set no_internet {{ type ifname; }}
  chain input {{
    type filter hook input priority 0; policy accept;
    iifname "{VETH_PREFIX}*" ct state established,related accept
    {egress.REDIRECT_ACCEPT}
    {{dns_on_host}}
    {_record(f'iifname "{VETH_PREFIX}*"')}
    iifname "{VETH_PREFIX}*" drop
  }}
  chain forward {{
    type filter hook forward priority 0; policy accept;
    iifname "{VETH_PREFIX}*" oifname "{VETH_PREFIX}*" drop
    oifname "{VETH_PREFIX}*" ct state established,related accept
    oifname "{VETH_PREFIX}*" drop
    {_record("iifname @no_internet")}
    iifname @no_internet drop
    iifname "{VETH_PREFIX}*" accept
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    ip saddr {SUBNET} oifname != "{VETH_PREFIX}*" masquerade
  }}
}}
"""


@dataclass(frozen=True)
class Slot:
    index: int

    @property
    def host_ip(self) -> str:
        return str(SUBNET.network_address + 4 * self.index + 1)

    @property
    def sandbox_ip(self) -> str:
        return str(SUBNET.network_address + 4 * self.index + 2)

    @property
    def veth(self) -> str:
        return f"{VETH_PREFIX}{self.index}"


def netns_name(sandbox_id: str) -> str:
    return f"sandhive-{sandbox_id}"


HOST_SLOTS_DIR = Path("/run/sandhive/net-slots")


class SlotAllocator:
    """Claims slots with one file each (O_EXCL), so concurrent creates and restarts agree.

    Slots are a host-wide resource (veth names and addresses live in the host's namespace), so every
    server on the host shares one directory, whatever its data dir. It lives under /run: slots die with
    the network namespaces at reboot.
    """

    def __init__(self, slots_dir: Path = HOST_SLOTS_DIR) -> None:
        self.dir = slots_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self._next = 0

    def claim(self, sandbox_id: str) -> Slot:
        for step in range(SLOTS):
            index = (self._next + step) % SLOTS
            try:
                fd = os.open(self.dir / str(index), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as f:
                f.write(sandbox_id)
            self._next = index + 1
            return Slot(index)
        raise HostFull("no free network slot: too many sandboxes on this host; retry when some have ended")

    def reclaim(self, sandbox_id: str, index: int) -> tuple[Slot, bool]:
        """Slot `index` for `sandbox_id` once more, for a paused sandbox that resumes: (slot, True when this call
        claimed it). Kept when its file still names the sandbox; claimed again when it is free (a host reboot
        emptied /run); another free slot when a different sandbox took it meanwhile — the sandbox then comes
        back on another address and uid range (`userns.sandbox_range`), which the caller must follow. A sandbox
        that holds another slot already (an earlier attempt's, kept by a re-pause) gets that one back."""
        if self.owns(sandbox_id, Slot(index)):
            return Slot(index), False
        held = self.owned_by(sandbox_id)
        if held is not None:
            return held, False
        if self._take(sandbox_id, index):
            return Slot(index), True
        return self.claim(sandbox_id), True

    def hold(self, sandbox_id: str, index: int) -> bool:
        """Slot `index` for a paused sandbox at server start, before any other sandbox can claim one: True when
        the sandbox holds it now (it still did, or it was free — a host reboot emptied /run), False when
        another sandbox took it (its resume then gets another slot, through `reclaim`). Never claims another."""
        return self.owns(sandbox_id, Slot(index)) or self._take(sandbox_id, index)

    def _take(self, sandbox_id: str, index: int) -> bool:
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.dir / str(index), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(sandbox_id)
        return True

    def owns(self, sandbox_id: str, slot: Slot) -> bool:
        """Whether `slot`'s file names `sandbox_id` (after a host reboot it may name another sandbox, or none)."""
        try:
            return (self.dir / str(slot.index)).read_text() == sandbox_id
        except OSError:
            return False

    def owned_by(self, sandbox_id: str) -> Slot | None:
        if not self.dir.is_dir():  # /run emptied by a reboot since the server started
            return None
        for entry in self.dir.iterdir():
            with contextlib.suppress(OSError):
                if entry.read_text() == sandbox_id:
                    return Slot(int(entry.name))
        return None

    def release(self, slot: Slot) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir / str(slot.index)).unlink()


def host_nameservers() -> list[str]:
    """The host's IPv4 nameservers (never a public default: outside addresses may be unreachable)."""
    servers = []
    with contextlib.suppress(OSError), open("/etc/resolv.conf") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                with contextlib.suppress(ValueError):
                    if ipaddress.ip_address(parts[1]).version == 4:
                        servers.append(parts[1])
    return servers


# Where a sandbox must not go by default (IANA's special-purpose registries): its host's surroundings, not
# the internet. The host's own addresses never reach the forward path (the input chain drops them).
# The documentation and benchmarking ranges (TEST-NET-1/2/3, 198.18/15, 2001:db8::/32) are left out on purpose:
# the internet never routes them, so dropping them protects nothing, while closed networks do use them for
# the outside world (on these CI hosts pypi.org resolves to 203.0.113.80, and a drop broke every `pip install`).
# The host's own LAN is dropped separately (`host_networks`), whatever range it is in.
BLOCKED_V4 = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
)
BLOCKED_V6 = (
    "::/127", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "fc00::/7", "fe80::/10", "ff00::/8",
)
DNS_PORT = 53

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_egress_allow(values: Sequence[str]) -> list[Network]:
    """Operator-given CIDRs (`10.1.2.0/24`, `fd00::/64`, a bare address) as networks; ValueError names a bad one."""
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP network (CIDR): {value!r}") from None
    return networks


def host_networks() -> list[Network]:
    """The networks of the host's own interfaces (its LAN), sandbox veths left out."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, check=True).stdout
        links = json.loads(out)
    except (OSError, subprocess.CalledProcessError, ValueError):
        return []
    networks: list[Network] = []
    for link in links:
        if str(link.get("ifname", "")).startswith(VETH_PREFIX):
            continue
        for info in link.get("addr_info", []):
            with contextlib.suppress(KeyError, ValueError):
                networks.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
    return networks


def _elements(networks: Iterable[Network], version: int) -> str:
    """An nft interval-set element list; overlapping ranges collapsed (nft refuses overlaps)."""
    collapsed: Iterable[Network]
    if version == 4:
        collapsed = ipaddress.collapse_addresses(n for n in networks if isinstance(n, ipaddress.IPv4Network))
    else:
        collapsed = ipaddress.collapse_addresses(n for n in networks if isinstance(n, ipaddress.IPv6Network))
    return ", ".join(str(n) for n in collapsed)


def egress_script(nameservers: Sequence[str], allow: Sequence[Network] | None,
                  lan: Sequence[Network] = ()) -> str:
    """One nft transaction that (re)loads the egress policy in place. `allow` None keeps the allowed ranges
    already loaded (a template build's `prepare_host` must not undo the server's `--egress-allow`). The
    ranges granted with `allow_egress` (sets `grant4`/`grant6`) are never flushed here: a server starting
    on the same host replaces `--egress-allow`, not another caller's grant.

    Order in the forward chain: only sandbox-originated packets are judged; the one DNS path; each sandbox's
    own allowed and denied ranges (node/egress.py); the operator's allowed ranges; then the blocked ranges.
    Everything else (the internet) goes on to `table inet sandhive`.
    """
    t = f"inet {EGRESS_TABLE}"
    dns = [ipaddress.ip_address(a) for a in nameservers]
    blocked = [ipaddress.ip_network(n) for n in (*BLOCKED_V4, *BLOCKED_V6)] + list(lan)
    lines = [
        f"add table {t}",
        f"add set {t} allow4 {{ type ipv4_addr; flags interval; }}",
        f"add set {t} allow6 {{ type ipv6_addr; flags interval; }}",
        f"add set {t} grant4 {{ type ipv4_addr; flags interval; }}",  # `allow_egress`: never flushed here
        f"add set {t} grant6 {{ type ipv6_addr; flags interval; }}",
        f"add set {t} blocked4 {{ type ipv4_addr; flags interval; }}",
        f"add set {t} blocked6 {{ type ipv6_addr; flags interval; }}",
        f"add set {t} dns4 {{ type ipv4_addr; }}",
        f"add set {t} dns6 {{ type ipv6_addr; }}",
        *egress.set_declarations(),  # each sandbox's own rules: never flushed here (node/egress.py)
        f"add chain {t} forward {{ type filter hook forward priority -10; policy accept; }}",
        f"flush chain {t} forward",
    ]
    sets = {"blocked4": _elements(blocked, 4), "blocked6": _elements(blocked, 6),
            "dns4": ", ".join(str(a) for a in dns if a.version == 4),
            "dns6": ", ".join(str(a) for a in dns if a.version == 6)}
    if allow is not None:
        sets |= {"allow4": _elements(allow, 4), "allow6": _elements(allow, 6)}
    for name, elements in sets.items():
        lines.append(f"flush set {t} {name}")
        if elements:
            lines.append(f"add element {t} {name} {{ {elements} }}")
    rule = f"add rule {t} forward"
    lines += [
        f'{rule} iifname != "{VETH_PREFIX}*" accept',
        *(f"{rule} {line}" for line in egress.judged_lines()),
        f"{rule} ip daddr @dns4 meta l4proto {{ tcp, udp }} th dport {DNS_PORT} accept",
        f"{rule} ip6 daddr @dns6 meta l4proto {{ tcp, udp }} th dport {DNS_PORT} accept",
        *egress.rule_lines(rule),
        f"{rule} ip daddr @allow4 accept",
        f"{rule} ip6 daddr @allow6 accept",
        f"{rule} ip daddr @grant4 accept",
        f"{rule} ip6 daddr @grant6 accept",
        *egress.recorded_drop(rule, "ip daddr @blocked4", 4),
        *egress.recorded_drop(rule, "ip6 daddr @blocked6", 6),
        *egress.redirect_lines(t),  # after the sets it reads are declared
        *egress.judge_lines(t),
    ]
    return "\n".join(lines) + "\n"


def firewall_script(nameservers: Sequence[str]) -> str:
    """The slots' table. A nameserver on the host itself is the one host service a sandbox may reach."""
    dns = ""
    for version, family in ((4, "ip"), (6, "ip6")):
        addresses = [a for a in nameservers if ipaddress.ip_address(a).version == version]
        if addresses:
            dns += (f'iifname "{VETH_PREFIX}*" {family} daddr {{ {", ".join(addresses)} }} '
                    f"meta l4proto {{ tcp, udp }} th dport {DNS_PORT} accept\n    ")
    declarations = "\n".join([f"add table inet {TABLE}", *egress.denied_declarations(f"inet {TABLE}")])
    return declarations + "\n" + FIREWALL.replace("{dns_on_host}\n    ", dns)


async def prepare_host(egress_allow: Sequence[str] | None = None) -> None:
    """Once per server start (and before each template build): forwarding on, the firewall tables (re)loaded.

    `egress_allow` replaces the operator's allowed ranges; None keeps those loaded. The ranges are host-wide,
    like the firewall: the last server started on a host sets them.

    The reload is one nft transaction that flushes the slots' chains and adds their rules back, keeping every set's
    elements: the sandboxes cut off from the internet (`no_internet`) stay cut off throughout. (It used to delete
    the table and add the members back one by one after it, and every template build does this: in between, each
    sandbox created without internet, on any server of the host, could reach the internet.) Only a table whose sets
    an older version declared differently is still replaced, its members added back."""
    allow = parse_egress_allow(egress_allow) if egress_allow is not None else None
    await asyncio.to_thread(Path("/proc/sys/net/ipv4/ip_forward").write_text, "1\n")
    nameservers = host_nameservers()
    lan = await asyncio.to_thread(host_networks)
    rest = firewall_script(nameservers) + egress_script(nameservers, allow, lan)
    listing = await run("nft", "list", "table", "inet", TABLE, check=False)
    if not listing:
        await run("nft", "-f", "-", input=rest)
    else:
        flush = "".join(f"flush chain inet {TABLE} {chain}\n" for chain in FIREWALL_CHAINS
                        if f"chain {chain} {{" in listing)
        try:
            await run("nft", "-f", "-", input=flush + rest)
        except HostCommandError:
            members = await _no_internet_members()
            await run("nft", "-f", "-", input=f"delete table inet {TABLE}\n" + rest)
            for member in members:
                await run("nft", "add", "element", "inet", TABLE, "no_internet", f"{{ {member} }}")
    await egress.RULES.load()


async def allow_egress(cidrs: Sequence[str]) -> None:
    """Grant ranges on top of `--egress-allow` until `revoke_egress` takes them out again. For a host service
    the node's own callers need (e.g. a registry for template builds). Grants live in sets of their own
    (`grant4`/`grant6`): every server start replaces the `--egress-allow` set, and a grant kept there
    vanished whenever another server started on the host, leaving connections to the range dropped mid-way
    (a registry push or pull then hung without an error)."""
    await _change_granted("add", cidrs)


async def revoke_egress(cidrs: Sequence[str]) -> None:
    await _change_granted("delete", cidrs)


async def _change_granted(verb: str, cidrs: Sequence[str]) -> None:
    networks = parse_egress_allow(cidrs)
    lines = []
    for version in (4, 6):
        elements = _elements(networks, version)
        if elements:
            lines.append(f"{verb} element inet {EGRESS_TABLE} grant{version} {{ {elements} }}")
    if lines:  # taking away what is not there (any more) is fine
        await run("nft", "-f", "-", input="\n".join(lines) + "\n", check=verb == "add")


async def _no_internet_members() -> list[str]:
    out = await run("nft", "list", "set", "inet", TABLE, "no_internet", check=False)
    if "elements" not in out:
        return []
    inside = out.split("elements = {", 1)[1].split("}", 1)[0]
    return [name.strip().strip('"') for name in inside.split(",") if name.strip()]


async def create(sandbox_id: str, slot: Slot, internet: bool) -> None:
    """Namespace, veth pair, addresses, routes, and the internet switch. Undone by `destroy`."""
    await _create_namespace(sandbox_id, slot, [f"addr add {GUEST_ADDRESS}/32 dev eth0"])
    if not internet:
        await _cut_internet(slot)


async def _create_namespace(sandbox_id: str, slot: Slot, inside: list[str]) -> None:
    """The sandbox's namespace behind its veth pair (the host end at the slot's host address, `eth0` inside
    at its sandbox address, the default route through the host), plus `inside`: more `ip` commands run in
    the namespace once `eth0` is up (the guest address, or a VM's TAP)."""
    ns = netns_name(sandbox_id)
    if not (NETNS_DIR / ns).exists():  # else made by the OCI runtime and attached (`attach_namespace`)
        await run("ip", "netns", "add", ns)
    await run("ip", "-batch", "-", input="\n".join([
        f"link add {slot.veth} type veth peer name eth0 netns {ns}",
        f"addr add {slot.host_ip}/30 dev {slot.veth}",
        f"link set {slot.veth} up",
    ]) + "\n")
    await run("ip", "-n", ns, "-batch", "-", input="\n".join([
        "link set lo up",
        f"addr add {slot.sandbox_ip}/30 dev eth0",
        "link set eth0 up",
        f"route add default via {slot.host_ip}",
        *inside,
    ]) + "\n")


async def _cut_internet(slot: Slot) -> None:
    await run("nft", "add", "element", "inet", TABLE, "no_internet", f"{{ {slot.veth} }}")


async def destroy(sandbox_id: str, slot: Slot | None) -> None:
    """Remove what `create` made; each step tolerates it being gone already."""
    if slot is not None:
        await egress.RULES.clear(slot.veth)  # before the slot can go to another sandbox
        await egress.forget_denied(slot.sandbox_ip)  # else its next sandbox's same attempts look a minute old
        await run("nft", "delete", "element", "inet", TABLE, "no_internet", f"{{ {slot.veth} }}", check=False)
        await run("ip", "link", "del", slot.veth, check=False)
        if _has_conntrack():  # cut connections the sandbox still has open through the host's NAT
            await run("conntrack", "-D", "-s", slot.sandbox_ip, check=False)
    if (NETNS_DIR / netns_name(sandbox_id)).exists():
        try:
            await run("ip", "netns", "del", netns_name(sandbox_id))
        except HostCommandError:
            await asyncio.sleep(0.05)
            await run("ip", "netns", "del", netns_name(sandbox_id), check=False)


async def attach_namespace(sandbox_id: str, pid: int) -> None:
    """Name the network namespace of process `pid` as the sandbox's (a bind of /proc/PID/ns/net at
    /run/netns/<name>), so `create` wires it and everything else (`destroy`, restarts) finds it by name.

    For a namespace the OCI runtime made inside the sandbox's user namespace: that namespace owns it, so the
    sandbox can mount a sysfs of its own (one that shows its own interfaces, not the host's)."""
    await run("ip", "netns", "attach", netns_name(sandbox_id), str(pid))


def _has_conntrack() -> bool:
    return any(os.access(os.path.join(d, "conntrack"), os.X_OK) for d in ("/usr/sbin", "/sbin"))


def netns_path(sandbox_id: str) -> str:
    return str(NETNS_DIR / netns_name(sandbox_id))


def existing_sandbox_netns() -> set[str]:
    if not NETNS_DIR.is_dir():
        return set()
    prefix = netns_name("")
    return {p.name[len(prefix):] for p in NETNS_DIR.iterdir() if p.name.startswith(prefix)}


# ---- a VM guest behind a TAP (the microvm backend) ------------------------------------------------
# Inside the namespace the TAP plays the part the container's eth0 plays: the guest holds GUEST_ADDRESS
# (every guest the same, so snapshot clones need no re-addressing) on a /30 whose other end is the TAP.
# The namespace forwards what the host sends to the slot address on to the guest (DNAT, any port, so
# envd and user ports work as for containers) and masquerades the guest's own traffic as the slot
# address, so the host's firewall and NAT treat it like any sandbox's. The MACs are fixed for the same
# reason as the address: a clone restores the guest's neighbour cache from the template's snapshot.
VM_TAP = "tap0"
VM_TAP_ADDRESS = "169.254.0.22"
VM_PREFIX = 30
VM_TAP_MAC = "02:53:48:00:00:01"
VM_GUEST_MAC = "02:53:48:00:00:02"


async def create_for_vm(sandbox_id: str, slot: Slot, internet: bool) -> None:
    """Namespace, veth pair and internet switch as `create` makes them, plus the guest's TAP and NAT.
    Undone by `destroy` (deleting the namespace deletes the TAP and its rules)."""
    ns = netns_name(sandbox_id)
    await _create_namespace(sandbox_id, slot, [
        f"tuntap add dev {VM_TAP} mode tap",
        f"link set {VM_TAP} address {VM_TAP_MAC}",
        f"addr add {VM_TAP_ADDRESS}/{VM_PREFIX} dev {VM_TAP}",
        f"link set {VM_TAP} up",
    ])
    rules = f"""table ip sandhive_vm {{
  chain prerouting {{
    type nat hook prerouting priority dstnat;
    iifname "eth0" ip daddr {slot.sandbox_ip} dnat to {GUEST_ADDRESS};
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat;
    oifname "eth0" ip saddr {GUEST_ADDRESS} masquerade;
  }}
}}
"""
    await run("ip", "netns", "exec", ns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward && exec nft -f -",
              input=rules)
    if not internet:
        await _cut_internet(slot)


def slot_of(address: str) -> Slot | None:
    """The slot whose sandbox address `address` is."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return None
    if ip not in SUBNET:
        return None
    offset = int(ip) - int(SUBNET.network_address)
    return Slot(offset // 4) if offset % 4 == 2 else None
