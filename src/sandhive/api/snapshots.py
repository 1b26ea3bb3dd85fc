"""Snapshots and forks (E2B's `create_snapshot`, `Sandbox.create(<snapshot>)`, `fork`; issue 14).

A snapshot is the node's save of a running sandbox's memory and files (`Runtime.snapshot`; the source runs on,
keeping its id, address and end time), kept under `<data_dir>/snapshots/` and recorded in the store with its
team. In E2B a snapshot is a template, so it is named like one: `<id>:default`, or `<team-slug>/<name>:default`
when it was given a name, started by `POST /sandboxes {templateID: <that>}` and deleted by
`DELETE /templates/<that>`. Each start is a restore into a new sandbox (`Node.restore`: its own id, slot,
writable layer, token, env, entropy).

A fork is a snapshot that nobody sees: taken once, restored `count` times, deleted. Each fork succeeds or
fails on its own, as E2B answers it.

Team rules: another team's snapshot is "not found" wherever it is named; a team's snapshots may hold at most
`Settings.max_snapshot_bytes_per_team` bytes (429 + Retry-After beyond).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import shutil
import string
import uuid
from pathlib import Path
from typing import Any

from ..cluster.models import NODE_ID_KEY
from ..envd import ENVD_VERSION
from ..errors import UserError, report_internal
from ..node.request import CreateRequest, Identity
from ..node.runtime import SavedSandbox, not_supported
from ..store import SandboxRecord, SnapshotRecord
from . import network
from .sandboxes import NO_BACKEND, SandboxService
from .schemas import NewSandboxV2
from .snapshot_schemas import ForkError, ForkResult, SnapshotInfo
from .views import handle_of, sandbox_view

log = logging.getLogger("sandhive.api.snapshots")

TAG = "default"  # the only tag a snapshot has (E2B: `<id>:default`)
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,126}$")
ID_ALPHABET = string.ascii_lowercase + string.digits
FORK_PARALLEL = 4  # restores at once: each is a few hundred ms of CPU (CRIU); more only queue on the cores
QUOTA_RETRY_AFTER_SECONDS = 60


def saved_of(snapshot: SnapshotRecord) -> SavedSandbox:
    """The snapshot's files as the node that holds them knows them (its id in `state` for a remote node)."""
    return SavedSandbox(source_id=snapshot.source_sandbox_id, backend=snapshot.backend, mode="memory",
                        directory=Path(snapshot.directory), state=dict(snapshot.state))


def new_snapshot_id() -> str:
    return "s" + "".join(secrets.choice(ID_ALPHABET) for _ in range(20))


