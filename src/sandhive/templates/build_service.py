"""Template builds through the API: E2B's register → upload → start → poll flow (docs/wire.md §2.6).

`POST /v3/templates` registers a build of a template (the template is created on its first build, gets a
random id, and belongs to the registering team under that name; the same name again is a new build of it).
Names are per team (`catalog.TemplateCatalog` says what a name means to a team); quotas are `quotas`.
COPY sources are uploaded per files hash (`uploads`). `POST /v2/templates/{id}/builds/{buildID}` turns the
SDK's steps into a Dockerfile (`templates.steps`), or takes a Dockerfile directly (Sandhive's extension),
checks it, and queues the build; the build itself (`templates.builder.build_template`, buildah) runs in a
thread, one at a time per template and `MAX_PARALLEL_BUILDS` at once, while clients poll its status and log.

Build records live in the store; log lines in `<data_dir>/template-builds/<buildID>.jsonl` (`build_logs`).
Builds run inside the server process, so a server that stops ends them: a restart marks them failed.
On a control plane with remote nodes, every step works through any replica (`build_sharing`): uploads go to the
template registry, log lines to the store, and only stale builds of stopped replicas are marked failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import stat
import string
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from ..envd import ENVD_VERSION
from ..errors import UserError, report_internal
from ..node.telemetry import BUILD_BUCKETS, Histogram
from ..store import Store, TemplateBuildRecord
from ..store.store import now_utc
from .build_logs import BuildLog, BuildLogs, logs_dir
from .build_steps import StepMap
from .catalog import Found, TemplateCatalog
from .info import TemplateInfo
from .quotas import TeamTemplateQuota, TemplateQuotas
from .schemas import (
    AssignedTemplateTags,
    BuildLogEntry,
    BuildStatus,
    BuildStatusReason,
    TemplateAliasResponse,
    TemplateBuild,
    TemplateBuildFileUpload,
    TemplateBuildInfo,
    TemplateBuildRequestV3,
    TemplateBuildStartV2,
    TemplateRequestResponseV3,
    TemplateTag,
    TemplateWithBuilds,
)
from .uploads import UploadedFiles, check_hash

if TYPE_CHECKING:
    from ..api.settings import Settings
    from ..node.node import Node
    from .build_sharing import BuildSharing
    from .builder import BuildRequest
    from .oci_registry import TemplateRegistryRef

log = logging.getLogger("sandhive.api.templates")
T = TypeVar("T")

MAX_PARALLEL_BUILDS = 2  # builds are CPU- and disk-heavy; more queue ("waiting")
DEFAULT_CPU, DEFAULT_MEMORY_MB, DEFAULT_DISK_MB = 2, 1024, 4096  # E2B's template defaults (disk: Sandhive's)
STALE_UPLOAD_SECONDS = 7 * 86400  # uploaded files no build used for a week are deleted at start
REASON_TAIL = 12  # log lines a failed build's reason carries
ENDED = "the server stopped while this build was running: start the build again"
BASE_NAMES = ("base", "e2bdev/base", "e2bdev/code-interpreter")  # FROMs that need the built-in `base` template
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}(/[a-z0-9][a-z0-9._-]{0,62})?")
TAG_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
DEFAULT_TAG = "default"
_ID_ALPHABET = string.ascii_lowercase + string.digits
NO_REGISTRY = "This server has no template registry (it runs with --backend none): it cannot build templates"


class Templates(Protocol):
    """What builds need of the template registry (`templates.registry.TemplateRegistry`)."""

    cache_dir: Path | None

    async def resolve(self, name: str) -> Any: ...
    def get(self, name: str) -> TemplateInfo | None: ...
    def matching(self, name: str) -> list[TemplateInfo]: ...
    def list(self) -> Any: ...
    def delete(self, template_id: str) -> TemplateInfo: ...
    def set_aliases(self, template_id: str, aliases: Any, among: Any = None) -> TemplateInfo: ...
    def set_tags(self, template_id: str, tags: Any) -> TemplateInfo: ...


def new_template_id() -> str:
    """20 lowercase letters and digits, like E2B's template ids."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


def parse_name(full: str) -> tuple[str, str | None]:
    """`name` or `name:tag` → (name, tag); 400 for anything else."""
    name, sep, tag = full.strip().partition(":")
    if not NAME_PATTERN.fullmatch(name):
        raise UserError(400, f"invalid template name {full!r}: use lowercase letters, digits, '.', '-' and '_' "
                            "(optionally namespace/name), up to 63 characters, then optionally ':tag'")
    if sep and not TAG_PATTERN.fullmatch(tag):
        raise UserError(400, f"invalid tag {tag!r} in {full!r}: use lowercase letters, digits, '.', '-' and '_'")
    return name, (tag if sep else None)


def check_tags(tags: list[str]) -> list[str]:
    for tag in tags:
        if not TAG_PATTERN.fullmatch(tag):
            raise UserError(400, f"invalid tag {tag!r}: use lowercase letters, digits, '.', '-' and '_'")
    return list(dict.fromkeys(tags))


@dataclass
class _Plan:
    """A started build: the Dockerfile, the uploads its context is made of, and how to read its steps."""

    record: TemplateBuildRecord
    dockerfile: str
    contexts: list[Path]
    aliases: tuple[str, ...]
    start_cmd: str | None
    ready_cmd: str | None
    build_args: dict[str, str]
    no_cache: bool
    steps: StepMap | None  # v2 (SDK steps) builds; None for Dockerfile builds
    descriptions: list[str]  # of the SDK steps, in order


class RemoteBuild(Protocol):
    """A build run elsewhere (`cluster.remote_builds.RemoteBuilder`): raises `builder.TemplateBuildError`."""

    async def build(self, request: BuildRequest, build_id: str, tags: list[str], contexts: list[Path],
                    line: Callable[[str], None]) -> TemplateInfo: ...


class SnapshotTemplates(Protocol):
    """What deleting a template asks of the API's snapshots (a snapshot is a template in E2B; issue 14)."""

    async def delete(self, team_id: str, ref: str) -> bool: ...

    async def check_template_unused(self, template_id: str) -> None: ...


