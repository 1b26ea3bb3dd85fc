"""Saved sandboxes through remote nodes (cluster/remote_saved.py, saved_models.py) and the 503 of a database
outage (api/errors.py), without processes: tests/cluster runs the real thing."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError, ProgrammingError
from starlette.types import ASGIApp, Receive, Scope, Send

from sandhive.api.errors import InternalErrors, install_error_handlers
from sandhive.cluster import models as m
from sandhive.cluster.remote_node import LOST_SECONDS, RemoteNodes
from sandhive.cluster.remote_saved import holder, persistence_of
from sandhive.cluster.saved_models import Saved
from sandhive.errors import UserError
from sandhive.node.runtime import SavedSandbox
from tests.unit.test_cluster import TOKEN, status


def test_a_saved_sandbox_goes_to_its_node_and_a_lost_one_is_named_at_once() -> None:
    nodes = RemoteNodes(["http://a", "http://b"], TOKEN)
    for node, name in zip(nodes.nodes, ("node-a", "node-b"), strict=True):
        node.status, node.node_id, node.last_seen = status(name), name, time.monotonic()
    saved = SavedSandbox("iabc", "container", "memory", Path("/var/lib/sandhive/paused/iabc"),
                         {"pid": 1, m.NODE_ID_KEY: "node-b"})
    assert holder(nodes, saved).node_id == "node-b"
    nodes.nodes[1].last_seen = time.monotonic() - LOST_SECONDS - 1
    with pytest.raises(UserError) as lost:
        holder(nodes, saved)
    assert lost.value.status == 502 and "node-b" in lost.value.message and lost.value.error_code == "node_lost"
    began = time.monotonic()
    with pytest.raises(UserError):
        asyncio.run(nodes.resume(saved, None, None))  # type: ignore[arg-type]  # refused before any request
    assert time.monotonic() - began < 1


def test_saved_sandboxes_cross_the_wire_as_a_kind_and_a_name() -> None:
    saved = SavedSandbox("iabc", "container", "memory", Path("/node-data/snapshots/sxyz"),
                         {"bytes": 5, m.NODE_ID_KEY: "node-a", m.NODE_PROXY_KEY: "10.0.0.1:3100"})
    wire = Saved.of(saved)
    assert (wire.kind, wire.name) == ("snapshots", "sxyz")
    local = wire.to_saved(Path("/data"))
    assert local.directory == Path("/data/snapshots/sxyz") and local.state == {"bytes": 5}
    assert wire.to_remote().state[m.NODE_ID_KEY] == "node-a"
    for name in ("..", "../x", "a/b", ".x", ""):
        with pytest.raises(UserError):
            Saved(source_id="i", backend="container", mode="memory", kind="paused", name=name).directory(Path("/d"))
    with pytest.raises(UserError):  # not a pause or snapshot directory of a node
        Saved.of(SavedSandbox("i", "container", "memory", Path("/data/templates/base")))


def test_a_control_plane_offers_the_persistence_every_node_has() -> None:
    a, b = status("a"), status("b")
    a.pause_modes, a.memory_snapshots = ["memory", "filesystem"], True
    b.pause_modes, b.memory_snapshots = ["filesystem"], True
    both = persistence_of([a, b])
    assert both.pause_modes == ("filesystem",) and both.memory_snapshots
    assert persistence_of([]).pause_modes == ()


class _StoreGuard:
    """A middleware that reads the store (as api/guard.py does) while the database is away."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/guarded":
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        await self.app(scope, receive, send)


def test_a_database_outage_answers_503_with_retry_after_and_a_bug_stays_a_500() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/down")
    async def down() -> None:
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    @app.get("/bug")
    async def bug() -> None:
        raise ProgrammingError("SELEC 1", {}, Exception("syntax error"))

    app.add_middleware(_StoreGuard)
    app.add_middleware(InternalErrors)

    async def run() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            for path in ("/down", "/guarded"):
                r = await client.get(path)
                assert r.status_code == 503, (path, r.text)
                assert r.headers["retry-after"] == "5"
                assert r.json()["error_code"] == "store_unavailable" and "database" in r.json()["message"]
            r = await client.get("/bug")
            assert r.status_code == 500 and "SELEC" not in r.text

    asyncio.run(run())


def test_a_restarted_node_is_told_which_of_its_sandboxes_are_paused() -> None:
    """Its first reconcile removes what no store row names: a paused sandbox's disk must not be among them."""
    sent: list[dict] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/reconcile"):
            sent.append(json.loads(request.content))
            return httpx.Response(200, json={"alive": []})
        return httpx.Response(200, json=status("node-a").model_dump(mode="json"))

    nodes = RemoteNodes(["http://a"], TOKEN)
    node = nodes.nodes[0]
    node.node_id = "node-a"

    async def known(node_id: str) -> list:
        return []

    async def paused_on(node_id: str) -> list[str]:
        return ["ipaused1"] if node_id == "node-a" else []

    nodes.known, nodes.paused_on = known, paused_on

    async def run() -> None:
        node.http = httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="http://a/node/v1")
        await nodes._readopt(node)
        await node.http.aclose()

    asyncio.run(run())
    assert sent and sent[0]["paused"] == ["ipaused1"]