class SnapshotService:
    """The team's snapshots, on top of the sandbox service (its store, node, quota and records)."""

    def __init__(self, sandboxes: SandboxService) -> None:
        self.sandboxes = sandboxes
        self.store = sandboxes.store
        self.root = Path(sandboxes.settings.data_dir) / "snapshots"
        self.max_bytes = sandboxes.settings.max_snapshot_bytes_per_team

    async def start(self) -> None:
        """Server start: remove what a crash left half-made (a `.partial` dump, a fork's snapshot, a dump
        whose record was never written). Recorded snapshots stay: they survive restarts."""
        await asyncio.to_thread(self._sweep)

    def _sweep(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        kept = self.store.snapshot_directories()
        for entry in self.root.iterdir():
            if str(entry) not in kept:
                log.warning("removing %s: a snapshot or fork a previous server did not finish", entry)
                shutil.rmtree(entry, ignore_errors=True)

    # ---- names --------------------------------------------------------------------------------------

    def ref(self, record: SnapshotRecord, slug: str) -> str:
        return f"{slug}/{record.name}:{TAG}" if record.name else f"{record.snapshot_id}:{TAG}"

    def info(self, record: SnapshotRecord, slug: str) -> SnapshotInfo:
        return SnapshotInfo(snapshotID=self.ref(record, slug),
                            names=[f"{slug}/{record.name}:{TAG}"] if record.name else [])

    async def resolve(self, team_id: str, ref: str) -> SnapshotRecord | None:
        """The team's snapshot `ref` names (`<id>`, `<name>`, `<slug>/<name>`, each optionally `:default`);
        None for anything else, another team's snapshots included."""
        base, _, tag = ref.partition(":")
        if tag and tag != TAG:
            return None
        slug, _, name = base.rpartition("/")
        if slug and slug != await asyncio.to_thread(self.store.team_slug_of, team_id):
            return None
        record = None
        if not slug:
            record = await asyncio.to_thread(self.store.get_snapshot, name)
        if record is None and NAME.match(name):
            record = await asyncio.to_thread(self.store.team_snapshot_by_name, team_id, name)
        return record if record is not None and record.team_id == team_id else None

    # ---- create, list, delete -----------------------------------------------------------------------

    def _check_backend(self) -> None:
        node = self.sandboxes.node
        if node is None:
            raise UserError(500, NO_BACKEND, "sandbox_no_compatible_node")
        if not node.runtime.persistence.memory_snapshots:
            raise not_supported(node.backend, "a snapshot with memory")

    async def _take(self, team_id: str, sandbox_id: str, dest: Path) -> tuple[SandboxRecord, SavedSandbox]:
        source = await self.sandboxes._owned(team_id, sandbox_id)
        self._check_backend()
        node = self.sandboxes.node
        assert node is not None
        if source.state != "running" or source.backend != node.backend:
            raise UserError(409, f"sandbox {sandbox_id} is {source.state} on the {source.backend} backend: only a "
                                 f"running sandbox of this server's {node.backend} backend can be snapshotted")
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        return source, await node.snapshot(handle_of(source), dest)

    async def _check_quota(self, team_id: str, adding: int = 0) -> None:
        if self.max_bytes is None:
            return
        used = await asyncio.to_thread(self.store.team_snapshot_bytes, team_id)
        if used + adding > self.max_bytes or (adding == 0 and used >= self.max_bytes):
            raise UserError(429, f"Your team's snapshots would hold {(used + adding) / 2**20:.0f} MiB, over its limit "
                                 f"of {self.max_bytes / 2**20:.0f} MiB on this server; delete snapshots you no longer "
                                 "need (`sandhive snapshot delete`)", "team_snapshot_bytes_limit",
                            headers={"Retry-After": str(QUOTA_RETRY_AFTER_SECONDS)})

    async def create(self, team_id: str, sandbox_id: str, name: str | None, memory: bool | None) -> SnapshotInfo:
        if name is not None and not NAME.match(name):
            raise UserError(400, f"invalid snapshot name {name!r}: lowercase letters, digits, '.', '_' and '-', "
                                 "starting with a letter or digit, at most 127 characters")
        await self.sandboxes._owned(team_id, sandbox_id)  # 404 before anything else
        if memory is False:
            backend = self.sandboxes.backend
            raise not_supported(backend, "a filesystem-only snapshot (memory: false)")
        await self._check_quota(team_id)
        snapshot_id = new_snapshot_id()
        dest = self.root / snapshot_id
        source, saved = await self._take(team_id, sandbox_id, dest)
        old = await asyncio.to_thread(self.store.team_snapshot_by_name, team_id, name) if name else None
        try:
            size = int(saved.state.get("bytes", 0))
            await self._check_quota(team_id, size)
            record = SnapshotRecord(
                snapshot_id=snapshot_id, team_id=team_id, name=name, source_sandbox_id=sandbox_id,
                template_id=source.template_id, backend=saved.backend, directory=str(saved.directory), bytes=size,
                state=dict(saved.state), cpu_count=source.cpu_count, memory_mb=source.memory_mb,
                disk_mb=source.disk_mb, allow_internet_access=source.allow_internet_access,
                env_vars=dict(source.env_vars or {}), meta=dict(source.meta or {}),
                created_at=self.sandboxes._now())
            replaced = await asyncio.to_thread(self.store.add_snapshot, record)
        except BaseException:
            await self._discard(saved)
            raise
        if replaced:
            await self._discard(saved_of(old) if old is not None and old.directory == replaced
                                else SavedSandbox(sandbox_id, saved.backend, "memory", Path(replaced)))
        self.sandboxes.audit.record(team_id, "snapshot.create", sandbox_id=sandbox_id, target=snapshot_id,
                                    detail={"name": name, "bytes": size})
        slug = await asyncio.to_thread(self.store.team_slug_of, team_id)
        return self.info(record, slug)

    async def list_page(self, team_id: str, sandbox_id: str | None, name: str | None, limit: int,
                   next_token: str | None) -> tuple[list[SnapshotInfo], str | None]:
        if name:
            name = name.rpartition("/")[2].partition(":")[0]
        try:
            records, token = await asyncio.to_thread(self.store.list_snapshots, team_id, sandbox_id=sandbox_id,
                                                     name=name, limit=limit, cursor=next_token)
        except ValueError as exc:
            raise UserError(400, f"Invalid nextToken: {exc}") from exc
        slug = await asyncio.to_thread(self.store.team_slug_of, team_id)
        return [self.info(r, slug) for r in records], token

    async def delete(self, team_id: str, ref: str) -> bool:
        """Delete the team's snapshot `ref`; False if it names none (the caller may try a template)."""
        record = await self.resolve(team_id, ref)
        if record is None:
            return False
        gone = await asyncio.to_thread(self.store.delete_snapshot, record.snapshot_id)
        if gone is not None:
            await self._discard(saved_of(gone))
        self.sandboxes.audit.record(team_id, "snapshot.delete", sandbox_id=record.source_sandbox_id,
                                    target=record.snapshot_id, detail={"name": record.name})
        return True

    async def _discard(self, saved: SavedSandbox) -> None:
        """Delete a snapshot's files: on the node that holds them (a remote node: a lost one keeps them, said in
        the log), or here."""
        node = self.sandboxes.node
        if node is None or not saved.state.get(NODE_ID_KEY):
            await asyncio.to_thread(shutil.rmtree, saved.directory, True)
            return
        try:
            await node.discard_saved(saved)
        except UserError as exc:
            log.warning("snapshot files %s on node %s were not deleted: %s", saved.directory,
                        saved.state.get(NODE_ID_KEY), exc.message)

    async def check_template_unused(self, template_id: str) -> None:
        """A template whose rootfs snapshots still stand on may not be deleted (their restores need it)."""
        count = await asyncio.to_thread(self.store.snapshots_of_template, template_id)
        if count:
            raise UserError(409, f"{count} snapshot{'s' if count > 1 else ''} of sandboxes of template "
                                 f"'{template_id}' exist: delete them first (`sandhive snapshot list`)")

    # ---- starting from a snapshot -------------------------------------------------------------------

    async def start_from(self, team_id: str, snapshot: SnapshotRecord, body: NewSandboxV2) -> SandboxRecord:
        """`POST /sandboxes {templateID: <snapshot>}`: a new sandbox restored from the team's snapshot."""
        self._check_backend()
        timeout = body.timeout if body.timeout is not None else self.sandboxes.settings.default_timeout_seconds
        self.sandboxes.lifetime.check_timeout(timeout)
        saved = saved_of(snapshot)
        slug = await asyncio.to_thread(self.store.team_slug_of, team_id)
        internet = snapshot.allow_internet_access if body.allow_internet_access is None else body.allow_internet_access
        return await self._restore(team_id, saved, template_id=snapshot.template_id, cpu=snapshot.cpu_count,
                                   memory=snapshot.memory_mb, disk=snapshot.disk_mb, internet=internet,
                                   env={**(snapshot.env_vars or {}), **(body.envVars or {})},
                                   meta=dict(body.metadata or {}), timeout=timeout,
                                   alias=self.ref(snapshot, slug), net=network.stored(body.network))

    async def _restore(self, team_id: str, saved: SavedSandbox, *, template_id: str, cpu: int, memory: int,
                       disk: int, internet: bool, env: dict[str, str], meta: dict[str, str], timeout: int,
                       alias: str | None, net: dict[str, Any] | None) -> SandboxRecord:
        svc = self.sandboxes
        node = svc.node
        if node is None or svc.templates is None:
            raise UserError(500, NO_BACKEND, "sandbox_no_compatible_node")
        if saved.backend != node.backend:
            raise not_supported(node.backend, f"a restore of a {saved.backend} snapshot")
        try:
            template = await svc.templates.resolve(template_id)
        except LookupError:
            raise UserError(404, f"the template '{template_id}' this snapshot was taken from is gone") from None
        request = CreateRequest(template, cpu, memory, disk, internet)
        identity = Identity(env_vars=env, default_user=template.default_user,
                            default_workdir=template.default_workdir, token_for=svc._token)
        with svc.quota.slot(team_id):
            handle = await node.restore(saved, request, identity, svc._token(saved.source_id))
            svc.quota.add(team_id, handle.sandbox_id)
        now = svc._now()
        record = SandboxRecord(
            sandbox_id=handle.sandbox_id, team_id=team_id, template_id=template.template_id, alias=alias,
            client_id=str(handle.state.get(NODE_ID_KEY) or svc.settings.client_id), state="running", started_at=now,
            end_at=svc.lifetime.deadline(now, now, timeout), meta=meta, env_vars=env, cpu_count=cpu,
            memory_mb=memory, disk_mb=disk, envd_version=ENVD_VERSION, envd_access_token=svc._token(handle.sandbox_id),
            allow_internet_access=internet, backend=handle.backend, address=handle.address,
            runtime_state=dict(handle.state), network=net, traffic_access_token=network.new_traffic_token(net))
        try:
            if network.has_rules(net):
                await node.set_egress(handle, network.policy(net, internet))
            await asyncio.to_thread(self.store.add_sandbox, record)
        except BaseException:
            svc.quota.remove(team_id, handle.sandbox_id)
            await node.kill(handle)
            raise
        svc.directory.add(record)
        node.watch(handle, svc._ended)
        return record

    # ---- fork ---------------------------------------------------------------------------------------

    async def fork(self, team_id: str, sandbox_id: str, timeout: int | None, count: int) -> list[ForkResult]:
        """`count` new sandboxes from one snapshot of `sandbox_id`, which runs on (same id, same end time)."""
        svc = self.sandboxes
        seconds = timeout if timeout is not None else svc.settings.default_timeout_seconds
        svc.lifetime.check_timeout(seconds)
        dest = self.root / f"fork-{uuid.uuid4().hex}"
        saved: SavedSandbox | None = None
        try:
            source, saved = await self._take(team_id, sandbox_id, dest)
            gate = asyncio.Semaphore(FORK_PARALLEL)

            async def one() -> SandboxRecord:
                async with gate:
                    return await self._restore(
                        team_id, saved, template_id=source.template_id, cpu=source.cpu_count,
                        memory=source.memory_mb, disk=source.disk_mb, internet=source.allow_internet_access,
                        env=dict(source.env_vars or {}), meta=dict(source.meta or {}), timeout=seconds,
                        alias=source.alias, net=source.network)

            outcomes = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
        finally:
            await asyncio.to_thread(shutil.rmtree, dest, True)
            if saved is not None:
                await self._discard(saved)
        results = []
        for outcome in outcomes:
            if isinstance(outcome, SandboxRecord):
                results.append(ForkResult(sandbox=sandbox_view(outcome)))
            elif isinstance(outcome, UserError):
                results.append(ForkResult(error=ForkError(code=outcome.status, message=outcome.message)))
            elif isinstance(outcome, Exception):
                message = report_internal(log, outcome, f"forking sandbox {sandbox_id}")
                results.append(ForkResult(error=ForkError(code=500, message=message)))
            else:
                raise outcome
        return results

