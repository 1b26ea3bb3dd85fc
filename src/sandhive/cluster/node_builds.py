"""Template builds on a node, for a control plane (`sandhive node --template-registry ...`).

A control plane with remote nodes keeps E2B's build flow (records, names, uploads, logs, polling) and sends the
planned build here: first its build context as a tar (`PUT /node/v1/builds/{build_id}/context`, unpacked by the
unprivileged `templates.unpack`), then the job (`POST /node/v1/builds`). The node builds with the same machinery
as a single host (`templates.builder.build_template`: buildah in a user namespace of the BUILD range, in a build
network namespace), pushes the result to the template registry (`templates.oci_registry.push`) and answers NDJSON:
one `BuildEvent` per log line while it builds, then the template.json and the image digest, or the failure.
The node keeps the template it built, so its own creates need no pull.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError, report_internal
from ..templates import layout
from ..templates.build_logs import logs_dir
from ..templates.info import ID_PATTERN
from ..templates.oci_registry import TemplateRegistryRef, push
from ..templates.pull import DIGEST_KEY
from . import models as m

if TYPE_CHECKING:
    from ..templates.builder import BuildRequest
    from ..templates.info import TemplateInfo
    from ..templates.pull import PullingTemplates
    from ..templates.registry import TemplateRegistry

log = logging.getLogger("sandhive.cluster")
MAX_CONTEXT_BYTES = 4 * 2**30


def _build_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise UserError(400, f"invalid build id {value!r}") from None


class NodeBuilds:
    """The node's side of remote builds: contexts received, builds run one per template at a time."""

    def __init__(self, data_dir: Path, local: TemplateRegistry, pulling: PullingTemplates | None) -> None:
        self.data_dir = data_dir
        self.local = local
        self.pulling = pulling  # bases named by template id are pulled through it
        self.ref = pulling.ref if pulling is not None else None
        self._locks: dict[str, asyncio.Lock] = {}

    def _context(self, build_id: str) -> Path:
        return logs_dir(self.data_dir) / f"{_build_id(build_id)}.node-context"

    def _registry(self) -> TemplateRegistryRef:
        if self.ref is None:
            raise UserError(409, "this node has no template registry (--template-registry): it cannot build "
                                 "templates for a control plane")
        return self.ref

    async def receive_context(self, build_id: str, body: AsyncIterator[bytes]) -> None:
        """The build context as a tar stream, unpacked as the BUILD range (never as host root)."""
        from ..templates.unpack import UnpackError, unpack

        self._registry()
        into = self._context(build_id)
        spool = into.with_suffix(".tar")
        into.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(into, ignore_errors=True)
        size = 0
        try:
            with spool.open("wb") as out:
                async for chunk in body:
                    size += len(chunk)
                    if size > MAX_CONTEXT_BYTES:
                        raise UserError(413, "the build context is too large")
                    await asyncio.to_thread(out.write, chunk)
            into.mkdir(mode=0o700)
            try:
                await asyncio.to_thread(unpack, spool, into)
            except UnpackError as exc:
                raise UserError(exc.status, exc.message) from None
        finally:
            spool.unlink(missing_ok=True)

    async def build(self, job: m.BuildJob) -> AsyncIterator[bytes]:
        """Run `job`; yields NDJSON `BuildEvent`s (see the module)."""
        ref = self._registry()
        if not ID_PATTERN.fullmatch(job.template_id):
            raise UserError(400, f"invalid template id {job.template_id!r}")
        context = self._context(job.build_id)
        queue: asyncio.Queue[m.BuildEvent | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def line(text: str) -> None:
            """From the build's threads, or from this loop (then at once: before the result is queued)."""
            event = m.BuildEvent(line=text)
            try:
                here = asyncio.get_running_loop() is loop
            except RuntimeError:
                here = False
            if here:
                queue.put_nowait(event)
            else:
                loop.call_soon_threadsafe(queue.put_nowait, event)

        async def run() -> None:
            try:
                await queue.put(await self._run(job, context, ref, line))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure ends the stream as an event
                await queue.put(_failure(exc, job))
            finally:
                await queue.put(None)

        task = asyncio.create_task(run(), name=f"node-build-{job.build_id}")
        try:
            while (event := await queue.get()) is not None:
                yield (event.model_dump_json(exclude_defaults=True) + "\n").encode()
        finally:
            if not task.done():  # the control plane went away: the build goes on, and is cleaned up after
                task.add_done_callback(lambda _t: shutil.rmtree(context, ignore_errors=True))
            else:
                shutil.rmtree(context, ignore_errors=True)

    async def _run(self, job: m.BuildJob, context: Path, ref: TemplateRegistryRef,
                   line: Callable[[str], None]) -> m.BuildEvent:
        from ..templates.build_sandbox import Limits
        from ..templates.build_service import _in_thread
        from ..templates.builder import BuildRequest, build_network

        async with self._locks.setdefault(job.template_id, asyncio.Lock()):
            await self._pull_bases(job)
            if not job.has_context:
                await asyncio.to_thread(_empty_dir, context)
            request = BuildRequest(template_id=job.template_id, dockerfile=job.dockerfile, context=context,
                                   aliases=tuple(job.aliases), cpu_count=job.cpu_count, memory_mb=job.memory_mb,
                                   disk_mb=job.disk_mb, start_cmd=job.start_cmd, ready_cmd=job.ready_cmd,
                                   build_args=dict(job.build_args), no_cache=job.no_cache,
                                   trust_host_ca=job.trust_host_ca,
                                   limits=Limits(memory_mb=job.build_memory_mb, cpus=job.build_cpus,
                                                 pids=job.build_pids, timeout_seconds=job.build_timeout_seconds))
            async with build_network() as netns:
                info = await _in_thread(_build, self.data_dir, request, self.local.cache_dir, line, netns)
            info = replace(info, build={**info.build, "tags": list(job.tags) or ["default"]})
            with layout.build_lock(self.data_dir, info.id):
                info.write(layout.template_dir(self.data_dir, info.id))
            self.local.changed()
            digest = await asyncio.to_thread(push, layout.template_dir(self.data_dir, info.id), info, ref,
                                             (job.build_id,), line)
            # This node's copy is the pushed image: later rebuilds elsewhere replace it like a pulled one
            pushed = replace(info, build={**info.build, DIGEST_KEY: digest})
            with layout.build_lock(self.data_dir, info.id):
                pushed.write(layout.template_dir(self.data_dir, info.id))
            self.local.changed()
            line(f"template {info.id} pushed to {ref.reference(info.id)} ({digest})")
            return m.BuildEvent(info=json.loads(info.to_json()), digest=digest)

    async def _pull_bases(self, job: m.BuildJob) -> None:
        """`FROM <template id>` (the control plane rewrote team names to ids): pulled now if this node lacks it,
        so the builder finds it in this data dir."""
        from ..templates import dockerfile as dockerfile_mod

        if self.pulling is None:
            return
        try:
            parsed = dockerfile_mod.parse(job.dockerfile, job.build_args)
        except dockerfile_mod.DockerfileError:  # the builder reports a bad Dockerfile in its own words
            return
        for ref, _line in parsed.external_bases():
            name = ref.removesuffix(":latest")
            if ID_PATTERN.fullmatch(name) and name != job.template_id:
                with contextlib.suppress(LookupError):
                    await self.pulling.resolve(name)


def _empty_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)


def _build(data_dir: Path, request: BuildRequest, cache_dir: Path | None, line: Callable[[str], None],
           netns: str) -> TemplateInfo:
    from ..templates.builder import build_template

    return build_template(data_dir, request, cache_dir=cache_dir, log=line, netns=netns)


def _failure(exc: Exception, job: m.BuildJob) -> m.BuildEvent:
    from ..templates.builder import TemplateBuildError

    if isinstance(exc, TemplateBuildError):
        return m.BuildEvent(error=exc.message, step=exc.step, log_tail=exc.log_tail)
    if isinstance(exc, UserError):
        return m.BuildEvent(error=exc.message)
    return m.BuildEvent(error=report_internal(log, exc, f"building template {job.template_id} for a control plane"),
                        internal=True)
