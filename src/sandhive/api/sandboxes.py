"""The sandbox lifecycle behind the REST routes: create, connect, timeouts, kill, expiry, reconcile.

It owns the rules (E2B's) and the order of side effects: the node starts a sandbox before the store
records it, and the store forgets it only after the node stopped it. A server that dies in between
leaves an orphan that the next start's `reconcile` stops; it never leaves a record of nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from ..cluster.models import NODE_ID_KEY, cluster_secret
from ..envd import ENVD_VERSION
from ..errors import UserError
from ..node.admission import Resources
from ..node.egress_audit import EgressEntry
from ..node.metrics_history import Sample
from ..node.node import LogNote, Node, host_ca_bundle
from ..node.request import CreateRequest, Identity
from ..node.runtime import SandboxHandle, TemplateImage
from ..store import ClaimOutcome, SandboxQuery, SandboxRecord, SnapshotRecord, Store
from ..store.store import now_utc
from ..templates.catalog import TemplateCatalog
from . import network
from .audit import AuditLog
from .directory import SandboxDirectory
from .errors import not_found
from .lifetime import Lifetime
from .pause import Pauses, check_lifecycle
from .quota import TeamQuota
from .schemas import (
    ConnectSandbox,
    ListedSandbox,
    NewSandboxV2,
    Sandbox,
    SandboxDetail,
    SandboxLog,
    SandboxLogEntry,
    SandboxLogs,
    SandboxMetric,
    SandboxNetworkUpdate,
)
from .settings import Settings
from .templates import TemplateResolver
from .tokens import access_token, load_secret
from .views import detail_view, handle_of, listed_view, sandbox_view, saved_handle, with_error
from .volumes import VolumeService

log = logging.getLogger("sandhive.api")

DEFAULT_REFRESH_SECONDS = 15  # E2B's default for POST /sandboxes/{id}/refreshes without a duration
IDEMPOTENCY_WAIT_SECONDS = 60.0  # how long a retry waits for the first request with its key to finish
NO_BACKEND = "This server runs no sandbox backend (it was started with --backend none)"


def request_hash(version: str, body: NewSandboxV2) -> str:
    """What "the same request" means for an Idempotency-Key: the same endpoint and the same fields."""
    canonical = json.dumps({"v": version, "body": body.model_dump(mode="json", exclude_unset=True)}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def note_entry(note: LogNote) -> SandboxLogEntry:
    """Something done for the create before the sandbox ran (a template pulled), stamped with when it began: it
    comes first in the sandbox's logs."""
    return SandboxLogEntry(timestamp=datetime.fromtimestamp(note.time, UTC), message=note.message,
                           fields=dict(note.fields))


def egress_entry(entry: EgressEntry) -> SandboxLogEntry:
    """An egress audit entry as E2B's structured log entry (`fields` hold its parts, as text)."""
    where = f"{entry.destination}:{entry.port}" if entry.port is not None else entry.destination
    name = f" ({entry.domain})" if entry.domain else ""
    reason = f": {entry.reason}" if entry.reason else ""
    return SandboxLogEntry(timestamp=datetime.fromtimestamp(entry.time, UTC),
                           message=f"egress {entry.verdict}: {entry.protocol} {where}{name}{reason}",
                           level="warn" if entry.verdict == "denied" else "info",
                           fields={"logger": "egress", **{k: str(v) for k, v in entry.to_json().items()
                                                          if k != "time"}})


def metric_of(sample: Sample) -> SandboxMetric:
    """One sample of the node's metrics history in E2B's shape."""
    usage, when = sample.usage, datetime.fromtimestamp(sample.time, UTC)
    return SandboxMetric(timestamp=when, timestampUnix=int(sample.time), cpuCount=usage.cpu_count,
                         cpuUsedPct=usage.cpu_used_pct, memUsed=usage.mem_used, memTotal=usage.mem_total,
                         memCache=usage.mem_cache, diskUsed=usage.disk_used, diskTotal=usage.disk_total)


def _unsupported(body: NewSandboxV2) -> str | None:
    """The first requested feature this server cannot honour. Refusing beats silently ignoring it (a
    denyOut rule that is not enforced, or a sandbox killed when it was asked to pause)."""
    key = network.unsupported(body.network)
    if key:
        return f"network.{key} (an upstream SOCKS5 egress proxy)"
    if body.mcp:
        return "mcp"
    if body.iam:
        return "iam"
    return None