class TemplateBuildService:
    """Template builds of every team on this server."""

    def __init__(self, settings: Settings, store: Store, templates: Templates | None,
                 node: Node | None = None, *, load_secret: Callable[[Path], bytes]) -> None:
        self.settings = settings
        self.node = node  # checks a start command at build time, in a real sandbox
        self._load_secret = load_secret  # the data dir's secret, which signs upload URLs (api.tokens)
        self.data_dir = Path(settings.data_dir)
        self.store = store
        self.templates = templates
        self.catalog = TemplateCatalog(store, templates)
        self.snapshots: SnapshotTemplates | None = None  # set by create_app: DELETE /templates/<snapshot>
        self.quota = TeamTemplateQuota(getattr(settings, "template_quotas", None) or TemplateQuotas(), store)
        self.logs = BuildLogs(self.data_dir)
        self._files: UploadedFiles | None = None
        self._template_locks: dict[str, asyncio.Lock] = {}
        self._slots: asyncio.Semaphore | None = None
        self._active: dict[str, str] = {}  # build id → template id, from start until done
        self._active_teams: dict[str, str] = {}  # build id → team id, from start until done
        self._tasks: set[asyncio.Task[None]] = set()
        self.build_seconds = Histogram(BUILD_BUCKETS)  # each finished build's run, for the operator's /metrics
        # The action audit log's `record` (api/audit.py's AuditLog.record); set by create_app.
        self.audit_record: Callable[..., None] = lambda *args, **kwargs: None
        # Templates across hosts (issue 17): builds run on a node (`cluster.remote_builds.RemoteBuilder`, set by
        # the server of a control plane with remote nodes), or here and then pushed to `push_to`.
        self.remote: RemoteBuild | None = None
        self.push_to: TemplateRegistryRef | None = None
        self.sharing: BuildSharing | None = None  # every step through any replica (`share_through`)

    def share_through(self, registry: TemplateRegistryRef) -> None:
        """A control plane with remote nodes: uploads in `registry`, log lines and build ownership in the store."""
        from .build_sharing import BuildSharing
        from .shared_uploads import SharedUploads

        self.sharing = BuildSharing(self.store, self.logs, SharedUploads(registry))

    @property
    def files(self) -> UploadedFiles:
        if self._files is None:  # before start() (tests building the app without a lifespan)
            self._files = UploadedFiles(self.data_dir, self._load_secret(self.data_dir))
        return self._files

    async def start(self) -> None:
        """At server start: builds the last server left unfinished cannot be running any more."""
        self._slots = asyncio.Semaphore(MAX_PARALLEL_BUILDS)
        self._files = UploadedFiles(self.data_dir, await asyncio.to_thread(self._load_secret, self.data_dir))
        if self.sharing is not None:  # other replicas' builds run on: only stale ones are failed
            await self.sharing.start(lambda: list(self._active))
        else:
            failed = await asyncio.to_thread(self.store.fail_unfinished_builds, ENDED)
            for build_id in failed:
                log.warning("template build %s was interrupted by a server stop; marked failed", build_id)
        await asyncio.to_thread(self._files.remove_stale, STALE_UPLOAD_SECONDS)
        with contextlib.suppress(FileNotFoundError):
            for leftover in logs_dir(self.data_dir).glob("*.context"):
                await asyncio.to_thread(shutil.rmtree, leftover, True)

    async def close(self) -> None:
        """At server stop: running builds are stopped (their buildah processes get SIGTERM, so each build
        cleans up its containers and build network in its thread) and marked failed."""
        from .buildah import stop_all

        if stop_all():
            for _ in range(100):  # up to 10 s for the build threads to clean up
                if not self._active:
                    break
                await asyncio.sleep(0.1)
        for task in list(self._tasks):
            task.cancel()
        if self.sharing is not None:
            await self.sharing.close()
        for build_id in list(self._active):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.update_build, build_id, status="error",
                                        reason={"message": ENDED}, finished_at=now_utc())
        self.logs.close()

    # ---- finding templates ----------------------------------------------------------------------------

    async def find(self, team_id: str, name: str) -> Found | None:
        """The template `name` means to the team: its own, a built-in, or a public one (`catalog`)."""
        return await self.catalog.find(team_id, name)

    async def _owned(self, team_id: str, name: str, action: str) -> Found:
        """The team's own template called `name`: 404 if it sees none, 403 for a built-in or another team's
        public template (both are visible, so saying so gives nothing away)."""
        found = await self.find(team_id, name)
        if found is None:
            raise UserError(404, f"template '{name}' not found")
        if found.owner is None:
            raise UserError(403, f"cannot {action} template '{found.template_id}': it is a built-in template of this "
                                "server, which no team manages")
        if found.owner.team_id != team_id:
            raise UserError(403, f"cannot {action} template '{name}': it is another team's public template")
        return found

    def _registry(self) -> Templates:
        if self.templates is None:
            raise UserError(500, NO_REGISTRY)
        return self.templates

    # ---- register -------------------------------------------------------------------------------------

    async def register(self, team_id: str, body: TemplateBuildRequestV3) -> TemplateRequestResponseV3:
        full = body.name or body.alias
        name, tag = parse_name(full) if full else (None, None)
        tags = check_tags([*(body.tags or []), *([tag] if tag else [])]) or [DEFAULT_TAG]
        slug = await asyncio.to_thread(self.store.team_slug_of, team_id)
        if name and "/" in name:
            namespace, _, name = name.partition("/")
            if namespace != slug:
                raise UserError(400, f"invalid template name {full!r}: a namespaced name is your team's "
                                    f"'{slug}/name' (or just 'name'); other teams' namespaces are theirs")
        owner = await asyncio.to_thread(self.store.team_template, team_id, name) if name else None
        if name:
            await asyncio.to_thread(self._check_name_free, name, owner.template_id if owner else None)
        if owner is None:
            await asyncio.to_thread(self.quota.check_new_template, team_id)
            template_id = new_template_id()
            try:
                owner = await asyncio.to_thread(self.store.claim_template, template_id, team_id, name or template_id)
            except RuntimeError:
                raise UserError(409, f"template '{name}' is being registered by another request: retry") from None
        template_id = owner.template_id
        info = self.templates.get(template_id) if self.templates is not None else None
        now = now_utc()
        record = TemplateBuildRecord(
            build_id=str(uuid.uuid4()), template_id=template_id, team_id=team_id, status="waiting", tags=tags,
            cpu_count=body.cpuCount or (info.cpu_count if info else DEFAULT_CPU),
            memory_mb=body.memoryMB or (info.memory_mb if info else DEFAULT_MEMORY_MB),
            disk_mb=max(DEFAULT_DISK_MB, body.minFreeDiskMb or 0, info.disk_mb if info else 0),
            created_at=now, updated_at=now)
        await asyncio.to_thread(self.store.add_build, record)
        aliases = list(dict.fromkeys([*(info.aliases if info else ()), *([name] if name else [])]))
        return TemplateRequestResponseV3(templateID=template_id, buildID=record.build_id, public=owner.public,
                                         names=[f"{slug}/{a}" for a in aliases] or [template_id], tags=tags,
                                         aliases=aliases)

    def _check_name_free(self, name: str, own_id: str | None = None) -> None:
        """409 for a name a team may not take: a built-in's (no shadowing: `base` is always the server's), or a
        template id (ids are names too: an alias equal to one would hijack `FROM <id>`)."""
        if name in self.catalog.builtin_names():
            raise UserError(409, f"'{name}' is the name of a built-in template of this server: a team cannot take "
                                "it; choose another name")
        if name != own_id and self.templates is not None and \
                any(info.id == name for info in self.templates.matching(name)):
            raise UserError(409, f"'{name}' is a template id: choose another name")

    # ---- files ----------------------------------------------------------------------------------------

    async def file_status(self, team_id: str, template_id: str, files_hash: str,
                          base_url: str) -> TemplateBuildFileUpload:
        check_hash(files_hash)
        found = await self._owned(team_id, template_id, "upload files for")
        path = self.files.path(team_id, files_hash)
        if path.is_dir():
            with contextlib.suppress(OSError):
                os.utime(path)  # in use: keep it past the stale-upload cleanup
            return TemplateBuildFileUpload(present=True)
        if self.sharing is not None and await self._shared_call(self.sharing.uploads.exists, team_id, files_hash):
            return TemplateBuildFileUpload(present=True)  # received by another replica
        return TemplateBuildFileUpload(present=False,
                                       url=self.files.upload_url(base_url, found.template_id, files_hash))

    async def receive_files(self, template_id: str, files_hash: str, expires: int, signature: str,
                            body: AsyncIterator[bytes]) -> None:
        check_hash(files_hash)
        self.files.check_signature(template_id, files_hash, expires, signature)
        owner = await asyncio.to_thread(self.store.template_owner, template_id)
        if owner is None:
            raise UserError(404, f"template '{template_id}' not found (deleted since the URL was issued?)")
        team_root = self.files.team_root(owner.team_id)
        allowance = await asyncio.to_thread(self.quota.upload_allowance, team_root)
        spool = await self.files.receive(body, allowance,
                                         lambda size: self.quota.upload_refused(size + self._stored(allowance)))
        existed = self.files.path(owner.team_id, files_hash).is_dir()  # then it is counted already: keep it
        shared = self.sharing is not None
        try:
            unpacked = await asyncio.to_thread(self.files.unpack, spool, owner.team_id, files_hash, shared)
            if allowance is not None and not existed:  # what it unpacked to counts, not what it was sent as
                from .quotas import stored_bytes

                size = await asyncio.to_thread(stored_bytes, unpacked)
                if size > allowance:
                    await asyncio.to_thread(shutil.rmtree, unpacked, True)
                    raise self.quota.upload_refused(size + self._stored(allowance))
            if self.sharing is not None:  # checked like any upload: now for the other replicas
                try:
                    await self._shared_call(self.sharing.uploads.push, owner.team_id, files_hash, spool)
                except UserError:  # not kept here either: "present" on this replica would be absent on the others
                    if not existed:
                        await asyncio.to_thread(shutil.rmtree, unpacked, True)
                    raise
        finally:
            spool.unlink(missing_ok=True)

    async def _shared_call(self, fn: Callable[..., T], *args: Any) -> T:
        """A call to the template registry's uploads; its failure is a 503 the client may retry."""
        from .oci_registry import RegistryError

        try:
            return await asyncio.to_thread(fn, *args)
        except RegistryError as exc:
            log.warning("template uploads: %s", exc)
            raise UserError(503, "the template registry, which keeps uploaded build files for every replica, "
                                 "cannot be reached: retry shortly") from None

    async def _fetch_upload(self, team_id: str, files_hash: str) -> bool:
        """The team's upload of `files_hash` from the registry, unpacked here as a received one is; False if none."""
        from .uploads import MAX_UPLOAD_BYTES

        assert self.sharing is not None
        await asyncio.to_thread(self.files.root.mkdir, mode=0o700, parents=True, exist_ok=True)
        spool = self.files.root / f".upload-{secrets.token_hex(8)}"
        try:
            if not await self._shared_call(self.sharing.uploads.fetch, team_id, files_hash, spool, MAX_UPLOAD_BYTES):
                return False
            await asyncio.to_thread(self.files.unpack, spool, team_id, files_hash)
            return True
        finally:
            spool.unlink(missing_ok=True)

    def _stored(self, allowance: int | None) -> int:
        limit = self.quota.limits.max_upload_bytes
        return (limit - allowance) if limit is not None and allowance is not None else 0

    # ---- start ----------------------------------------------------------------------------------------

    async def _build_record(self, team_id: str, template_id: str, build_id: str) -> TemplateBuildRecord:
        record = await asyncio.to_thread(self.store.get_build, build_id) if _is_uuid(build_id) else None
        if record is None or record.team_id != team_id:
            raise UserError(404, f"build '{build_id}' not found: register one with POST /v3/templates")
        if template_id != record.template_id:
            found = await self.find(team_id, template_id)
            if found is None or found.template_id != record.template_id:
                raise UserError(404, f"build '{build_id}' is not a build of template '{template_id}'")
        return record

    async def start_build(self, team_id: str, template_id: str, build_id: str, body: TemplateBuildStartV2) -> None:
        record = await self._build_record(team_id, template_id, build_id)
        if record.status != "waiting" or build_id in self._active or record.owner is not None:
            raise UserError(409, f"build '{build_id}' was already started (it is {record.status}): register a new "
                                "build with POST /v3/templates")
        running = sum(1 for team in self._active_teams.values() if team == team_id)
        await asyncio.to_thread(self.quota.check_build_start, team_id, running)
        registry = self._registry()
        try:
            plan = await self._plan(team_id, record, body, registry)
        except UserError as exc:  # a refused start ends the build: its status says why, as a failed build's does
            if exc.status == 400:
                await self._update(build_id, status="error", finished_at=now_utc(), reason={"message": exc.message})
            raise
        if self.sharing is not None and not await self.sharing.claim(build_id):  # another replica started it
            raise UserError(409, f"build '{build_id}' was already started: register a new build with POST "
                                 "/v3/templates")
        self._active[build_id] = record.template_id
        self._active_teams[build_id] = team_id
        self.audit_record(team_id, "template.build", target=record.template_id, detail={"buildID": build_id})
        task = asyncio.create_task(self._run(plan), name=f"template-build-{build_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _plan(self, team_id: str, record: TemplateBuildRecord, body: TemplateBuildStartV2,
                    registry: Templates) -> _Plan:
        """Check a start request and decide what to build; every refusal is a 400 that says why."""
        from ..templates import dockerfile as dockerfile_mod
        from .steps import StepsError, dockerfile_from_steps

        if body.fromImageRegistry:
            raise UserError(400, "fromImageRegistry (registry credentials) is not supported: use an image from a "
                                "registry that needs no login, e.g. one you run next to the server")
        hashes: list[str] = []
        step_map: StepMap | None = None
        if body.dockerfile is not None:
            if body.steps or body.fromImage or body.fromTemplate:
                raise UserError(400, "a dockerfile build takes no fromImage, fromTemplate or steps: write them in "
                                    "the Dockerfile")
            text = body.dockerfile
            if body.contextHash:
                hashes.append(check_hash(body.contextHash))
        else:
            from_template = body.fromTemplate
            base_named = (from_template or "").removesuffix(":latest") in BASE_NAMES
            if from_template and not base_named:
                seen = await self.find(team_id, from_template)
                if seen is None or seen.info is None:
                    raise UserError(400, f"fromTemplate '{from_template}': template '{from_template}' not found")
                from_template = seen.template_id  # the builder finds it by its (unique) id
            steps = [step.model_dump(exclude_none=True) for step in body.steps]
            for number, step in enumerate(body.steps, start=1):
                if step.type.upper() == "COPY":
                    if not step.filesHash:
                        raise UserError(400, f"step {number} (COPY): filesHash is missing")
                    hashes.append(check_hash(step.filesHash))

            def render(some: list[dict]) -> str:
                return dockerfile_from_steps(body.fromImage, from_template, some)

            try:
                text = render(steps)
            except StepsError as exc:
                raise UserError(400, f"cannot build these steps: {exc}") from None
            step_map = StepMap.for_steps(render, steps)
        contexts = []
        for files_hash in dict.fromkeys(hashes):
            path = self.files.path(team_id, files_hash)
            if not path.is_dir() and (self.sharing is None or not await self._fetch_upload(team_id, files_hash)):
                raise UserError(400, f"the files with hash {files_hash} were not uploaded: ask GET /templates/"
                                    f"{record.template_id}/files/{files_hash} for an upload URL and PUT them first")
            contexts.append(path)
        try:
            parsed = dockerfile_mod.parse(text, body.buildArgs or {})
        except dockerfile_mod.DockerfileError as exc:
            raise UserError(400, f"the Dockerfile cannot be built: {exc}") from None
        text, parsed = await self._team_bases(team_id, text, parsed, body.buildArgs or {})
        if any(ref.removesuffix(":latest") in BASE_NAMES for ref, _ in parsed.external_bases()):
            try:
                await registry.resolve("base")  # built on first use: make sure it exists before the build
            except Exception as exc:  # the host's build of `base` (mmdebstrap): internal
                raise UserError(500, "the base template could not be built: "
                                + report_internal(log, exc, "building the base template")) from None
        info = registry.get(record.template_id)
        owner = await asyncio.to_thread(self.store.template_owner, record.template_id)
        # a rebuild keeps the aliases the template has; a first build gets the name it was registered under
        aliases = info.aliases if info else ((owner.name,) if owner else ())
        no_cache = body.force or any(step.force for step in body.steps)
        return _Plan(record=record, dockerfile=text, contexts=contexts, aliases=tuple(aliases),
                     start_cmd=body.startCmd or None, ready_cmd=body.readyCmd or None,
                     build_args=dict(body.buildArgs or {}), no_cache=no_cache, steps=step_map,
                     descriptions=[describe_step(step.model_dump()) for step in body.steps])

    async def _team_bases(self, team_id: str, text: str, parsed: Any, build_args: dict[str, str]) -> tuple[str, Any]:
        """`FROM name` of a template means the template the team sees by that name: rewritten to its id, so the
        builder (which knows no teams) cannot pick another team's template. A name the team sees no template
        by is "not found", whether or not another team has one."""
        from . import dockerfile as dockerfile_mod
        from . import local_bases

        rewrites: dict[str, str] = {}
        for ref, line in parsed.external_bases():
            if ref.startswith(_TRANSPORTS) or local_bases.canonical(ref) is not None or _has_registry(ref) or \
                    ref.removesuffix(":latest") in BASE_NAMES:
                continue
            found = await self.find(team_id, ref.removesuffix(":latest") if ref.endswith(":latest") else ref)
            if found is None or found.info is None:
                raise UserError(400, f"the Dockerfile cannot be built: line {line}: FROM {ref}: unknown base image "
                                    f"{ref!r}: no template of yours, built-in or public ('team-slug/name') has that "
                                    "name. Sandhive does not pull from Docker Hub; it builds these locally from "
                                    f"Debian: {', '.join(local_bases.known_names())}. Other images: push them to a "
                                    "registry (`FROM registry.example:5000/name:tag`) or use `FROM "
                                    "docker-archive:file.tar`.")
            rewrites[ref] = found.template_id
        if not rewrites:
            return text, parsed
        text = parsed.with_bases(rewrites)
        return text, dockerfile_mod.parse(text, build_args)

    # ---- the build ------------------------------------------------------------------------------------

    async def _run(self, plan: _Plan) -> None:
        record = plan.record
        build_log = self.logs.open(record.build_id)
        lock = self._template_locks.setdefault(record.template_id, asyncio.Lock())
        try:
            if lock.locked():
                build_log.add(f"waiting for the running build of template {record.template_id} to finish")
            async with lock:
                assert self._slots is not None
                if self._slots.locked():
                    build_log.add(f"waiting for a build slot ({MAX_PARALLEL_BUILDS} builds run at once)")
                async with self._slots:
                    await self._update(record.build_id, status="building", started_at=now_utc())
                    began = time.monotonic()
                    await self._build(plan, build_log)
                    self.build_seconds.observe(time.monotonic() - began)
        except asyncio.CancelledError:
            build_log.add(ENDED, "error")
            raise
        except Exception as exc:  # a bug here must still end the build visibly, naming the log line's id only
            message = report_internal(log, exc, f"running template build {record.build_id}")
            build_log.add(message, "error")
            await self._update(record.build_id, status="error", finished_at=now_utc(), reason={"message": message})
        finally:
            self._active.pop(record.build_id, None)
            self._active_teams.pop(record.build_id, None)
            self.logs.finish(record.build_id)

    async def _build(self, plan: _Plan, build_log: BuildLog) -> None:
        from .builder import TemplateBuildError

        record = plan.record
        build_log.add(f"building template {record.template_id} (build {record.build_id})")
        from ..images.system_image import default_cache_dir
        from . import working_containers
        from .builder import build_network

        try:
            if self.remote is not None:  # a control plane with remote nodes: one of them builds and pushes
                info = await self.remote.build(self._request(plan, None), record.build_id,
                                               list(record.tags or [DEFAULT_TAG]), plan.contexts,
                                               self._line(plan, build_log))
            else:
                cache_dir = Path(getattr(self.templates, "cache_dir", None) or default_cache_dir())
                # on this loop; the blocking build in its thread only uses them
                async with working_containers.in_use_async(cache_dir), build_network() as netns:
                    info = await _in_thread(self._build_blocking, plan, build_log, netns, cache_dir)
        except TemplateBuildError as exc:
            step = plan.steps.current if plan.steps else exc.step
            reason = _reason(exc, step, plan, build_log)
            build_log.add(reason["message"].splitlines()[0], "error", step if plan.steps else None)
            await self._update(record.build_id, status="error", finished_at=now_utc(), reason=reason)
            return
        registry = self._registry()
        if info.start_cmd and self.node is not None:
            problem = await self._check_start(info, build_log)
            if problem is not None:
                with contextlib.suppress(LookupError):
                    await asyncio.to_thread(registry.delete, record.template_id)
                build_log.add(problem, "error")
                await self._update(record.build_id, status="error", finished_at=now_utc(),
                                   reason={"message": problem})
                return
        try:
            await asyncio.to_thread(registry.set_tags, record.template_id, record.tags or [DEFAULT_TAG])
        except (LookupError, ValueError) as exc:
            log.warning("could not record the tags of template %s: %s", record.template_id, exc)
        if self.push_to is not None and self.remote is None:
            problem = await self._push(record, build_log)
            if problem is not None:
                build_log.add(problem, "error")
                await self._update(record.build_id, status="error", finished_at=now_utc(),
                                   reason={"message": problem})
                return
        build_log.add(f"template {info.id} is ready ({_describe(info)})")
        await self._update(record.build_id, status="ready", finished_at=now_utc(), cpu_count=info.cpu_count,
                           memory_mb=info.memory_mb, disk_mb=info.disk_mb)

    async def _check_start(self, info: TemplateInfo, build_log: BuildLog) -> str | None:
        """Start the new template once, as a sandbox would, and wait for its ready command: a start command
        that fails or never gets ready fails the build rather than every sandbox. Returns the problem."""
        from ..node.request import CreateRequest, Identity

        assert self.node is not None and self.templates is not None
        ready = f", ready when `{info.ready_cmd}` exits 0" if info.ready_cmd else ""
        build_log.add(f"checking the start command `{info.start_cmd}` in a sandbox{ready}")
        try:
            image = await self.templates.resolve(info.id)
            handle = await self.node.create(CreateRequest.of(image), Identity())
        except UserError as exc:  # the node says why in words (StartCommandFailed, HostFull, BackendMismatch)
            return f"the template's start command did not get ready: {exc.message}"
        except Exception as exc:  # the runtime's own failure: for the log
            return f"the template could not be started: {report_internal(log, exc, f'starting template {info.id}')}"
        with contextlib.suppress(Exception):
            await self.node.kill(handle)
        build_log.add("the start command runs and the template is ready")
        return None

    def _request(self, plan: _Plan, context: Path | None) -> BuildRequest:
        from .build_sandbox import Limits
        from .builder import BuildRequest

        record = plan.record
        return BuildRequest(template_id=record.template_id, dockerfile=plan.dockerfile,
                            context=context or Path("/nonexistent-context"), aliases=plan.aliases,
                            cpu_count=record.cpu_count, memory_mb=record.memory_mb, disk_mb=record.disk_mb,
                            start_cmd=plan.start_cmd, ready_cmd=plan.ready_cmd, build_args=plan.build_args,
                            no_cache=plan.no_cache, trust_host_ca=self.settings.trust_host_ca, limits=Limits(
                                memory_mb=self.settings.build_memory_mb, cpus=self.settings.build_cpus,
                                pids=self.settings.build_pids, timeout_seconds=self.settings.build_timeout_seconds))

    @staticmethod
    def _line(plan: _Plan, build_log: BuildLog) -> Callable[[str], None]:
        """The engine's output lines into the build's log (with the SDK step they belong to)."""

        def line(text: str) -> None:
            step = plan.steps.line(text) if plan.steps else None
            if not _noise(text):
                build_log.add(text, "warn" if text.startswith("warning:") else "info", step)

        return line

    async def _push(self, record: TemplateBuildRecord, build_log: BuildLog) -> str | None:
        """Push the built template to the template registry (`--template-registry`); the problem, or None."""
        from . import layout
        from .oci_registry import RegistryError, push

        assert self.push_to is not None
        info = self._registry().get(record.template_id)
        if info is None:
            return f"template {record.template_id} is gone before it could be pushed"
        try:
            digest = await asyncio.to_thread(push, layout.template_dir(self.data_dir, info.id), info, self.push_to,
                                             (record.build_id,), build_log.add)
        except RegistryError as exc:
            return f"the template was built but could not be pushed to the template registry: {exc}"
        build_log.add(f"template {info.id} pushed to {self.push_to.reference(info.id)} ({digest})")
        return None

    def _build_blocking(self, plan: _Plan, build_log: BuildLog, netns: str, cache_dir: Path) -> TemplateInfo:
        """In the build's thread: lay out the context, run the engine in `netns`, clean up."""
        from .builder import build_template

        record = plan.record
        context = logs_dir(self.data_dir) / f"{record.build_id}.context"
        try:
            _merge_contexts(plan.contexts, context)
            request = self._request(plan, context)
            line = self._line(plan, build_log)
            return build_template(self.data_dir, request, cache_dir=cache_dir, log=line, netns=netns)
        finally:
            shutil.rmtree(context, ignore_errors=True)

    async def _update(self, build_id: str, **values: Any) -> None:
        if self.sharing is not None:  # its lines first: a poll that sees the new status sees them too
            await self.sharing.flush(build_id)
        await asyncio.to_thread(self.store.update_build, build_id, **values)

    # ---- status ---------------------------------------------------------------------------------------

    async def status(self, team_id: str, template_id: str, build_id: str, offset: int, limit: int,
                     level: str | None) -> TemplateBuildInfo:
        record = await self._build_record(team_id, template_id, build_id)
        if self.sharing is not None and self.logs.live(build_id) is None:  # run, or being run, by any replica
            entries = (await self.sharing.read_log(build_id)).entries(offset, limit, level)
        else:
            entries = self.logs.get(build_id).entries(offset, limit, level)
        reason = None
        if record.status == "error":
            data = record.reason or {"message": "the build failed"}
            reason = BuildStatusReason(message=data.get("message", "the build failed"), step=data.get("step"),
                                       logEntries=[BuildLogEntry(**e) for e in data.get("logEntries", [])] or None)
        return TemplateBuildInfo(templateID=record.template_id, buildID=build_id, status=_status(record.status),
                                 logEntries=[BuildLogEntry(**e) for e in entries], reason=reason)

    # ---- templates ------------------------------------------------------------------------------------

    async def alias_info(self, team_id: str, alias: str) -> TemplateAliasResponse:
        found = await self.find(team_id, alias)
        if found is None:
            raise UserError(404, f"template '{alias}' not found")
        if found.owner is not None and found.owner.team_id != team_id:  # public: visible, but not the caller's
            raise UserError(403, f"template '{alias}' is another team's public template")
        return TemplateAliasResponse(templateID=found.template_id, public=found.owner is None or found.owner.public)

    async def set_public(self, team_id: str, name: str, public: bool) -> TemplateWithBuilds:
        """The owner marks its template public (every team may start it by `team-slug/name` or id) or private."""
        found = await self._owned(team_id, name, "publish" if public else "unpublish")
        await asyncio.to_thread(self.store.set_template_public, found.template_id, public)
        return await self.detail(team_id, found.template_id)

    async def full_names(self, team_id: str, template_id: str) -> list[str]:
        """`team-slug/name` for each name of the team's template: how other teams reach it once public."""
        owner = await asyncio.to_thread(self.store.template_owner, template_id)
        if owner is None or owner.team_id != team_id:
            return []
        slug = await asyncio.to_thread(self.store.team_slug_of, team_id)
        info = self.templates.get(template_id) if self.templates is not None else None
        return [f"{slug}/{name}" for name in dict.fromkeys([owner.name, *(info.aliases if info else ())])]

    async def detail(self, team_id: str, name: str) -> TemplateWithBuilds:
        found = await self.find(team_id, name)
        if found is None:
            raise UserError(404, f"template '{name}' not found")
        records = await asyncio.to_thread(self.store.template_builds, found.template_id)
        info = found.info
        builds = [_build_view(r) for r in records]
        if info is not None and not any(r.status == "ready" for r in records):
            builds.append(_host_build(info))  # built on the host: no record, but it was built
        current = next((b for b in builds if b.status == "ready"), builds[0] if builds else None)
        if found.owner is not None:
            created = found.owner.created_at
        else:
            assert info is not None  # a template is built, owned, or both (catalog.Found)
            created = _when(info.created_at)
        updated = _when(info.created_at) if info else (records[0].updated_at if records else created)
        tags = _tags_of(info) if info else []
        latest = records[0] if records else None
        return TemplateWithBuilds(
            templateID=found.template_id, buildID=current.buildID if current else "",
            cpuCount=info.cpu_count if info else (latest.cpu_count if latest else DEFAULT_CPU),
            memoryMB=info.memory_mb if info else (latest.memory_mb if latest else DEFAULT_MEMORY_MB),
            diskSizeMB=info.disk_mb if info else (latest.disk_mb if latest else DEFAULT_DISK_MB),
            public=found.owner is None or found.owner.public, aliases=list(info.aliases) if info else [],
            names=list(info.names) if info else [],
            createdAt=created, updatedAt=updated, buildCount=len(builds),
            envdVersion=str((info.envd or {}).get("version") or ENVD_VERSION) if info else ENVD_VERSION,
            buildStatus=_status(latest.status) if latest else "ready", builds=builds, tags=tags,
            defaultUser=info.default_user if info else None, defaultWorkdir=info.default_workdir if info else None,
            startCmd=info.start_cmd if info else None, readyCmd=info.ready_cmd if info else None,
            owned=found.owner is not None and found.owner.team_id == team_id)

    async def delete(self, team_id: str, name: str) -> None:
        if self.snapshots is not None and await self.snapshots.delete(team_id, name):
            return
        found = await self._owned(team_id, name, "delete")
        template_id = found.template_id
        if template_id in self._active.values() or (self.sharing is not None and any(
                r.status in ("waiting", "building") and r.owner is not None
                for r in await asyncio.to_thread(self.store.template_builds, template_id))):
            raise UserError(409, f"a build of template '{template_id}' is running: wait for it to end, then delete")
        running = await asyncio.to_thread(self.store.live_sandbox_count, template_id)
        if running:
            raise UserError(409, f"{running} sandbox{'es' if running > 1 else ''} of template '{template_id}' "
                                f"{'are' if running > 1 else 'is'} running: kill them first (`sandhive sandbox "
                                "list`), then delete the template")
        if self.snapshots is not None:
            await self.snapshots.check_template_unused(template_id)
        if found.info is not None:
            registry = self._registry()
            with contextlib.suppress(LookupError):  # deleted by a concurrent request
                await asyncio.to_thread(registry.delete, template_id)
            await asyncio.to_thread(_forget_image, self.data_dir, template_id, registry.cache_dir)
        await asyncio.to_thread(self.store.forget_template, template_id)
        self.audit_record(team_id, "template.delete", target=template_id, detail={"name": name})

    async def set_aliases(self, team_id: str, name: str, aliases: list[str]) -> list[str]:
        found = await self._owned(team_id, name, "rename")
        if found.info is None:
            raise UserError(409, f"template '{found.template_id}' has no finished build yet: alias it once it is "
                                "built")
        for alias in aliases:
            if "/" in alias:  # `host/x` would also read as a registry image in another team's FROM
                raise UserError(400, f"invalid alias {alias!r}: aliases are plain names in your team's namespace "
                                    "(no '/')")
            await asyncio.to_thread(self._check_name_free, alias)
            other = await asyncio.to_thread(self.store.team_template, team_id, alias)
            if other is not None and other.template_id != found.template_id:
                raise UserError(400, f"alias {alias!r} is already the name of template '{other.template_id}'")
        mine = [o.template_id for o in await asyncio.to_thread(self.store.team_templates, team_id)]
        try:
            info = await asyncio.to_thread(self._registry().set_aliases, found.template_id, aliases, mine)
        except ValueError as exc:
            raise UserError(400, str(exc)) from None
        except LookupError:
            raise UserError(404, f"template '{name}' not found") from None
        return list(info.aliases)

    # ---- tags -----------------------------------------------------------------------------------------

    async def tags(self, team_id: str, name: str) -> list[TemplateTag]:
        found = await self.find(team_id, name)
        if found is None:
            raise UserError(404, f"template '{name}' not found")
        if found.info is None:
            return []
        build = await self._current_build(found)
        return [TemplateTag(tag=tag, buildID=build.buildID, createdAt=build.createdAt) for tag in _tags_of(found.info)]

    async def assign_tags(self, team_id: str, target: str, tags: list[str]) -> AssignedTemplateTags:
        name, tag = parse_name(target)
        found = await self._owned(team_id, target if tag else name, "tag")
        if found.info is None:
            raise UserError(404, f"template '{target}' has no finished build to tag")
        wanted = check_tags(tags)
        if not wanted:
            raise UserError(400, "no tags given")
        info = await asyncio.to_thread(self._registry().set_tags, found.template_id,
                                       [*_tags_of(found.info), *wanted])
        build = await self._current_build(found)
        if _is_uuid(build.buildID):
            await self._update(build.buildID, tags=_tags_of(info))
        return AssignedTemplateTags(tags=wanted, buildID=build.buildID)

    async def remove_tags(self, team_id: str, name: str, tags: list[str]) -> None:
        bare, _ = parse_name(name)
        found = await self._owned(team_id, bare, "untag")
        current = _tags_of(found.info) if found.info else []
        missing = [t for t in tags if t not in current]
        if missing:
            raise UserError(404, f"template '{bare}' has no tag {missing[0]!r} (its tags: {', '.join(current) or '-'})")
        remaining = [t for t in current if t not in tags]
        info = await asyncio.to_thread(self._registry().set_tags, found.template_id, remaining)
        build = await self._current_build(found)
        if _is_uuid(build.buildID):
            await self._update(build.buildID, tags=_tags_of(info) if remaining else [])

    async def _current_build(self, found: Found) -> TemplateBuild:
        records = await asyncio.to_thread(self.store.template_builds, found.template_id)
        ready = next((r for r in records if r.status == "ready"), None)
        if ready is not None:
            return _build_view(ready)
        assert found.info is not None
        return _host_build(found.info)


