"""The node API's routes for paused sandboxes and snapshots: pause, resume, snapshot, restore, stop and discard.

The files stay here, under `<data dir>/paused/<id>` and `<data dir>/snapshots/<id>`; what goes back to the
control plane is the `SavedSandbox` with this node's id in its state, which the store keeps, so that the
control plane resumes and restores it here (`remote_saved`). The control plane checked the team's right to the
sandbox or snapshot before it calls; these routes only ever touch directories under this node's data dir
(`saved_models.check_name`), whatever the request names.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter

from ..errors import UserError
from ..node.request import CreateRequest, Identity
from . import models as m
from .node_api import NodeService
from .saved_models import PauseBody, ResumeBody, Saved, SnapshotBody, check_name


class SavedService:
    """The persistence half of the node API, on top of `NodeService` (its node, templates, tokens, handles)."""

    def __init__(self, service: NodeService, data_dir: Path) -> None:
        self.s = service
        self.data_dir = data_dir
        self._locks: dict[str, asyncio.Lock] = {}
        self._paused: set[str] = set()  # paused by this node process and not resumed since

    def _saved(self, saved: Saved) -> Saved:
        out = saved.model_copy()
        out.state = {**saved.state, m.NODE_ID_KEY: self.s.node_id, m.NODE_PROXY_KEY: self.s.proxy}
        return out

    async def pause(self, body: PauseBody) -> Saved:
        """Save and stop a handed-out sandbox. It leaves the node-side proxy and the status's `running` once it is
        saved: while the dump runs, no control plane may take its absence from a status for a death."""
        handle = body.handle.to_handle()
        dest = self.data_dir / "paused" / check_name(body.name)
        # Replicas' timers may pause the same sandbox at once (each sees its deadline pass): one pause runs, the
        # other is told it is already paused, which a timer takes for done (api/pause.py `pause_at_timeout`).
        try:
            async with self._locks.setdefault(handle.sandbox_id, asyncio.Lock()):
                if handle.sandbox_id in self._paused:
                    raise UserError(409, f"Sandbox {handle.sandbox_id} is already paused", "sandbox_already_paused")
                await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
                saved = await self.s.node.pause(handle, body.mode, dest)
                self.s.sandboxes.handles.pop(handle.sandbox_id, None)
                self._paused.add(handle.sandbox_id)
        finally:
            self._locks.pop(handle.sandbox_id, None)  # later callers find it in `_paused`
        return self._saved(Saved(source_id=saved.source_id, backend=saved.backend, mode=saved.mode, kind="paused",
                                 name=dest.name, state=dict(saved.state), path=str(saved.directory)))

    async def snapshot(self, body: SnapshotBody) -> Saved:
        dest = self.data_dir / "snapshots" / check_name(body.name)
        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        saved = await self.s.node.snapshot(body.handle.to_handle(), dest)
        return self._saved(Saved(source_id=saved.source_id, backend=saved.backend, mode=saved.mode,
                                 kind="snapshots", name=dest.name, state=dict(saved.state),
                                 path=str(saved.directory)))

    async def resume(self, body: ResumeBody) -> m.Handle:
        """Resume a pause (`kind` paused: the same id) or restore a snapshot (`kind` snapshots: a new sandbox)."""
        saved = body.saved.to_saved(self.data_dir)
        create = body.create
        template = await self.s._template(create.template_id)
        request = CreateRequest(template, create.cpu_count, create.memory_mb, create.disk_mb,
                                create.allow_internet_access, await self.s.mounts(create))
        identity = Identity(env_vars=create.env_vars, default_user=create.default_user,
                            default_workdir=create.default_workdir, token_for=self.s.token_for)
        if body.saved.kind == "paused":
            handle = await self.s.node.resume(saved, request, identity)
            self._paused.discard(handle.sandbox_id)
        else:
            source_token = self.s.token_for(saved.source_id) if body.source_token else None
            handle = await self.s.node.restore(saved, request, identity, source_token)
        self.s._hand_out(handle)
        return self.s._handle(handle)

    async def stop(self, saved: Saved) -> None:
        await self.s.node.stop_saved(saved.to_saved(self.data_dir))
        if saved.kind == "paused":
            self._paused.discard(saved.source_id)

    async def discard(self, saved: Saved) -> None:
        await self.s.node.discard_saved(saved.to_saved(self.data_dir))


def saved_router(service: SavedService) -> APIRouter:
    r = APIRouter(prefix=m.API_PREFIX + "/saved")

    @r.post("/pause")
    async def pause(body: PauseBody) -> Saved:
        return await service.pause(body)

    @r.post("/snapshot")
    async def snapshot(body: SnapshotBody) -> Saved:
        return await service.snapshot(body)

    @r.post("/resume", status_code=201)
    async def resume(body: ResumeBody) -> m.Handle:
        return await service.resume(body)

    @r.post("/stop", status_code=204)
    async def stop(body: Saved) -> None:
        await service.stop(body)

    @r.post("/discard", status_code=204)
    async def discard(body: Saved) -> None:
        await service.discard(body)

    return r