class SnapshotStarts(Protocol):
    """What a create asks of the snapshot service (`api/snapshots.py`): is `templateID` one of the team's
    snapshots, and if so, a sandbox restored from it."""

    async def resolve(self, team_id: str, ref: str) -> SnapshotRecord | None: ...

    async def start_from(self, team_id: str, snapshot: SnapshotRecord, body: NewSandboxV2) -> SandboxRecord: ...


class SandboxService:
    """Sandboxes of every team on this server: the store's records and the node's processes, kept in step."""

    def __init__(self, settings: Settings, store: Store, node: Node | None, templates: TemplateResolver | None,
                 clock: Callable[[], datetime] = now_utc):
        """`clock` (the wall clock deadlines are measured on) is for tests: expiry without waiting."""
        self.settings = settings
        self._now = clock
        self.store = store
        self.node = node
        self.templates = templates
        self.catalog: TemplateCatalog | None = None  # team-scoped names; set by create_app
        self.snapshots: SnapshotStarts | None = None  # `templateID` may name a snapshot; set by create_app
        self.lifetime = Lifetime(settings.max_lifetime_seconds)
        self.directory = SandboxDirectory()
        self.directory.cluster_token = settings.cluster_token  # sandboxes on remote nodes: via their node's proxy
        if settings.cluster_token:  # replicas share the store: any of them routes any sandbox
            self.directory.load = store.get_sandbox
        self.quota = TeamQuota(settings.max_sandboxes_per_team)
        self.pauses = Pauses(self, settings.max_paused_per_team)
        self._secret = b""
        self._ca_bundle: str | None = None
        self.volumes = VolumeService(settings, store)
        self.volumes.node_of = lambda: self.node  # remote nodes keep volumes on a control plane
        self.started: Counter[str] = Counter()  # sandboxes created per team since start (team metrics)
        self.audit = AuditLog(store, enabled=settings.audit, retention_days=settings.audit_retention_days)

    @property
    def backend(self) -> str:
        return self.node.backend if self.node else "none"

    async def start(self) -> None:
        """Server start: schema up to date, secret loaded, and the store reconciled with what really runs."""
        await asyncio.to_thread(self.store.migrate)
        # Replicas of a control plane and their nodes derive access tokens from one secret (cluster/models.py).
        self._secret = (cluster_secret(self.settings.cluster_token) if self.settings.cluster_token
                        else await asyncio.to_thread(load_secret, self.settings.data_dir))
        self._ca_bundle = await asyncio.to_thread(host_ca_bundle, self.settings.trust_host_ca)
        if self.node is not None:  # before any pause, resume or restore (a microvm's envd already holds its token)
            self.node.use_tokens(self._token)
        await self.reconcile()
        self.audit.start()
        if self.node is not None:  # pools start after reconcile removed an old server's pooled sandboxes
            await self.node.start(ca_bundle=self._ca_bundle, prewarm=await self._prewarm())

    async def _prewarm(self) -> list[CreateRequest]:
        """Pools kept warm from the start: `base` (the SDKs' default) and every template given its own pool
        size, if built (a template built on first use gets its pool on first use)."""
        if self.templates is None or self.node is None:
            return []
        wanted = {"base"} | {t for t, size in self.node.pools.settings.sizes.items() if size > 0}
        built = {info.id for info in await asyncio.to_thread(self.templates.list)}
        requests = []
        for name in sorted(wanted & built):
            try:
                requests.append(CreateRequest.of(await self.templates.resolve(name)))
            except Exception as exc:
                log.warning("not warming a pool for template %s: %s", name, exc)
        return requests

    async def reconcile(self) -> None:
        live = await asyncio.to_thread(self.store.live_sandboxes)
        if self.node is None:  # nothing to ask; the records stand until a server with a backend starts
            for record in live:
                self.directory.add(record)
            return
        for record in live:  # a pause that finished on disk while the server died is a pause (pause.py)
            if record.state == "running" and record.backend == self.node.backend:
                await self.pauses.recover(record)
        mine = [r for r in live if r.backend == self.node.backend and r.state == "running"]
        paused = [r for r in live if r.state == "paused"]
        alive = await self.node.reconcile([handle_of(r) for r in mine],
                                          {r.sandbox_id: Resources(r.memory_mb, r.cpu_count) for r in mine},
                                          paused=[r.sandbox_id for r in paused])
        for record in paused:  # files on this node's disk: kept whatever the backend, resumed on demand
            self.pauses.adopt(record)
        for record in live:
            if record.state == "paused":
                continue
            if record.sandbox_id in alive:
                self.directory.add(record)
                self.quota.add(record.team_id, record.sandbox_id)
                self.node.watch(handle_of(record), self._ended)
                continue
            if record.backend == self.node.backend:
                log.warning("sandbox %s did not survive the restart; marking it killed", record.sandbox_id)
            else:
                log.warning("sandbox %s belongs to the %s backend, which this server does not run; marking it "
                            "killed", record.sandbox_id, record.backend)
            await asyncio.to_thread(self.store.mark_killed, record.sandbox_id)

    # ---- create -------------------------------------------------------------------------------------

    async def create(self, team_id: str, body: NewSandboxV2, version: str, idempotency_key: str | None) -> Sandbox:
        """Create a sandbox, or with an Idempotency-Key answer what the first request with it answered."""
        if not idempotency_key:
            return sandbox_view(await self._create(team_id, body))
        digest = request_hash(version, body)
        deadline = time.monotonic() + IDEMPOTENCY_WAIT_SECONDS
        while True:
            claim = await asyncio.to_thread(self.store.claim_idempotency, team_id, idempotency_key, digest)
            if claim.outcome is ClaimOutcome.CLAIMED:
                break
            if claim.outcome is ClaimOutcome.REPLAY:
                return Sandbox(**(claim.response or {}))
            if claim.outcome is ClaimOutcome.MISMATCH:
                raise UserError(409, "Idempotency-Key was already used with a different request",
                               "idempotency_request_mismatch")
            if time.monotonic() > deadline:
                raise UserError(409, "A request with this Idempotency-Key is still in progress",
                               "idempotency_in_progress")
            await asyncio.sleep(0.2)
        try:
            view = sandbox_view(await self._create(team_id, body))
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.release_idempotency, team_id, idempotency_key)
            raise
        await asyncio.to_thread(self.store.finish_idempotency, team_id, idempotency_key, view.sandboxID,
                                view.model_dump(mode="json"))
        return view

    async def _create(self, team_id: str, body: NewSandboxV2) -> SandboxRecord:
        feature = _unsupported(body)
        if feature:
            raise UserError(400, f"{feature} is not supported by this server")
        check_lifecycle(body, self.node.runtime.persistence.pause_modes if self.node else (), self.backend)
        if self.snapshots is not None:  # a snapshot is a template in E2B: `Sandbox.create(snapshot_id)`
            snapshot = await self.snapshots.resolve(team_id, body.templateID)
            if snapshot is not None:
                return await self.snapshots.start_from(team_id, snapshot, body)
        timeout = body.timeout if body.timeout is not None else self.settings.default_timeout_seconds
        self.lifetime.check_timeout(timeout)
        if self.node is None:
            raise UserError(500, NO_BACKEND, "sandbox_no_compatible_node")
        template = await self._template(team_id, body.templateID)
        allow_internet = True if body.allow_internet_access is None else body.allow_internet_access
        net = network.stored(body.network)
        env = {**template.env, **(body.envVars or {})}
        volumes = await self.volumes.mounts_for(team_id, self.node.backend, body.volumeMounts)
        request = CreateRequest.of(template, allow_internet, volumes)
        identity = Identity(env_vars=env, default_user=template.default_user,
                            default_workdir=template.default_workdir, token_for=self._token)
        with self.quota.slot(team_id):
            # The node's user errors (host full, backend mismatch, a failing start command) reach the client as
            # they are; anything else is internal (api/errors.py logs it with an id and answers a generic 500).
            handle = await self.node.create(request, identity)
            sandbox_id = handle.sandbox_id
            self.quota.add(team_id, sandbox_id)
        token = self._token(sandbox_id)
        now = self._now()
        record = SandboxRecord(
            sandbox_id=sandbox_id, team_id=team_id, template_id=template.template_id,
            alias=body.templateID if body.templateID != template.template_id else None,
            client_id=str(handle.state.get(NODE_ID_KEY) or self.settings.client_id), state="running", started_at=now,
            end_at=self.lifetime.deadline(now, now, timeout), meta=dict(body.metadata or {}), env_vars=env,
            cpu_count=request.cpu_count, memory_mb=request.memory_mb, disk_mb=request.disk_mb,
            envd_version=ENVD_VERSION,
            envd_access_token=token, allow_internet_access=allow_internet, backend=handle.backend,
            address=handle.address, runtime_state=dict(handle.state), auto_pause=bool(body.autoPause),
            auto_pause_memory=body.autoPauseMemory is not False,
            auto_resume=bool(body.autoResume is not None and body.autoResume.enabled),
            network=net, traffic_access_token=network.new_traffic_token(net))
        try:
            if network.has_rules(net):  # before the caller gets the sandbox: its first command is judged already
                await self.node.set_egress(handle, network.policy(net, allow_internet))
            await asyncio.to_thread(self.store.add_sandbox, record)
            await self.volumes.record(sandbox_id, volumes)
        except BaseException:
            self.quota.remove(team_id, sandbox_id)
            with contextlib.suppress(Exception):
                await self.node.kill(handle)
            raise
        self.directory.add(record)
        self.node.watch(handle, self._ended)
        self.started[team_id] += 1
        self.audit.record(team_id, "sandbox.create", sandbox_id=sandbox_id, target=sandbox_id,
                          detail={"template": body.templateID, "timeout": timeout, "internet": allow_internet})
        return record

    async def update_network(self, team_id: str, sandbox_id: str, update: SandboxNetworkUpdate) -> None:
        """`PUT /sandboxes/{id}/network`: replace the egress rules at once (omitted fields are cleared). New
        connections follow them immediately and established ones they deny are cut. A paused sandbox keeps
        them for its resume."""
        async with self.pauses.locked(sandbox_id):
            record = await self._owned(team_id, sandbox_id)
            net = network.updated(record.network, update.model_dump())
            internet = update.allow_internet_access is not False
            if record.state == "running":
                if self.node is None or record.backend != self.node.backend:
                    raise UserError(409, f"Sandbox {sandbox_id} runs on the {record.backend} backend, which this "
                                         "server does not run")
                await self.node.set_egress(handle_of(record), network.policy(net, internet))
            await asyncio.to_thread(self.store.set_network, sandbox_id, net, internet)
        self.audit.record(team_id, "sandbox.network", sandbox_id=sandbox_id, target=sandbox_id,
                          detail={"network": net, "allow_internet_access": internet})
        log.info("sandbox %s network updated", sandbox_id)

    @staticmethod
    def view(record: SandboxRecord) -> Sandbox:
        return sandbox_view(record)

    def _token(self, sandbox_id: str) -> str:
        return access_token(self._secret, sandbox_id)

    async def _template(self, team_id: str, name: str) -> TemplateImage:
        """The template `name` means to the team (its own, a built-in, or a public one: `templates.catalog`);
        another team's private template is "not found", exactly as a name nobody has."""
        if self.templates is None:
            raise UserError(500, "This server has no template registry", "sandbox_create_failed")
        try:
            if self.catalog is not None:
                return await self.catalog.resolve(team_id, name)
            return await self.templates.resolve(name)
        except LookupError:
            raise UserError(404, f"template '{name}' not found") from None

    # ---- one sandbox --------------------------------------------------------------------------------

    async def _owned(self, team_id: str, sandbox_id: str, *, live: bool = True) -> SandboxRecord:
        """The team's sandbox; 404 for unknown ids, other teams' sandboxes and (if `live`) killed ones."""
        record = await asyncio.to_thread(self.store.get_sandbox, sandbox_id)
        if record is None or record.team_id != team_id or (live and record.state == "killed"):
            raise not_found(sandbox_id)
        return record

    async def info(self, team_id: str, sandbox_id: str) -> SandboxDetail:
        record = await self._owned(team_id, sandbox_id)
        return with_error(detail_view(record), self._lost_message(record))

    def _lost_message(self, record: SandboxRecord) -> str | None:
        """Why a sandbox is in an error state, or None: its node (a control plane's remote node, or the node that
        holds a paused sandbox's files; cluster/remote_node.py) has stopped answering, or restarted and has not
        re-adopted its sandboxes yet."""
        node_trouble = getattr(self.node, "node_trouble", None)
        if node_trouble is None or record.state == "killed":
            return None
        trouble = node_trouble(handle_of(record) if record.state == "running" else saved_handle(record))
        if not trouble:
            return None
        return f"Sandbox {record.sandbox_id} is in an error state: {trouble}; it is unavailable until the node is back"

    def _check_node(self, record: SandboxRecord) -> None:
        """A sandbox whose node is lost is in an error state: calls to it are refused at once with a 502, never
        a hang."""
        message = self._lost_message(record)
        if message:
            raise UserError(502, message, "node_lost")

    async def connect(self, team_id: str, sandbox_id: str, body: ConnectSandbox) -> tuple[Sandbox, bool]:
        """Connect to a sandbox, resuming it if paused (True: it was); a running sandbox's deadline only moves
        later, never earlier."""
        record = await self._owned(team_id, sandbox_id)
        self._check_node(record)
        timeout = body.timeout if body.timeout is not None else self.settings.default_timeout_seconds
        self.lifetime.check_timeout(timeout)
        if record.state == "paused" and await self.pauses.resume(team_id, sandbox_id, timeout, body.memory):
            self.audit.record(team_id, "sandbox.connect", sandbox_id=sandbox_id, target=sandbox_id,
                              detail={"resumed": True, "timeout": timeout})
            return sandbox_view(await self._owned(team_id, sandbox_id)), True
        await self._extend(record, timeout)
        self.audit.record(team_id, "sandbox.connect", sandbox_id=sandbox_id, target=sandbox_id,
                          detail={"resumed": False, "timeout": timeout})
        return sandbox_view(record), False

    async def refresh(self, team_id: str, sandbox_id: str, duration: int | None) -> None:
        seconds = DEFAULT_REFRESH_SECONDS if duration is None else duration
        self.lifetime.check_refresh(seconds)
        await self._extend(await self._owned(team_id, sandbox_id), seconds)

    async def set_timeout(self, team_id: str, sandbox_id: str, seconds: int) -> None:
        """Overwrite the deadline with now + `seconds`; this may end the sandbox sooner than before."""
        self.lifetime.check_timeout(seconds)
        record = await self._owned(team_id, sandbox_id)
        await self._set_end(record, self.lifetime.deadline(record.started_at, self._now(), seconds))

    async def _extend(self, record: SandboxRecord, seconds: int) -> None:
        end = self.lifetime.deadline(record.started_at, self._now(), seconds)
        if end > record.end_at:
            await self._set_end(record, end)

    async def _set_end(self, record: SandboxRecord, end: datetime) -> None:
        if not await asyncio.to_thread(self.store.set_end_at, record.sandbox_id, end):
            raise not_found(record.sandbox_id)
        record.end_at = end

    async def kill(self, team_id: str, sandbox_id: str) -> None:
        record = await self._owned(team_id, sandbox_id)
        if record.state == "paused":
            await self.pauses.kill_paused(record)
        else:
            await self._stop(record)
        await self._forget(record)
        self.audit.record(team_id, "sandbox.kill", sandbox_id=sandbox_id, target=sandbox_id,
                          detail={"state": record.state})

    async def metrics(self, team_id: str, sandbox_id: str, start: int | None, end: int | None) -> list[SandboxMetric]:
        """The node's samples of the sandbox (node/metrics_history.py) with `start <= time <= end` (unix seconds,
        each bound optional), oldest first; a paused sandbox's samples end where it was paused."""
        await self._owned(team_id, sandbox_id, live=False)
        if self.node is None:
            return []
        await self.node.history.first_sample([sandbox_id])
        # Compared as on the wire, in whole seconds: a sample at 12.7 s is "at 12" and inside `end=12`.
        return [metric_of(s) for s in self.node.history.samples(sandbox_id)
                if (start is None or int(s.time) >= start) and (end is None or int(s.time) <= end)]

    async def logs(self, team_id: str, sandbox_id: str, start_ms: int | None, limit: int) -> SandboxLogs:
        """The sandbox's own log lines (the newest `limit`), stamped with the time they were read."""
        record = await self._owned(team_id, sandbox_id, live=False)
        now = self._now()
        too_early = start_ms is not None and now.timestamp() * 1000 < start_ms
        if record.state == "killed" or self.node is None or too_early:
            return SandboxLogs(logs=[], logEntries=[])
        handle = handle_of(record)
        lines = await self.node.logs(handle)
        entries = [SandboxLogEntry(timestamp=now, message=line) for line in lines]
        since = (start_ms or 0) / 1000
        entries += [note_entry(n) for n in self.node.create_log(handle) if n.time >= since]
        entries += [egress_entry(e) for e in await self.node.egress_entries(handle) if e.time >= since]
        entries.sort(key=lambda entry: entry.timestamp)
        entries = entries[-limit:] if limit else []
        return SandboxLogs(logs=[SandboxLog(timestamp=e.timestamp, line=e.message) for e in entries],
                           logEntries=entries)

    # ---- many sandboxes -----------------------------------------------------------------------------

    async def list_sandboxes(self, team_id: str, query: SandboxQuery) -> tuple[list[ListedSandbox], str | None]:
        try:
            records, next_token = await asyncio.to_thread(self.store.list_sandboxes, team_id, query)
        except ValueError as exc:
            raise UserError(400, f"Invalid nextToken: {exc}") from exc
        return [with_error(listed_view(r), self._lost_message(r)) for r in records], next_token

    async def expire_due(self) -> None:
        """Kill every running sandbox whose deadline has passed."""
        due = await asyncio.to_thread(self.store.expired_sandboxes, self._now())
        if due:
            await asyncio.gather(*(self._expire(record) for record in due))

    async def _expire(self, record: SandboxRecord) -> None:
        if await self.pauses.pause_at_timeout(record):
            return
        try:
            await self._stop(record)
        except UserError as exc:  # e.g. its node is lost (cluster/remote_node.py): said once a second, no trace
            log.warning("stopping expired sandbox %s failed (%s); will retry", record.sandbox_id, exc.message)
            return
        except Exception:
            log.exception("stopping expired sandbox %s failed; will retry", record.sandbox_id)
            return
        await self._forget(record)
        self.audit.record(record.team_id, "sandbox.timeout", sandbox_id=record.sandbox_id, target=record.sandbox_id,
                          detail={"endAt": record.end_at.isoformat()}, system=True)

    async def _ended(self, handle: SandboxHandle, reason: str) -> None:
        """A sandbox died by itself (the node noticed within moments): free what it held and stop listing it,
        as E2B does (killed: 404 on GET, gone from lists, the SDK's `is_running()` false)."""
        record = await asyncio.to_thread(self.store.get_sandbox, handle.sandbox_id)
        if record is None or record.state == "killed":
            return
        log.warning("sandbox %s of team %s died (%s); marking it killed and freeing its resources",
                    record.sandbox_id, record.team_id, reason)
        try:
            await self._stop(record)
        except Exception:
            log.exception("freeing dead sandbox %s failed", record.sandbox_id)
        await self._forget(record)
        self.audit.record(record.team_id, "sandbox.end", sandbox_id=record.sandbox_id, target=record.sandbox_id,
                          detail={"reason": reason}, system=True)

    async def _stop(self, record: SandboxRecord) -> None:
        """Stop the sandbox, taking it off the proxy first: while it dies, its ports answer E2B's "sandbox was
        not found" (the SDK's SandboxNotRunning), never "port is not open". If stopping fails it is still
        there, so it is routed again."""
        self.directory.remove(record.sandbox_id)
        try:
            if self.node is not None and record.backend == self.node.backend:
                await self.node.kill(handle_of(record))
        except BaseException:
            if record.address:
                self.directory.add(record)
            raise

    async def _forget(self, record: SandboxRecord) -> None:
        self.directory.remove(record.sandbox_id)
        self.quota.remove(record.team_id, record.sandbox_id)
        await asyncio.to_thread(self.store.mark_killed, record.sandbox_id)

    async def close(self) -> None:
        if self.node is not None:
            await self.node.close()
        await self.audit.close()  # after the node: what its shutdown recorded is written too
        await asyncio.to_thread(self.store.close)
