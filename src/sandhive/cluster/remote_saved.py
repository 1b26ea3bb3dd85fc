"""Pause, resume, snapshots and forks through remote nodes: the control plane's half of `node_saved_api`.

Paused sandboxes and snapshots resume on the node that holds their files: the node's id travels in the saved
state (`models.NODE_ID_KEY`) that the store keeps, and every call about a saved sandbox goes to that node. If
that node is lost, the call fails at once with a 502 naming it (`remote_node.unreachable`), never a hang; the
files are not moved to another node.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from ..errors import NodeError
from ..node.request import CreateRequest, Identity
from ..node.runtime import PauseMode, Persistence, SandboxHandle, SavedSandbox
from . import models as m
from .saved_models import PauseBody, ResumeBody, Saved, SnapshotBody

if TYPE_CHECKING:
    from .remote_node import NodeClient, RemoteNodes

# A pause or snapshot dumps memory (CRIU: ~0.2 s per 10 MB here); a restore of a template with a slow ready
# check runs it again on a filesystem resume.
SAVE_TIMEOUT = httpx.Timeout(180.0, connect=3.0)


def persistence_of(statuses: list[m.Status]) -> Persistence:
    """What every node can do (one control plane serves one backend, so they agree; the least is taken)."""
    if not statuses:
        return Persistence()
    modes = set.intersection(*(set(s.pause_modes) for s in statuses))
    ordered = tuple(mode for mode in ("memory", "filesystem") if mode in modes)
    return Persistence(pause_modes=ordered, memory_snapshots=all(s.memory_snapshots for s in statuses))


def holder(nodes: RemoteNodes, saved: SavedSandbox) -> NodeClient:
    """The node that holds `saved`'s files, if it answers; else a 502 naming it."""
    node_id = saved.state.get(m.NODE_ID_KEY)
    node = next((n for n in nodes.nodes if n.node_id == node_id), None)
    if node is None:
        raise NodeError(502, f"Sandbox {saved.source_id}'s saved files are on node {node_id}, which this control "
                             "plane does not know; it can only be resumed there", "node_lost")
    trouble = node.trouble(time.monotonic())
    if trouble is not None:
        raise NodeError(502, f"Sandbox {saved.source_id}'s saved files are on node {node.node_id}, which cannot "
                             f"serve it now ({trouble}); it resumes there once the node is back", "node_lost")
    return node


def _create_body(request: CreateRequest, identity: Identity) -> m.CreateBody:
    return m.CreateBody(template_id=request.template.template_id, cpu_count=request.cpu_count,
                        memory_mb=request.memory_mb, disk_mb=request.disk_mb,
                        allow_internet_access=request.allow_internet_access, env_vars=identity.env_vars,
                        default_user=identity.default_user, default_workdir=identity.default_workdir,
                        volumes=[m.Mount(volume_id=v.volume_id, path=v.path) for v in request.volumes])


async def pause(nodes: RemoteNodes, handle: SandboxHandle, mode: PauseMode, dest: Path) -> SavedSandbox:
    """Pause on the sandbox's node; unwatched here first (its end is a pause, not news), watched again if the
    pause fails (it runs on)."""
    node = nodes._client(handle)
    watched = nodes._watches.get(handle.sandbox_id)
    nodes.unwatch(handle.sandbox_id)
    body = PauseBody(handle=m.Handle.of(handle), mode=mode, name=dest.name)
    try:
        response = await node.call("POST", "/saved/pause", body.model_dump(), timeout=SAVE_TIMEOUT)
    except BaseException:
        if watched is not None:
            nodes.watch(handle, watched[1])
        raise
    return Saved.model_validate(response.json()).to_remote()


async def snapshot(nodes: RemoteNodes, handle: SandboxHandle, dest: Path) -> SavedSandbox:
    node = nodes._client(handle)
    body = SnapshotBody(handle=m.Handle.of(handle), name=dest.name)
    response = await node.call("POST", "/saved/snapshot", body.model_dump(), timeout=SAVE_TIMEOUT)
    return Saved.model_validate(response.json()).to_remote()


async def resume(nodes: RemoteNodes, saved: SavedSandbox, request: CreateRequest, identity: Identity,
                 *, restore: bool) -> SandboxHandle:
    """Resume a pause (the same sandbox) or restore a snapshot (a new one) on the node that holds it."""
    node = holder(nodes, saved)
    body = ResumeBody(saved=Saved.of(saved), create=_create_body(request, identity), source_token=restore)
    node.starting += 1
    try:
        response = await node.call("POST", "/saved/resume", body.model_dump(), timeout=SAVE_TIMEOUT)
    finally:
        node.starting -= 1
    node.placed_mb += request.memory_mb
    return m.Handle.model_validate(response.json()).to_remote()


async def stop(nodes: RemoteNodes, saved: SavedSandbox) -> None:
    await holder(nodes, saved).call("POST", "/saved/stop", Saved.of(saved).model_dump(), timeout=SAVE_TIMEOUT)


async def discard(nodes: RemoteNodes, saved: SavedSandbox) -> None:
    await holder(nodes, saved).call("POST", "/saved/discard", Saved.of(saved).model_dump())


