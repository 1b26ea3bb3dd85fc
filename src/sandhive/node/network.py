"""Per-sandbox networking: a network namespace behind a veth pair, NAT out, and a host firewall.

Slot N owns 10.211.0.0/16's N-th /30: the host side of the veth is .1 of it, the sandbox side .2. The
sandbox also holds the guest address 169.254.0.21 (the same in every sandbox, so clones need no
re-addressing). The host firewall (`table inet sandhive`) drops sandbox-to-sandbox traffic and any
sandbox traffic to the host itself (the server's own ports), NATs the rest out when the sandbox has
internet access, and drops it when it does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from .hostcmd import HostCommandError, run
from .runtime import GUEST_ADDRESS

SUBNET = ipaddress.ip_network("10.211.0.0/16")
SLOTS = SUBNET.num_addresses // 4
VETH_PREFIX = "shv"
TABLE = "sandhive"
NETNS_DIR = Path("/run/netns")

FIREWALL = f"""
table inet {TABLE} {{
  set no_internet {{ type ifname; }}
  chain input {{
    type filter hook input priority 0; policy accept;
    iifname "{VETH_PREFIX}*" ct state established,related accept
    iifname "{VETH_PREFIX}*" drop
  }}
  chain forward {{
    type filter hook forward priority 0; policy accept;
    iifname "{VETH_PREFIX}*" oifname "{VETH_PREFIX}*" drop
    oifname "{VETH_PREFIX}*" ct state established,related accept
    oifname "{VETH_PREFIX}*" drop
    iifname @no_internet drop
    iifname "{VETH_PREFIX}*" ip daddr 169.254.0.0/16 drop
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
        raise RuntimeError("no free network slot: too many sandboxes on this host")

    def owned_by(self, sandbox_id: str) -> Slot | None:
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


async def prepare_host() -> None:
    """Once per server start: forwarding on, the firewall table (re)loaded."""
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    existing = await run("nft", "list", "tables", check=False)
    script = (f"delete table inet {TABLE}\n" if f"inet {TABLE}" in existing else "") + FIREWALL
    # Keep the no_internet memberships of sandboxes that survived a restart.
    members = await _no_internet_members() if f"inet {TABLE}" in existing else []
    await run("nft", "-f", "-", input=script)
    for member in members:
        await run("nft", "add", "element", "inet", TABLE, "no_internet", f"{{ {member} }}")


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
