"""The egress audit's parsing (node/egress_audit.py): conntrack events and the denied sets, as the tools print
them on this host (captured from conntrack 1.4.7 and nftables 1.0.6)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from pathlib import Path

import pytest

from sandhive.node import egress_audit
from sandhive.node.egress_audit import (
    ConntrackFeed,
    DeniedFeed,
    EgressEntry,
    EgressLog,
    SandboxOf,
    denied_elements,
    parse_conntrack_event,
)

NEW = ("    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.211.0.6 dst=203.0.113.5 sport=55272 dport=80 "
       "[UNREPLIED] src=203.0.113.5 dst=10.212.0.1 sport=80 dport=55272 id=3956093256")
DESTROY = ("[DESTROY] ipv4     2 tcp      6 src=10.211.0.6 dst=203.0.113.5 sport=55272 dport=80 packets=5 bytes=400 "
           "src=203.0.113.5 dst=10.212.0.1 sport=80 dport=55272 packets=4 bytes=5000 [ASSURED] id=3956093256")
SETS = {"nftables": [{"metainfo": {}}, {"set": {"family": "inet", "name": "denied4", "table": "sandhive_egress",
                                                 "elem": [{"elem": {"val": {"concat": ["10.211.0.6", "198.51.100.7",
                                                                                       "tcp", 443]}, "expires": 59}}]}},
                     {"set": {"name": "blocked4", "elem": [{"prefix": {"addr": "10.0.0.0", "len": 8}}]}}]}


def sandbox_of(tmp_path: Path) -> SandboxOf:
    (tmp_path / "1").write_text("isbxone")  # slot 1: 10.211.0.4/30, sandbox address .6
    return SandboxOf(ipaddress.ip_network("10.211.0.0/16"), tmp_path)


def test_conntrack_events_parse() -> None:
    event, fields, conn_id = parse_conntrack_event(NEW) or ("", {}, "")
    assert (event, fields["proto"], fields["src"], fields["dst"], fields["dport"], conn_id) == (
        "NEW", "tcp", "10.211.0.6", "203.0.113.5", "80", "3956093256")
    _, ended, _ = parse_conntrack_event(DESTROY) or ("", {}, "")
    assert (ended["bytes"], ended["reply_bytes"]) == ("400", "5000")
    assert parse_conntrack_event("conntrack v1.4.7: 2 flow events have been shown.") is None


def test_a_connection_is_filed_under_its_sandbox_and_completed_at_its_end(tmp_path: Path) -> None:
    egress = EgressLog()
    feed = ConntrackFeed(egress, sandbox_of(tmp_path))
    feed.take(NEW)
    feed.take(NEW.replace("10.211.0.6", "10.211.0.10"))  # slot 2: nobody's
    feed.take(DESTROY)
    [entry] = egress.entries("isbxone")
    assert (entry.destination, entry.port, entry.verdict, entry.bytes_out, entry.bytes_in) == (
        "203.0.113.5", 80, "allowed", 400, 5000)
    assert entry.ended is not None
    egress.forget("isbxone")
    assert egress.entries("isbxone") == []


def test_denied_attempts_are_read_from_the_timed_sets_once_each(tmp_path: Path) -> None:
    listing = json.dumps(SETS)
    assert list(denied_elements(listing)) == [("10.211.0.6", "198.51.100.7", "tcp", "443")]
    egress = EgressLog()
    feed = DeniedFeed(egress, sandbox_of(tmp_path))
    feed.take(listing)
    feed.take(listing)  # the same attempt, still in the set: not a new one
    [entry] = egress.entries("isbxone")
    assert (entry.destination, entry.port, entry.verdict, entry.protocol) == ("198.51.100.7", 443, "denied", "tcp")
    assert egress.denied_total == 1
    feed.take(json.dumps({"nftables": []}))  # it expired ...
    feed.take(listing)  # ... and was tried again
    assert egress.denied_total == 2


def test_the_nodes_own_connections_into_a_sandbox_are_not_its_egress(tmp_path: Path) -> None:
    """The node reaches envd and the sandbox's ports from the host's end of the slot (.5 for slot 1): those
    connections leave from an address of the slot, but are not the sandbox's."""
    egress = EgressLog()
    feed = ConntrackFeed(egress, sandbox_of(tmp_path))
    feed.take(NEW.replace("src=10.211.0.6 dst=203.0.113.5 sport=55272 dport=80",
                          "src=10.211.0.5 dst=10.211.0.6 sport=55272 dport=49983")
               .replace("src=203.0.113.5 dst=10.212.0.1 sport=80", "src=10.211.0.6 dst=10.211.0.5 sport=49983"))
    assert egress.entries("isbxone") == []
    assert sandbox_of(tmp_path)("10.211.0.6") == "isbxone" and sandbox_of(tmp_path)("10.211.0.5") is None


