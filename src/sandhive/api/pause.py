"""Pause and resume behind E2B's routes (issue 14): `POST /sandboxes/{id}/pause`, `connect`/`resume` of a paused
sandbox, a timeout that pauses (`autoPause`), and auto-resume on the first proxied request (`autoResume`).

Order of side effects, so that a crash leaves a sandbox running or paused and whole: the sandbox leaves the
proxy's directory, the node saves it (its record file written last, `node/container_pause.py`), then the store
says "paused". A server that dies between the last two finds the pause by its directory at start (`recover`).
A resume runs the other way round: the node brings the sandbox back, the store says "running", and only then
is the pause directory deleted. One sandbox's pauses and resumes are serialised by a lock per sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..node.request import CreateRequest, Identity
from ..node.runtime import PauseMode, SavedSandbox
from ..node.saved import read_record
from ..proxy.access import Route
from ..store import SandboxRecord
from . import network
from .errors import not_found
from .quota import TeamQuota
from .schemas import NewSandboxV2
from .views import handle_of

if TYPE_CHECKING:
    from .sandboxes import SandboxService

log = logging.getLogger("sandhive.api")

PAUSED_DIR = "paused"  # under the server's data dir: one directory per paused sandbox


def saved_to_json(saved: SavedSandbox) -> dict[str, Any]:
    return {"directory": str(saved.directory), "mode": saved.mode, "backend": saved.backend, "state": saved.state}


def saved_of(record: SandboxRecord) -> SavedSandbox:
    body = record.saved or {}
    return SavedSandbox(record.sandbox_id, str(body.get("backend", record.backend)), body.get("mode", "memory"),
                        Path(body["directory"]), dict(body.get("state") or {}))


def check_lifecycle(body: NewSandboxV2, pause_modes: tuple[str, ...], backend: str) -> None:
    """400 for a lifecycle this server cannot honour: a sandbox must never be killed when asked to pause."""
    if body.autoPause:
        mode = "filesystem" if body.autoPauseMemory is False else "memory"
        if mode not in pause_modes:
            raise UserError(400, f"autoPause (lifecycle on_timeout='pause') with mode {mode!r} is not supported by "
                                 f"the {backend} backend (see docs/persistence.md)")
    if body.autoResume is not None and body.autoResume.enabled:
        if not body.autoPause:
            raise UserError(400, "autoResume needs autoPause (lifecycle on_timeout='pause')")
        if body.autoPauseMemory is False:
            raise UserError(400, "autoResume cannot be combined with a filesystem-only auto-pause")


class Pauses:
    """The pause half of `SandboxService`: it uses the service's store, node, directory and quotas."""

    def __init__(self, service: SandboxService, limit: int | None) -> None:
        self.s = service
        self.quota = TeamQuota(limit, "paused sandboxes", "team_paused_limit")
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._auto_resume: set[str] = set()  # paused sandboxes a proxied request wakes (no store read per miss)

    @property
    def root(self) -> Path:
        return self.s.settings.data_dir / PAUSED_DIR

    @contextlib.asynccontextmanager
    async def locked(self, sandbox_id: str) -> AsyncIterator[None]:
        lock = self._locks[sandbox_id]
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and not lock._waiters:  # nobody else wants it: forget the lock
                self._locks.pop(sandbox_id, None)

    # ---- pause --------------------------------------------------------------------------------------

    async def pause(self, team_id: str, sandbox_id: str, memory: bool | None) -> None:
        """`POST /sandboxes/{id}/pause`: 204, 409 when paused already, 404 when unknown."""
        await self.s._owned(team_id, sandbox_id)
        await self._pause(team_id, sandbox_id, "filesystem" if memory is False else "memory", explicit=True)

    async def _pause(self, team_id: str, sandbox_id: str, mode: PauseMode, *, explicit: bool) -> None:
        node = self.s.node
        async with self.locked(sandbox_id):
            record = await self.s._owned(team_id, sandbox_id)
            if record.state == "paused":
                raise UserError(409, f"Sandbox {sandbox_id} is already paused", "sandbox_already_paused")
            if node is None or record.backend != node.backend:
                raise UserError(409, f"Sandbox {sandbox_id} runs on the {record.backend} backend, which this server "
                                     "does not run")
            with self.quota.slot(team_id):
                self.s.directory.remove(sandbox_id)  # no new proxied connection while it is saved
                try:
                    saved = await node.pause(handle_of(record), mode, self.root / sandbox_id)
                except BaseException as exc:
                    # Another control-plane replica paused it meanwhile (its node said so): it stays unrouted.
                    if getattr(exc, "error_code", None) != "sandbox_already_paused":
                        self.s.directory.add(record)
                    raise
                await asyncio.to_thread(self.s.store.mark_paused, sandbox_id, saved_to_json(saved))
                self.quota.add(team_id, sandbox_id)
            self.s.quota.remove(team_id, sandbox_id)
            if record.auto_resume:
                self._auto_resume.add(sandbox_id)
        self.s.audit.record(team_id, "sandbox.pause", sandbox_id=sandbox_id, target=sandbox_id,
                            detail={"mode": mode, "atTimeout": not explicit}, system=not explicit)
        log.info("sandbox %s paused (%s%s)", sandbox_id, mode, "" if explicit else ", at its timeout")

    async def pause_at_timeout(self, record: SandboxRecord) -> bool:
        """For the expiry timer: pause a sandbox created with `autoPause`; False when it must be killed instead."""
        if not record.auto_pause:
            return False
        try:
            await self._pause(record.team_id, record.sandbox_id,
                              "memory" if record.auto_pause_memory else "filesystem", explicit=False)
        except UserError as exc:
            if exc.status == 409 and "already paused" in exc.message:
                return True
            log.warning("sandbox %s could not pause at its timeout (%s); killing it", record.sandbox_id, exc.message)
            return False
        return True

    # ---- resume -------------------------------------------------------------------------------------

    async def resume(self, team_id: str, sandbox_id: str, timeout: int, memory: bool | None = None) -> bool:
        """Resume a paused sandbox for `timeout` seconds: True when it was resumed, False when it ran already."""
        node = self.s.node
        async with self.locked(sandbox_id):
            record = await self.s._owned(team_id, sandbox_id)
            if record.state == "running":
                return False
            if node is None or record.backend != node.backend:
                raise UserError(409, f"Sandbox {sandbox_id} was paused on the {record.backend} backend, which this "
                                     "server does not run")
            template = await self.s._template(team_id, record.template_id)
            # Its volumes, so that a node which lost their views (a host reboot) can bind them again.
            request = CreateRequest(template, record.cpu_count, record.memory_mb, record.disk_mb,
                                    record.allow_internet_access, await self.s.volumes.remount(sandbox_id))
            identity = Identity(env_vars=dict(record.env_vars or {}), default_user=template.default_user,
                                default_workdir=template.default_workdir, token_for=self.s._token)
            saved = saved_of(record)
            if memory is False and saved.mode == "memory":  # the SDK's on_resume="reboot": a cold boot on its files
                saved = SavedSandbox(saved.source_id, saved.backend, "filesystem", saved.directory, saved.state)
            with self.s.quota.slot(team_id):
                handle = await node.resume(saved, request, identity)
                self.s.quota.add(team_id, sandbox_id)
            end = self.s.lifetime.deadline(record.started_at, self.s._now(), timeout)
            try:
                if network.has_rules(record.network):  # its slot's rules went with its network at the pause
                    await node.set_egress(handle, network.policy(record.network, record.allow_internet_access))
                await asyncio.to_thread(self.s.store.mark_resumed, sandbox_id, handle.address, dict(handle.state), end)
            except BaseException:
                self.s.quota.remove(team_id, sandbox_id)
                with contextlib.suppress(Exception):
                    await node.kill(handle)
                raise
            self.quota.remove(team_id, sandbox_id)
            self._auto_resume.discard(sandbox_id)
            self.s.directory.add(record, handle.address)
            node.watch(handle, self.s._ended)
            await node.discard_saved(saved)
        self.s.audit.record(team_id, "sandbox.resume", sandbox_id=sandbox_id, target=sandbox_id,
                            detail={"mode": saved.mode, "timeout": timeout})
        log.info("sandbox %s resumed (%s)", sandbox_id, saved.mode)
        return True

    async def resolve(self, sandbox_id: str) -> Route | None:
        """The edge proxy's resolver: a running sandbox's route; for a paused one with auto-resume, a route that
        wakes it (`Route.wake`), so that the proxy checks the request's traffic token before the sandbox resumes."""
        route = await self.s.directory.resolve(sandbox_id)
        if route is not None:
            return route
        if sandbox_id not in self._auto_resume and not await self._paused_elsewhere(sandbox_id):
            return None
        record = await asyncio.to_thread(self.s.store.get_sandbox, sandbox_id)
        if record is None or record.state == "killed":
            self._auto_resume.discard(sandbox_id)
            return None
        return Route("", traffic_token=record.traffic_access_token, wake=lambda: self._wake(record))

    async def _paused_elsewhere(self, sandbox_id: str) -> bool:
        """On a control plane (whose directory reads the store on a miss), a sandbox another replica paused with
        auto-resume: from now on this replica wakes it too."""
        if self.s.directory.load is None:
            return False
        record = await asyncio.to_thread(self.s.store.get_sandbox, sandbox_id)
        if record is None or record.state != "paused" or not record.auto_resume:
            return False
        self._auto_resume.add(sandbox_id)
        return True

    async def _wake(self, record: SandboxRecord) -> Route | None:
        try:
            await self.resume(record.team_id, record.sandbox_id, self.s.settings.default_timeout_seconds)
        except Exception:
            log.exception("auto-resume of sandbox %s failed", record.sandbox_id)
            return None
        return await self.s.directory.resolve(record.sandbox_id)

    # ---- kill and restart ---------------------------------------------------------------------------

    async def kill_paused(self, record: SandboxRecord) -> None:
        """Free a paused sandbox's disk, slot and pause directory (its record is then marked killed)."""
        async with self.locked(record.sandbox_id):
            if self.s.node is not None and record.backend == self.s.node.backend and record.saved:
                await self.s.node.stop_saved(saved_of(record))
            self.quota.remove(record.team_id, record.sandbox_id)
            self._auto_resume.discard(record.sandbox_id)

    def adopt(self, record: SandboxRecord) -> None:
        """After a restart: a paused sandbox counts against its team's quota and wakes on traffic as before."""
        self.quota.add(record.team_id, record.sandbox_id)
        if record.auto_resume:
            self._auto_resume.add(record.sandbox_id)

    async def recover(self, record: SandboxRecord) -> bool:
        """After a restart, before the node reconciles: a "running" sandbox whose pause finished on disk (the
        server died before the store heard of it; a finished dump means its processes are gone) is recorded as
        paused, and `record` updated. True when it was."""
        saved = await asyncio.to_thread(read_record, self.root / record.sandbox_id)
        if saved is None or saved.source_id != record.sandbox_id:
            return False
        if not await asyncio.to_thread(self.s.store.mark_paused, record.sandbox_id, saved_to_json(saved)):
            return False
        record.state, record.saved = "paused", saved_to_json(saved)
        log.warning("sandbox %s was paused when the server stopped; recorded as paused", record.sandbox_id)
        return True


def paused_ids(records: list[SandboxRecord]) -> list[str]:
    return [r.sandbox_id for r in records if r.state == "paused"]


__all__ = ["PAUSED_DIR", "Pauses", "check_lifecycle", "not_found", "paused_ids", "saved_of", "saved_to_json"]
