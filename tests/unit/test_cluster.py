"""The node API's wire and the control plane's view of its nodes, without processes (tests/cluster runs them)."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandhive.cluster import models as m
from sandhive.cluster.node_api import TokenGate
from sandhive.cluster.remote_node import LOST_SECONDS, NodeClient, RemoteNodes
from sandhive.node.egress import EgressPolicy
from sandhive.node.node import Node
from sandhive.node.pool import PoolStatus
from sandhive.node.runtime import SandboxHandle

API = Path(__file__).resolve().parents[2] / "src" / "sandhive" / "api"
TOKEN = "t" * 64


def status(node_id: str, reserved: int = 0, pools: list[PoolStatus] | None = None,
           reconciled: bool = True, templates: list[str] | None = None) -> m.Status:
    return m.Status(node_id=node_id, backend="container", proxy=f"{node_id}:3100", memory_mb=8192, cpus=64,
                    memory_overcommit=8, max_sandboxes=200, reserved_memory_mb=reserved, reserved_cpus=0,
                    pooled_memory_mb=0, pooled_cpus=0, in_use_mb=0, sandboxes=0, pressure=None, pools=pools or [],
                    running=[], reconciled=reconciled, templates=templates or [])


def test_remote_nodes_offer_everything_the_api_calls_on_a_node() -> None:
    """The API is written against `Node`; a control plane hands it `RemoteNodes` instead, so every attribute the
    API reads of its node (`node.x`, `self.node.x`, `service.node.x`) must be there."""
    used: set[str] = set()
    for path in API.glob("*.py"):
        used |= set(re.findall(r"\bnode\.([a-z_]+)\b", path.read_text()))
    node_attrs = set(dir(Node)) | {"runtime", "admission", "pools", "shells", "history", "telemetry", "egress_log"}
    wanted = {name for name in used if name in node_attrs and name not in ("admission",)}
    assert {"create", "kill", "watch", "reconcile", "status", "logs", "set_egress"} <= wanted
    remote = RemoteNodes(["http://127.0.0.1:1"], TOKEN)
    missing = sorted(name for name in wanted if not hasattr(remote, name))
    assert not missing, f"RemoteNodes lacks what the API uses of a Node: {missing}"


def test_handles_keep_the_node_for_the_control_plane_and_drop_it_for_the_runtime() -> None:
    wire = m.Handle(sandbox_id="iabc", backend="container", address="10.211.0.2",
                    state={"slot": 0, m.NODE_ID_KEY: "node-1", m.NODE_PROXY_KEY: "10.0.0.1:3100"})
    assert wire.to_remote().state[m.NODE_ID_KEY] == "node-1"
    assert wire.to_handle() == SandboxHandle("iabc", "container", "10.211.0.2", {"slot": 0})


def test_egress_policies_cross_the_wire_unchanged() -> None:
    policy = EgressPolicy(allow=(ipaddress.ip_network("10.1.0.0/16"),), deny=(ipaddress.ip_network("0.0.0.0/0"),),
                          domains=("*.example.com",), rules=(("api.example.com", (("X-A", "1"),)),))
    assert m.Egress.model_validate_json(m.Egress.of(policy).model_dump_json()).to_policy() == policy


def test_the_cluster_secret_is_shared_and_not_the_token() -> None:
    assert m.cluster_secret(TOKEN) == m.cluster_secret(TOKEN)
    assert m.cluster_secret(TOKEN) != m.cluster_secret("u" * 64)
    assert TOKEN.encode() not in m.cluster_secret(TOKEN)


def test_placement_prefers_a_warm_pool_then_free_memory_and_skips_lost_nodes() -> None:
    nodes = RemoteNodes(["http://a", "http://b", "http://c"], TOKEN)
    a, b, c = nodes.nodes
    now = time.monotonic()
    warm = PoolStatus(template_id="base", backend="container", cpu_count=2, memory_mb=512, disk_mb=1024, internet=True,
                  ready=1, starting=0, target=1, hits=0, misses=0, fill_ms=0, pinned=True)
    a.status, b.status, c.status = status("a", reserved=0), status("b", reserved=30000, pools=[warm]), status("c")
    a.last_seen, b.last_seen, c.last_seen = now, now, now - LOST_SECONDS - 1
    assert [n.node_id for n in nodes.placement("base")] == ["http://b", "http://a"]
    assert [n.node_id for n in nodes.placement("other")] == ["http://a", "http://b"]
    a.starting = 4
    assert [n.node_id for n in nodes.placement("other")] == ["http://b"]
    a.starting, b.status = 0, status("b", reconciled=False)  # restarted, its first reconcile not yet done
    assert [n.node_id for n in nodes.placement("base")] == ["http://a"]


def test_placement_prefers_a_node_that_has_the_template_unless_another_is_much_emptier() -> None:
    """After a warm pool and creates in flight: a node that has the template (a create there pulls nothing) wins
    over an equally free one that lacks it, but not over one at least two 2 GB steps emptier (a new template
    spreads rather than piling up on the node that built it). Budget: 8192 MB × 8 = 32 steps."""
    nodes = RemoteNodes(["http://a", "http://b", "http://c"], TOKEN)
    a, b, c = nodes.nodes
    for node in nodes.nodes:
        node.last_seen = time.monotonic()
    a.status, b.status = status("a", templates=["tpl", "base"]), status("b", templates=["base"])
    c.status = status("c", reserved=8192, templates=["tpl", "base"])
    assert [n.node_id for n in nodes.placement("tpl")] == ["http://a", "http://b", "http://c"]
    a.status = status("a", reserved=4096, templates=["tpl", "base"])  # b: two steps emptier, one after the pull
    assert [n.node_id for n in nodes.placement("tpl")] == ["http://b", "http://a", "http://c"]
    a.status = status("a", templates=["tpl", "base"])
    a.starting = 1  # a create in flight there: the idle node goes first, even if it must pull
    assert [n.node_id for n in nodes.placement("tpl")] == ["http://b", "http://c", "http://a"]
    a.starting = 0
    warm = PoolStatus(template_id="tpl", backend="container", cpu_count=2, memory_mb=512, disk_mb=1024,
                      internet=True, ready=1, starting=0, target=1, hits=0, misses=0, fill_ms=0, pinned=True)
    c.status = status("c", reserved=8192, pools=[warm], templates=["tpl", "base"])
    assert [n.node_id for n in nodes.placement("tpl")][0] == "http://c"  # a warm sandbox beats everything


def test_the_templates_a_node_has_are_optional_on_the_wire() -> None:
    """Added within version 1: a status without them parses (the node has none, for placement), and they cross
    the wire as sent."""
    sent = status("a", templates=["tpl"]).model_dump(mode="json")
    assert m.Status.model_validate_json(m.Status.model_validate(sent).model_dump_json()).templates == ["tpl"]
    del sent["templates"]
    older = m.Status.model_validate(sent)
    assert older.templates == [] and older.version == 1


def test_a_pull_the_create_paid_for_is_in_its_handle_and_its_create_log() -> None:
    """The node writes the pull into the handle's state; the store keeps it, and any replica reads it back as the
    sandbox's first log entry (api/sandboxes.py `note_entry`), stamped with when the pull began."""
    from sandhive.api.sandboxes import note_entry
    from sandhive.node.node import LogNote

    note = LogNote(1_700_000_000.5, "template tpl pulled from registry r:5000 for this sandbox (digest sha256:ab, "
                   "4.2 s)", {"logger": "template", "digest": "sha256:ab", "seconds": "4.2"})
    wire = m.Handle(sandbox_id="iabc", backend="container", address="10.211.0.2",
                    state={m.NODE_ID_KEY: "node-a", m.CREATE_LOG_KEY: m.CREATE_LOG.dump_python([note], mode="json")})
    stored = m.Handle.model_validate_json(wire.model_dump_json()).to_remote()
    assert RemoteNodes.create_log(stored) == [note]
    assert m.CREATE_LOG_KEY not in wire.to_handle().state  # the node's runtime never sees it
    assert RemoteNodes.create_log(SandboxHandle("iold", "container", "10.211.0.3", {})) == []
    entry = note_entry(note)
    assert entry.timestamp.timestamp() == note.time and entry.message == note.message
    assert entry.fields["digest"] == "sha256:ab"


