"""What each sandbox reached, or tried to (issue 16's egress audit): a bounded log per sandbox.

Two feeds, both host-wide and readable by every server on the host (several may share one, as the tests do):
- Allowed connections come from the kernel's connection tracking events (`conntrack -E`): a connection is
  logged when it starts (NEW) and completed with its byte counts when it ends (DESTROY; `nf_conntrack_acct`
  is turned on for that). Only connections that sandboxes open are kept (source in the slots' subnet).
- Connections redirected to the egress filter (domain rules) are left to it: it records each with the name it
  saw, its verdict and, once it ends, its bytes (node/egress_filter.py, through `Node.record_egress`).
- Denied ones never become connections, so the firewall's drop rules record each attempt's
  `source . destination . protocol . port` in timed sets (`denied4`/`denied6`, node/egress.py and the
  slots' table), which `DeniedFeed` reads every POLL_SECONDS; an attempt retried within a set element's life
  (SYN retransmits) is one entry.

A source address names its slot (`Slot`), and the slot's claim file names the sandbox (`SlotAllocator`), so
entries are filed under sandbox ids as they arrive. A sandbox's log is dropped when it is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .hostcmd import run

log = logging.getLogger(__name__)

MAX_ENTRIES = 1000  # per sandbox; the oldest go first
POLL_SECONDS = 2.0
DENIED_SETS = ("denied4", "denied6")


@dataclass
class EgressEntry:
    """One connection (or denied attempt) of a sandbox."""

    time: float  # unix seconds, when it started (or was first seen denied)
    protocol: str  # tcp | udp | icmp | ...
    destination: str
    port: int | None
    verdict: str  # allowed | denied
    domain: str | None = None  # the Host/SNI name, when the egress filter saw one
    bytes_out: int | None = None  # set when an allowed connection has ended
    bytes_in: int | None = None
    ended: float | None = None
    reason: str | None = None  # why the egress filter refused it, when the verdict alone does not say
    source_port: int | None = None  # the sandbox's port: with the destination, names the connection

    def to_json(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if v is not None}


FlowKey = tuple[str, int | None, str, int | None]  # sandbox, its port, destination, destination port
MAX_PAIRING = 4096  # connections waiting for their other record (see `EgressLog.add`)


@dataclass
class EgressLog:
    """The entries of every sandbox on this node, and how many attempts were denied (for metrics).

    A connection judged by name in place (node/egress_queue.py) is seen twice: by the conntrack feed when it
    opens (and again when it ends, with its bytes), and by the judge when it decides (with the name and the
    verdict). Both records name the connection by its ports, so whichever comes second completes the first:
    one entry per connection, with its name, verdict and bytes. A connection whose other record never comes
    (one that is not judged) is forgotten from the pairing table after MAX_PAIRING newer ones."""

    max_entries: int = MAX_ENTRIES
    denied_total: int = 0
    _entries: dict[str, deque[EgressEntry]] = field(default_factory=dict)
    _pairing: OrderedDict[FlowKey, EgressEntry] = field(default_factory=OrderedDict)

    def add(self, sandbox_id: str, entry: EgressEntry) -> EgressEntry:
        """File `entry`, or complete the earlier record of the same connection with it; the entry kept."""
        key = (sandbox_id, entry.source_port, entry.destination, entry.port) if entry.source_port else None
        earlier = self._pairing.pop(key, None) if key is not None else None
        if earlier is not None:
            if entry.domain is not None:  # the judge's decision completes what conntrack saw open
                if entry.verdict == "denied" and earlier.verdict != "denied":
                    self.denied_total += 1
                earlier.domain, earlier.verdict, earlier.reason = entry.domain, entry.verdict, entry.reason
            return earlier
        self._entries.setdefault(sandbox_id, deque(maxlen=self.max_entries)).append(entry)
        if entry.verdict == "denied":
            self.denied_total += 1
        if key is not None:
            self._pairing[key] = entry
            while len(self._pairing) > MAX_PAIRING:
                self._pairing.popitem(last=False)
        return entry

    def entries(self, sandbox_id: str) -> list[EgressEntry]:
        return list(self._entries.get(sandbox_id, ()))

    def forget(self, sandbox_id: str) -> None:
        self._entries.pop(sandbox_id, None)


class SandboxOf:
    """Source address → the sandbox whose slot holds it (read from the slot's claim file). Only the sandbox's own
    address of a slot's /30 (.2, node/network.py `Slot`) names it: the host's end (.1) is where the node itself
    connects from, to envd and to the sandbox's ports, and those connections are not the sandbox's egress."""

    def __init__(self, subnet: ipaddress.IPv4Network, slots_dir: Path) -> None:
        self.subnet = subnet
        self.slots_dir = slots_dir

    def __call__(self, address: str) -> str | None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        if ip not in self.subnet:
            return None
        index, host = divmod(int(ip) - int(self.subnet.network_address), 4)
        if host != 2:
            return None
        try:
            return (self.slots_dir / str(index)).read_text().strip() or None
        except OSError:
            return None


def parse_conntrack_event(line: str) -> tuple[str, dict[str, str], str] | None:
    """`conntrack -E -o extended,id` line → (event, original-direction fields plus "proto" and the reply
    direction's byte count as "reply_bytes", id); None for anything else."""
    parts = line.split()
    if len(parts) < 5 or not parts[0].startswith("[") or not parts[0].endswith("]"):
        return None
    event = parts[0].strip("[]")  # then: family, its number, protocol, its number, (timeout, state,) fields
    fields: dict[str, str] = {"proto": parts[3]}
    seen_src = 0
    for token in parts[4:]:
        key, sep, value = token.partition("=")
        if not sep:
            continue
        if key == "src":
            seen_src += 1
        if key == "id":
            fields["id"] = value
        elif seen_src >= 2:  # the reply direction
            if key == "bytes":
                fields["reply_bytes"] = value
            elif key == "src":
                fields.setdefault("reply_src", value)
        else:
            fields.setdefault(key, value)
    return event, fields, fields.get("id", "")


def _port(fields: dict[str, str], name: str = "dport") -> int | None:
    with contextlib.suppress(KeyError, ValueError):
        return int(fields[name])
    return None


class ConntrackFeed:
    """Allowed connections, from `conntrack -E` (a subprocess for the node's life)."""

    def __init__(self, egress_log: EgressLog, sandbox_of: SandboxOf) -> None:
        self.log = egress_log
        self.sandbox_of = sandbox_of
        self._open: dict[str, tuple[str, EgressEntry]] = {}  # conntrack id → (sandbox, entry)

    async def run(self) -> None:
        with contextlib.suppress(OSError):  # byte counts on DESTROY
            await asyncio.to_thread(Path("/proc/sys/net/netfilter/nf_conntrack_acct").write_text, "1\n")
        proc = await asyncio.create_subprocess_exec(
            "conntrack", "-E", "-e", "NEW,DESTROY", "-o", "extended,id", "-b", str(8 * 1024 * 1024),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        try:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                self.take(raw.decode(errors="replace"))
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def take(self, line: str) -> None:
        parsed = parse_conntrack_event(line)
        if parsed is None:
            return
        event, fields, conn_id = parsed
        if event == "NEW":
            sandbox_id = self.sandbox_of(fields.get("src", ""))
            if sandbox_id is None:
                return
            if fields.get("reply_src", fields.get("dst")) != fields.get("dst"):
                return  # redirected to the egress filter, which records it with its name and verdict
            entry = EgressEntry(time.time(), fields["proto"], fields.get("dst", ""), _port(fields), "allowed",
                                source_port=_port(fields, "sport"))
            entry = self.log.add(sandbox_id, entry)  # the judge's entry, if it decided first
            if conn_id:
                self._open[conn_id] = (sandbox_id, entry)
        elif event == "DESTROY":
            found = self._open.pop(conn_id, None)
            if found is None:
                return
            _, entry = found
            entry.ended = time.time()
            with contextlib.suppress(KeyError, ValueError):
                entry.bytes_out = int(fields["bytes"])
            with contextlib.suppress(KeyError, ValueError):
                entry.bytes_in = int(fields["reply_bytes"])
        if len(self._open) > 65536:  # events lost (buffer overrun): never grow without bound
            self._open.clear()


Element = tuple[str, str, str, str]  # source, destination, protocol, port: one place a sandbox was denied
Forget = Callable[[str, Collection[Element]], Awaitable[None]]  # node/egress.py `forget_denied`


class DeniedFeed:
    """Denied attempts, from the drop rules' timed sets (read every POLL_SECONDS)."""

    def __init__(self, egress_log: EgressLog, sandbox_of: SandboxOf) -> None:
        self.log = egress_log
        self.sandbox_of = sandbox_of
        self._seen: dict[Element, float] = {}  # element → when last seen
        self._lock = asyncio.Lock()  # a listing is taken whole before `settle` changes the sets, never across it

    async def run(self) -> None:
        while True:
            try:
                async with self._lock:
                    self.take(await run("nft", "-j", "list", "sets", check=False))
            except Exception:  # noqa: BLE001 — the audit must not take the node down; said once per failure
                log.exception("reading the denied egress attempts failed")
            await asyncio.sleep(POLL_SECONDS)

    def take(self, listing: str) -> None:
        now = time.time()
        current = set(denied_elements(listing))
        for element in current - self._seen.keys():
            source, destination, protocol, port = element
            sandbox_id = self.sandbox_of(source)
            if sandbox_id is not None:
                self.log.add(sandbox_id, EgressEntry(now, protocol, destination, int(port) if port else None,
                                                     "denied"))
        self._seen = {element: now for element in current}  # an element that expired and comes back is new

    async def settle(self, source: str, forget: Forget) -> None:
        """The sandbox at `source` has new rules: file its attempts recorded so far, then take them out of the
        sets (`forget`), so that its next attempt to a place it was denied before is filed as the new attempt
        it is. (An element lives a minute, and one still there would hide it: a denial after an
        `update_network` looked like the one before it.)"""
        async with self._lock:
            self.take(await run("nft", "-j", "list", "sets", check=False))
            filed = [element for element in self._seen if element[0] == source]
            if filed:  # a sandbox just created has none: one listing is all it costs
                await forget(source, filed)
            for element in filed:
                self._seen.pop(element, None)


def denied_elements(listing: str) -> Iterator[Element]:
    """(source, destination, protocol, port) of every element of the denied sets in `nft -j list sets` output."""
    try:
        document = json.loads(listing)
    except ValueError:
        return
    for item in document.get("nftables", []):
        found = item.get("set") if isinstance(item, dict) else None
        if not found or found.get("name") not in DENIED_SETS:
            continue
        for elem in found.get("elem", []):
            value = elem.get("elem", {}).get("val") if isinstance(elem, dict) and "elem" in elem else elem
            concat = value.get("concat") if isinstance(value, dict) else None
            if concat and len(concat) == 4:
                yield str(concat[0]), str(concat[1]), str(concat[2]), str(concat[3])


class EgressAudit:
    """Both feeds, as tasks for the node's life (`start`/`stop`)."""

    def __init__(self, egress_log: EgressLog, sandbox_of: SandboxOf) -> None:
        self.denied = DeniedFeed(egress_log, sandbox_of)
        self.feeds = (ConntrackFeed(egress_log, sandbox_of), self.denied)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(feed.run()) for feed in self.feeds]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