def test_a_connection_redirected_to_the_egress_filter_is_left_to_the_filter(tmp_path: Path) -> None:
    egress_log = EgressLog()
    feed = ConntrackFeed(egress_log, sandbox_of(tmp_path))
    # the reply comes from the filter on the veth's host address, not from the destination: a redirect
    feed.take(NEW.replace("src=203.0.113.5 dst=10.212.0.1 sport=80", "src=10.211.0.5 dst=10.211.0.6 sport=41234"))
    assert egress_log.entries("isbxone") == []
    feed.take(NEW)
    assert [e.destination for e in egress_log.entries("isbxone")] == ["203.0.113.5"]


def judged(verdict: str) -> EgressEntry:
    """The judge's record of the NEW line's connection (node/egress_queue.py): by name, with the verdict."""
    return EgressEntry(1.0, "tcp", "203.0.113.5", 80, verdict, "allowed.test", source_port=55272)


def test_a_judged_connection_is_one_entry_whichever_record_comes_first(tmp_path: Path) -> None:
    for judge_first in (False, True):
        egress = EgressLog()
        feed = ConntrackFeed(egress, sandbox_of(tmp_path))
        if judge_first:
            egress.add("isbxone", judged("allowed"))
        feed.take(NEW)
        if not judge_first:
            egress.add("isbxone", judged("allowed"))
        feed.take(DESTROY)
        [entry] = egress.entries("isbxone")
        assert (entry.domain, entry.verdict, entry.bytes_out, entry.bytes_in) == ("allowed.test", "allowed", 400,
                                                                                  5000), judge_first


def test_a_connection_the_judge_denies_after_conntrack_saw_it_open_is_denied_and_counted(tmp_path: Path) -> None:
    egress = EgressLog()
    ConntrackFeed(egress, sandbox_of(tmp_path)).take(NEW)
    egress.add("isbxone", judged("denied"))
    [entry] = egress.entries("isbxone")
    assert (entry.verdict, entry.domain, egress.denied_total) == ("denied", "allowed.test", 1)


def test_new_rules_make_the_next_denial_to_a_known_place_a_new_entry(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`settle` (an `update_network`) files what the sets hold, then has those elements forgotten: the same
    place denied again under the new rules, while the first element would still have lived, is a second entry."""
    listing = json.dumps(SETS)
    forgotten: list[tuple[str, list]] = []

    async def nft(*args: str, check: bool = True) -> str:
        return listing

    async def forget(source: str, elements: object) -> None:
        forgotten.append((source, list(elements)))  # type: ignore[call-overload]

    monkeypatch.setattr(egress_audit, "run", nft)
    egress = EgressLog()
    feed = DeniedFeed(egress, sandbox_of(tmp_path))
    asyncio.run(feed.settle("10.211.0.6", forget))
    assert forgotten == [("10.211.0.6", [("10.211.0.6", "198.51.100.7", "tcp", "443")])]
    feed.take(listing)  # denied again after the update (the element recorded anew)
    assert [e.destination for e in egress.entries("isbxone")] == ["198.51.100.7", "198.51.100.7"]
    asyncio.run(feed.settle("10.211.0.10", forget))  # another sandbox's update forgets nothing of this one's
    assert len(forgotten) == 1


def test_every_record_of_a_denied_attempt_is_within_its_sources_share() -> None:
    """The denied record is host-wide: a drop rule recording without the per-source limit (node/egress.py
    RECORD_RATE) would let one sandbox's scan crowd out every other's (security promise 41)."""
    from sandhive.node import network

    script = network.firewall_script(["10.0.0.1"]) + network.egress_script(["10.0.0.1"], None)
    records = [line for line in script.splitlines() if "add @denied" in line]
    assert len(records) >= 6  # the slots' input and no-internet drops, and the egress table's blocked ranges
    for line in records:
        share = line.index("update @recorders")
        assert share < line.index("add @denied") and "limit rate" in line[share:line.index("add @denied")], line


def test_a_freed_slot_loses_its_share_of_the_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slot's next sandbox starts with a whole share of the denied record, not what a port scan of the last
    left (node/egress.py `forget_denied`); a rules change (`only` given) keeps the share."""
    from sandhive.node import egress

    commands: list[tuple[str, ...]] = []

    async def run(*argv: str, check: bool = True) -> str:
        commands.append(argv)
        return ""

    monkeypatch.setattr(egress, "run", run)
    asyncio.run(egress.forget_denied("10.211.0.6"))
    deletes = [" ".join(c) for c in commands if c[:3] == ("nft", "delete", "element")]
    assert {d.split()[4] for d in deletes if "recorders4" in d} == {egress.TABLE.split()[-1],
                                                                    egress.SLOTS_TABLE.split()[-1]}
    assert all("10.211.0.6" in d for d in deletes)
    commands.clear()
    asyncio.run(egress.forget_denied("10.211.0.6", only=[("10.211.0.6", "198.51.100.7", "tcp", "443")]))
    assert not any("recorders4" in " ".join(c) for c in commands)