def test_a_sandbox_on_a_lost_node_fails_at_once() -> None:
    nodes = RemoteNodes(["http://a"], TOKEN)
    node = nodes.nodes[0]
    node.status, node.node_id, node.last_seen = status("node-a"), "node-a", time.monotonic() - LOST_SECONDS - 1
    handle = SandboxHandle("iabc", "container", "10.211.0.2", {m.NODE_ID_KEY: "node-a"})
    assert "node-a" in (nodes.node_trouble(handle) or "") and "lost" in (nodes.node_trouble(handle) or "")
    try:
        asyncio.run(nodes.logs(handle))
    except Exception as exc:  # NodeError 502, E2B-shaped
        assert getattr(exc, "status", None) == 502 and "cannot be reached" in str(exc)
    else:
        raise AssertionError("a call to a lost node's sandbox did not fail")
    node.last_seen, node.status = time.monotonic(), status("node-a", reconciled=False)  # back, not re-adopted yet
    assert "re-adopting" in (nodes.node_trouble(handle) or "")
    node.status = status("node-a")
    assert nodes.node_trouble(handle) is None


def test_the_node_port_needs_the_token_and_hides_it_from_what_follows() -> None:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"token": request.headers.get(m.TOKEN_HEADER)})

    gate = TokenGate(Starlette(routes=[Route("/x", echo)]), TOKEN)

    async def calls() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gate), base_url="http://node") as client:
            return [await client.get("/x"), await client.get("/x", headers={m.TOKEN_HEADER: "t" * 63 + "u"}),
                    await client.get("/x", headers={m.TOKEN_HEADER: TOKEN})]

    missing, wrong, right = asyncio.run(calls())
    assert missing.status_code == wrong.status_code == 401
    assert right.status_code == 200 and right.json() == {"token": None}


