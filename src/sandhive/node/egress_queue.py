"""The node's in-place judge for domain rules: a netfilter queue (node/nfqueue.py) feeding `egress_judge.Judge`,
whose verdicts go back to the kernel as packet marks that the firewall writes into conntrack marks (node/egress.py
`judge_lines`).

Why a queue and not the egress filter's relay: the relay terminates every allowed connection and moves its bytes
through a second one (63–65 % of plain NAT for a 100 MB download); judged in place, only a connection's first
segments leave the kernel, and the rest is plain NAT. The relay stays for header rules (which must rewrite the
requests) and wherever the queue cannot be set up (no xtables NFQUEUE, no iptables): `start` says so and the
rules fall back to redirecting to the filter.

The queue: xtables' NFQUEUE target (`iptables -j NFQUEUE`; nftables' own `queue` is missing from some kernels,
this host's among them) in the `filter` table's FORWARD chain, matching this judge's mark exactly (QUEUE_MARKS |
queue number). The number is picked free at start (another server on the host holds its own); a queue nobody
holds drops its packets, so a judge that died fails closed. `close` removes the rule.

A decision (`_decide`): the name must match a domain rule, resolve (the filter's resolver, cached), and the
connection's destination must be one of its addresses — the sandbox chose the address, so a name it claims for
some other address is refused (the relay, which dials for the sandbox, sends it to the name's address instead) —
and one the sandbox may reach (`EgressFilter.may_dial`). Every decision goes to the egress audit. When a
sandbox's rules change, its allowed connections whose name no longer matches get the denied mark (reset at
their next packet).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from typing import TYPE_CHECKING

from . import nfqueue
from .egress import ALLOWED_MARK, DENIED_MARK, QUEUE_MARKS, EgressPolicy, bound_queues
from .egress_audit import EgressEntry
from .egress_judge import Action, Flow, Judge
from .hostcmd import run
from .network import slot_of
from .resolve import ResolveError
from .sniff import Peek, matches

if TYPE_CHECKING:
    from .egress_filter import EgressFilter

log = logging.getLogger(__name__)

FIRST_QUEUE = 21000  # queue numbers tried: FIRST_QUEUE + (pid + i) % QUEUES
QUEUES = 4096
EXPIRE_SECONDS = 1.0


def rule_spec(number: int) -> list[str]:
    return ["FORWARD", "-m", "mark", "--mark", f"{QUEUE_MARKS | number:#x}", "-j", "NFQUEUE", "--queue-num",
            str(number)]


async def sweep(tool: str) -> None:
    """Delete the NFQUEUE rules of judges that are gone (killed before their `close`): a queue that nobody holds.
    A live judge binds its queue before it adds its rule, so its rule is never swept."""
    listing = await run(tool, "-w", "-S", "FORWARD", check=False)
    bound = bound_queues()
    for line in listing.splitlines():
        fields = line.split()
        if "NFQUEUE" not in fields or "--queue-num" not in fields or "--mark" not in fields:
            continue
        try:
            number = int(fields[fields.index("--queue-num") + 1])
            mark = int(fields[fields.index("--mark") + 1].split("/")[0], 16)
        except (ValueError, IndexError):
            continue
        if mark == QUEUE_MARKS | number and number not in bound:
            await run(tool, "-w", "-D", *rule_spec(number), check=False)


def iptables() -> str | None:
    """The xtables front end that writes into nftables (so both live in one ruleset), else the plain one."""
    return shutil.which("iptables-nft") or shutil.which("iptables")


class QueueJudge:
    """Started by the egress filter (`EgressFilter.start`), which lends it its rules, resolver and checks."""

    def __init__(self, egress_filter: EgressFilter) -> None:
        self.filter = egress_filter
        self.rules = egress_filter.rules
        self.queue: nfqueue.Queue | None = None
        self.judge = Judge(self._send, self._decide)
        self._rule: list[str] | None = None  # the iptables rule spec, to delete it at close
        self._expirer: asyncio.Task[None] | None = None
        self._cuts: set[asyncio.Task[None]] = set()

    @property
    def mark(self) -> int | None:
        return QUEUE_MARKS | self.queue.number if self.queue is not None else None

    async def start(self) -> str | None:
        """Bind a free queue and send it this judge's packets; None when running, else why not (then the
        filter's relay judges domain rules)."""
        tool = iptables()
        if tool is None:
            return "no iptables (xtables NFQUEUE) on this host"
        last = ""
        for i in range(QUEUES):
            number = FIRST_QUEUE + (os.getpid() + i) % QUEUES
            queue = nfqueue.Queue(number)
            try:
                queue.open()
            except OSError as exc:
                last = str(exc)
                if exc.errno == 16:  # EBUSY: another server holds it
                    continue
                return f"cannot bind a netfilter queue: {exc}"
            self.queue = queue
            break
        if self.queue is None:
            return f"no free netfilter queue: {last}"
        mark = QUEUE_MARKS | self.queue.number
        spec = rule_spec(self.queue.number)
        await sweep(tool)
        try:
            await run(tool, "-w", "-I", *spec)
        except Exception as exc:  # noqa: BLE001 — said; the relay judges instead
            self.queue.close()
            self.queue = None
            return f"cannot add the NFQUEUE rule ({exc})"
        self._rule = [tool, "-w", "-D", *spec]
        loop = asyncio.get_running_loop()
        loop.add_reader(self.queue.fileno(), self._readable)
        self._expirer = loop.create_task(self._expire())
        self.rules.queue_mark = mark
        self.rules.listeners.append(self._rules_changed)
        log.info("egress judge: netfilter queue %s (mark %#x)", self.queue.number, mark)
        return None

    async def close(self) -> None:
        if self._rules_changed in self.rules.listeners:
            self.rules.listeners.remove(self._rules_changed)
        if self.queue is not None and self.rules.queue_mark == self.mark:
            self.rules.queue_mark = None
        if self._expirer is not None:
            self._expirer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expirer
        await self.judge.close()
        for task in list(self._cuts):
            task.cancel()
        if self.queue is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.queue.fileno())
            self.queue.close()
            self.queue = None
        if self._rule is not None:
            await run(*self._rule, check=False)
            self._rule = None

    # ---- packets --------------------------------------------------------------------------------
    def _readable(self) -> None:
        assert self.queue is not None
        try:
            for queued in self.queue.receive():
                self.judge.packet(queued.packet_id, queued.packet)
        except OSError:
            log.exception("egress judge: reading the queue failed")

    def _send(self, packet_id: int, action: Action) -> None:
        if self.queue is None:
            return
        try:
            if action is Action.DROP:
                self.queue.verdict(packet_id, nfqueue.Verdict.DROP)
            else:
                mark = {Action.ALLOW: ALLOWED_MARK, Action.DENY: DENIED_MARK}.get(action, 0)
                self.queue.verdict(packet_id, nfqueue.Verdict.ACCEPT, mark)
        except OSError:
            log.exception("egress judge: a verdict failed")

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(EXPIRE_SECONDS)
            self.judge.expire()

    async def _decide(self, flow: Flow, result: Peek) -> bool:
        source, _, destination, port = flow.key
        slot = slot_of(source)
        if slot is None or result.name is None:
            return False
        policy = self.rules.current(slot.veth)
        entry = EgressEntry(time.time(), "tcp", destination, port, "denied", result.name,
                            source_port=flow.key[1])  # pairs it with the conntrack feed's record
        allowed = False
        if matches(result.name, policy.domains):
            try:
                addresses = await self.filter.resolver.addresses(result.name)
            except ResolveError as exc:
                log.info("egress judge: %s does not resolve (%s)", result.name, exc)
                addresses = []
            allowed = destination in addresses and self.filter.may_dial(destination, policy)
            if not allowed and addresses:
                entry.reason = f"{result.name} does not resolve to {destination}" \
                    if destination not in addresses else "not an address sandboxes may reach"
        entry.verdict = "allowed" if allowed else "denied"
        if allowed:
            self.filter.stats.allowed += 1
        else:
            self.filter.stats.denied += 1
        self.filter.record(slot.sandbox_ip, entry)
        return allowed

    # ---- rules changed --------------------------------------------------------------------------
    def _rules_changed(self, veth: str, policy: EgressPolicy) -> None:
        for flow in list(self.judge.flows.values()):
            slot = slot_of(flow.key[0])
            if slot is None or slot.veth != veth or flow.verdict is not Action.ALLOW:
                continue
            name = flow.result.name if flow.result is not None else None
            if name is not None and matches(name, policy.domains):
                continue
            flow.verdict = Action.DENY
            task = asyncio.get_running_loop().create_task(_mark_denied(flow))
            self._cuts.add(task)
            task.add_done_callback(self._cuts.discard)


async def _mark_denied(flow: Flow) -> None:
    """Give an established connection the denied mark: its next packet from the sandbox is reset."""
    source, sport, destination, dport = flow.key
    await run("conntrack", "-U", "-p", "tcp", "-s", source, "--sport", str(sport), "-d", destination,
              "--dport", str(dport), "-m", str(DENIED_MARK), check=False)
