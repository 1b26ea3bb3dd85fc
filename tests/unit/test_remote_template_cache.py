"""The control plane's template cache (`RemoteTemplates`): a create of a template in use never waits for a node,
and no copy is older than its time to live."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from sandhive.cluster import models as m
from sandhive.cluster.remote_node import HOT_TEMPLATE_SECONDS, RemoteNodes, RemoteTemplates
from sandhive.errors import NodeError

TOKEN = "t" * 64
TEMPLATE = m.Template(template_id="base", default_user="user", default_workdir="/home/user", env={}, start_cmd=None,
                      ready_cmd=None, cpu_count=2, memory_mb=512, disk_mb=1024, backend=None)


class FakeNode:
    """A node that answers template lookups (or 404s) and counts them."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.known = {"base"}

    async def call(self, method: str, path: str, body: object = None, *, timeout: object = None) -> httpx.Response:
        self.asked.append(path)
        if path.rsplit("/", 1)[1] not in self.known:
            raise NodeError(404, "not found")
        return httpx.Response(200, json=TEMPLATE.model_dump())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def templates() -> tuple[RemoteTemplates, FakeNode, Clock, RemoteNodes]:
    nodes = RemoteNodes(["http://127.0.0.1:1"], TOKEN)
    node = FakeNode()
    nodes.live = lambda: [node]  # type: ignore[method-assign,list-item,return-value]
    clock = Clock()
    return RemoteTemplates(nodes, ttl=10.0, clock=clock), node, clock, nodes


def test_a_template_in_use_is_refreshed_after_polls_so_creates_never_wait_for_a_node() -> None:
    async def run() -> None:
        remote, node, clock, nodes = templates()
        assert nodes.after_poll == [remote.refresh]
        await remote.resolve("base")
        assert len(node.asked) == 1
        clock.now += 4.0
        await remote.refresh()  # young copy: nothing asked
        assert len(node.asked) == 1
        for _ in range(10):  # creates every 7 s, polls every 2 s: no create ever asks a node itself
            for _ in range(3):
                clock.now += 2.0
                await remote.refresh()
            clock.now += 1.0
            asked = len(node.asked)
            await remote.resolve("base")
            assert len(node.asked) == asked, "a create waited for a node"
        assert len(node.asked) > 10  # the refreshes did ask
    asyncio.run(run())


def test_a_copy_never_outlives_its_ttl_and_unused_or_deleted_templates_are_not_refreshed() -> None:
    async def run() -> None:
        remote, node, clock, _ = templates()
        await remote.resolve("base")
        clock.now += 10.5  # no poll ran meanwhile (a slow node): the copy expired, the create asks
        await remote.resolve("base")
        assert len(node.asked) == 2
        clock.now += HOT_TEMPLATE_SECONDS + 1  # nobody created from it since: not refreshed any more
        await remote.refresh()
        assert len(node.asked) == 2
        await remote.resolve("base")
        node.known.clear()  # deleted on the nodes: dropped at the next refresh, the next create gets the 404
        clock.now += 6.0
        await remote.refresh()
        with pytest.raises(LookupError):
            await remote.resolve("base")
    asyncio.run(run())