def test_node_client_is_lost_only_after_the_silence_limit() -> None:
    node = NodeClient("http://a", TOKEN)
    now = time.monotonic()
    node.last_seen = now - LOST_SECONDS + 1
    assert not node.lost(now)
    node.last_seen = now - LOST_SECONDS - 0.1
    assert node.lost(now)
    node.polling = now - 1  # a poll on its way that has not failed: a busy node, not a lost one
    assert not node.lost(now)
    node.failed = True  # one since its last answer failed: lost, whatever else is on its way
    assert node.lost(now)


def test_lost_within_10_seconds_of_the_last_answer_by_construction() -> None:
    """Issue 17's promise from the constants: a dead process is lost LOST_SECONDS after its last answer; a silent
    one once the poll after that answer (sent within POLL_SECONDS) gives up (POLL_DEADLINE, connect included)."""
    from sandhive.cluster import remote_node as rn

    assert rn.LOST_SECONDS <= 10
    assert rn.POLL_SECONDS + rn.POLL_DEADLINE <= 10
    assert rn.POLL_TIMEOUT.connect is not None and rn.POLL_TIMEOUT.connect <= rn.POLL_DEADLINE


def test_a_slow_status_keeps_a_node_and_a_silent_one_is_lost_when_its_poll_gives_up(monkeypatch) -> None:
    """With the silence limit shortened: a status that takes longer than the limit to come keeps its node (it is
    on its way the whole time), and a node that never answers is lost once the poll gives up (`POLL_DEADLINE`)."""
    from sandhive.cluster import remote_node as rn

    monkeypatch.setattr(rn, "LOST_SECONDS", 0.1)
    monkeypatch.setattr(rn, "POLL_DEADLINE", 0.6)
    delay = {"seconds": 0.3}

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(delay["seconds"])
        return httpx.Response(200, json=status("node-a").model_dump(mode="json"))

    async def scenario() -> list[bool]:
        node = NodeClient("http://a", TOKEN)
        await node.http.aclose()
        node.http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://a/node/v1")
        seen = []
        await node.poll()
        await asyncio.sleep(0.15)  # silent past the limit, no poll on its way: lost
        seen.append(node.lost(time.monotonic()))
        slow = asyncio.create_task(node.poll())
        await asyncio.sleep(0.2)  # past the limit again, but the poll is on its way
        seen.append(node.lost(time.monotonic()))
        await slow
        seen.append(node.lost(time.monotonic()))  # it answered
        delay["seconds"] = 30.0  # never answers: the poll gives up after POLL_DEADLINE
        hung = asyncio.create_task(node.poll())
        await asyncio.sleep(0.3)
        seen.append(node.lost(time.monotonic()))
        try:
            await hung
        except Exception as exc:  # NodeError 502 naming the node
            seen.append(getattr(exc, "status", None) == 502)
        seen.append(node.lost(time.monotonic()))
        await node.http.aclose()
        return seen

    assert asyncio.run(scenario()) == [True, False, False, False, True, True]