# ---- helpers ----------------------------------------------------------------------------------------------

_TRANSPORTS = ("docker-archive:", "oci-archive:", "oci:", "dir:", "docker://")


def _has_registry(ref: str) -> bool:
    """A reference whose first part names a registry host (`host:port/...`, `a.b/...`, `localhost/...`)."""
    first, sep, _ = ref.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _when(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _tags_of(info: TemplateInfo) -> list[str]:
    from .registry import tags_of

    return tags_of(info)


def _describe(info: TemplateInfo) -> str:
    parts = [f"user {info.default_user}", f"workdir {info.default_workdir}"]
    if info.start_cmd:
        parts.append(f"start command {info.start_cmd!r}")
    if info.build.get("seconds") is not None:
        parts.append(f"{info.build['seconds']}s")
    return ", ".join(parts)


def _status(stored: str) -> BuildStatus:
    """A stored build status as the API's type (the store holds a plain string; only BuildStatus values
    are ever written to it)."""
    return cast(BuildStatus, stored)


def _build_view(record: TemplateBuildRecord) -> TemplateBuild:
    return TemplateBuild(buildID=record.build_id, status=_status(record.status), createdAt=record.created_at,
                         updatedAt=record.updated_at, finishedAt=record.finished_at, cpuCount=record.cpu_count,
                         memoryMB=record.memory_mb, diskSizeMB=record.disk_mb, tags=list(record.tags or []))


def _host_build(info: TemplateInfo) -> TemplateBuild:
    """A template built on the host has no build record: describe its one build from template.json (with a
    stable id, so it reads the same every time)."""
    when = _when(info.created_at)
    build_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandhive-template:{info.id}:{info.created_at}"))
    return TemplateBuild(buildID=build_id, status="ready", createdAt=when, updatedAt=when, finishedAt=when,
                         cpuCount=info.cpu_count, memoryMB=info.memory_mb, diskSizeMB=info.disk_mb,
                         envdVersion=str((info.envd or {}).get("version") or ENVD_VERSION), tags=_tags_of(info))


def _reason(exc: Any, step: str | None, plan: _Plan, build_log: BuildLog) -> dict[str, Any]:
    """What a failed build reports: the engine's message, where it failed, and the last lines of its log."""
    where = exc.step
    if plan.steps is not None and step and step.isdigit():
        described = plan.descriptions[int(step) - 1] if int(step) <= len(plan.descriptions) else None
        where = f"step {step}" + (f" ({described})" if described else "")
    lines = [line for line in (exc.log_tail or [e["message"] for e in build_log.tail(REASON_TAIL)])
             if line.strip() and not _noise(line) and not line.startswith("--> ")]
    tail = lines[-REASON_TAIL:]
    message = f"{where}: {exc.message}" if where else exc.message
    if tail:
        message += "\nlast lines of the build log:\n" + "\n".join(f"  {line}" for line in tail)
    stamp = now_utc().isoformat()
    reason: dict[str, Any] = {"message": message,
                              "logEntries": [{"timestamp": stamp, "message": line, "level": "error"} for line in tail]}
    if step:
        reason["step"] = step
    return reason


def _noise(line: str) -> bool:
    """Build log lines that say nothing to the user: the engine's own `ARG` steps that hand RUN steps the host's
    CA bundle (the same in every build)."""
    return _CA_ARG.match(line) is not None


_CA_ARG = re.compile(r"^STEP \d+/\d+: ARG \w+=/run/sandhive-build/")


def describe_step(step: dict[str, Any]) -> str:
    """One SDK step as a person reads it, e.g. `RUN pip install x (as root)` or `COPY app.py -> /app/`."""
    kind, args = str(step.get("type", "")).upper(), [str(a) for a in step.get("args") or []]
    if kind == "RUN" and args:
        text = args[0] if len(args[0]) <= 80 else args[0][:77] + "..."
        return f"RUN {text}" + (f" (as {args[1]})" if len(args) > 1 and args[1] else "")
    if kind == "COPY" and len(args) >= 2:
        return f"COPY {args[0]} -> {args[1]}"
    if kind == "ENV":
        return "ENV " + " ".join(f"{args[i]}={args[i + 1]}" for i in range(0, len(args) - 1, 2))
    return f"{kind} {' '.join(args)}".strip()


def _merge_contexts(sources: list[Path], context: Path) -> None:
    """One build context from the unpacked uploads, hard-linked where it can be (same file system), copied
    where not; the build only reads them. A path two uploads both hold is the later one's.

    This runs as host root over trees a user shaped (absolute symlinks are kept as links), so it never follows
    a link on either side: `cp -a` wrote *through* a symlink an earlier upload left at the same path when it
    fell back from hard links to copies (another file system), a host-root write anywhere.
    """
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(mode=0o700, parents=True)
    for source in sources:
        os.utime(source)  # in use: keep it past the stale-upload cleanup
        try:
            _merge_tree(source, context)
        except OSError as exc:
            raise OSError(f"cannot lay out the build context: {exc}") from exc


def _merge_tree(source: Path, dest: Path) -> None:
    """Merge `source` into the real directory `dest`. Every name is judged by lstat, and whatever `dest`
    holds at a name is removed (never written through) before the source's entry takes its place."""
    with os.scandir(source) as entries:
        for entry in entries:
            target = dest / entry.name
            if entry.is_dir(follow_symlinks=False):
                if not _is_real_dir(target):
                    _remove(target)
                    target.mkdir()
                    st = entry.stat(follow_symlinks=False)
                    os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
                    shutil.copystat(entry.path, target, follow_symlinks=False)
                _merge_tree(Path(entry.path), target)
                continue
            _remove(target)
            try:
                os.link(entry.path, target, follow_symlinks=False)  # links a symlink itself, never its target
            except OSError:
                if entry.is_symlink():
                    os.symlink(os.readlink(entry.path), target)
                else:
                    shutil.copy2(entry.path, target, follow_symlinks=False)
                st = entry.stat(follow_symlinks=False)
                os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _remove(path: Path) -> None:
    """Remove whatever is at `path` (a link itself, not its target); nothing there is fine."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        path.unlink()


def _forget_image(data_dir: Path, template_id: str, cache_dir: Path | None) -> None:
    """Drop a deleted template's image from the build storage (its shared layers stay cached)."""
    try:
        from .builder import remove_image

        remove_image(data_dir, template_id, cache_dir)
    except Exception as exc:  # the template is gone either way; a stale image only costs disk
        log.warning("could not remove the build image of template %s: %s", template_id, exc)


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a long blocking call in a daemon thread of its own, so a stopping server does not wait for a build
    (asyncio's default executor would join it at exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is gone
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=f"sandhive-{getattr(fn, '__name__', 'build')}", daemon=True).start()
    return await future