def test_a_sandbox_missing_from_two_fresh_statuses_is_reported_ended_but_a_stale_status_proves_nothing() -> None:
    """Deaths of sandboxes this replica does not watch: the store says they run on a node, two statuses asked one
    after the other do not list them. A node that stopped answering keeps its last status: read again and again, it
    must not count as fresh evidence (its sandbox may have been created just after it was taken)."""
    nodes = RemoteNodes(["http://a"], TOKEN)
    node = nodes.nodes[0]
    handle = SandboxHandle("iabc", "container", "10.211.0.2", {m.NODE_ID_KEY: "node-a"})
    ended: list[str] = []

    async def known(node_id: str) -> list:
        from sandhive.node.admission import Resources

        return [(handle, Resources(512, 2))] if node_id == "node-a" else []

    async def on_exit(h: SandboxHandle, reason: str) -> None:
        ended.append(h.sandbox_id)

    nodes.known, nodes.on_exit = known, on_exit
    fresh = status("node-a")
    fresh.reconciled = True
    node.status, node.node_id, node.last_seen = fresh, "node-a", time.monotonic()

    async def checks(asked: list[float]) -> None:
        for when in asked:
            node.asked = when
            await nodes._notice_unwatched_deaths()
        await asyncio.gather(*nodes._ended)

    asyncio.run(checks([1.0, 1.0, 1.0]))
    assert ended == []
    asyncio.run(checks([2.0, 3.0]))
    assert ended == ["iabc"]


def test_dns_urls_find_every_address_of_a_name_and_keep_static_ones() -> None:
    """`--node-url dns+http://NAME:PORT` (a headless Service of the node DaemonSet): every address of NAME is a
    node, found again at each poll; a static URL stays as given."""
    async def scenario() -> list[str]:
        nodes = RemoteNodes(["http://192.0.2.7:7000", "dns+http://localhost:7000"], "token")
        assert [n.url for n in nodes.nodes] == ["http://192.0.2.7:7000"]
        await nodes.discover()
        await nodes.discover()  # again: nothing twice
        urls = [n.url for n in nodes.nodes]
        for node in nodes.nodes:
            await node.http.aclose()
        return urls

    urls = asyncio.run(scenario())
    assert urls[0] == "http://192.0.2.7:7000" and "http://127.0.0.1:7000" in urls
    assert len(urls) == len(set(urls))


def test_a_restarted_node_says_it_is_reconciled_only_once_it_lists_the_survivors() -> None:
    """A status taken while the first reconcile runs must not say "reconciled" with none of the survivors listed
    yet: a control plane would take them for dead and end them (seen as a re-adopted sandbox gone 404)."""
    from types import SimpleNamespace

    from sandhive.cluster.node_api import NodeService
    from sandhive.node.admission import Budget, Resources
    from sandhive.node.node import NodeStatus
    from sandhive.node.runtime import Persistence

    class SlowNode:
        runtime = SimpleNamespace(persistence=Persistence())
        egress_log = SimpleNamespace(denied_total=0)

        def __init__(self) -> None:
            self.release = asyncio.Event()

        async def reconcile(self, known: list, resources: dict, paused: object = ()) -> set[str]:
            await self.release.wait()
            return {h.sandbox_id for h in known}

        def status(self) -> NodeStatus:
            return NodeStatus("container", Budget(8192, 8), Resources(0, 0), Resources(0, 0), [])

        def watch(self, handle: SandboxHandle, on_exit: object) -> None:
            pass

    class NoTemplates:
        async def resolve(self, name: str) -> object:
            raise LookupError(name)

        def list(self) -> list:
            return []

    async def scenario() -> list[tuple[bool, list[str]]]:
        node = SlowNode()
        service = NodeService(node, NoTemplates(), TOKEN, "node-a", "node-a:3100")  # type: ignore[arg-type]
        body = m.Reconcile(known=[m.Handle(sandbox_id="iabc", backend="container", address="10.211.0.2")])
        first = asyncio.create_task(service.reconcile(body))
        await asyncio.sleep(0.01)
        seen = [(service.status().reconciled, service.status().running)]
        node.release.set()
        await first
        seen.append((service.status().reconciled, service.status().running))
        return seen

    assert asyncio.run(scenario()) == [(False, []), (True, ["iabc"])]
