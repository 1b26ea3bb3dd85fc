"""A control plane's template builds, run on a node (`node_builds`), and its view of templates in the registry.

`RemoteBuilder.build` picks a live node (the least busy, as placement does), sends it the merged build context as
a tar and the planned job, relays the node's log lines into the build's log as they come, and returns the
template.json the node pushed. A failure the node reports comes back as the builder's own `TemplateBuildError`,
so the build service treats a remote build exactly like a local one.

`RegistryTemplates` answers what the build service and the catalog ask of built templates (`get`, `matching`,
`list`) from the template registry's image labels, kept for `TTL_SECONDS`; it is how every replica sees a template
built through any other. Team names stay in the store (`team_templates`); nodes resolve by template id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from ..errors import NodeError
from ..templates import oci_registry
from ..templates.info import ID_PATTERN, TemplateInfo
from ..templates.oci_registry import RegistryError, TemplateRegistryRef
from . import models as m

if TYPE_CHECKING:
    from ..templates.builder import BuildRequest
    from .remote_node import RemoteNodes, RemoteTemplates

log = logging.getLogger("sandhive.cluster")
TTL_SECONDS = 5.0
MISS_TTL_SECONDS = 2.0
BUILD_TIMEOUT = httpx.Timeout(None, connect=5.0)  # the node streams log lines; the build has its own timeout
UPLOAD_TIMEOUT = httpx.Timeout(600.0, connect=5.0)


class RemoteBuilder:
    """Builds through the nodes of `nodes` (see the module)."""

    def __init__(self, nodes: RemoteNodes, templates: RemoteTemplates) -> None:
        self.nodes = nodes
        self.templates = templates  # its caches forget a template once a build of it ends

    async def build(self, request: BuildRequest, build_id: str, tags: list[str], contexts: list[Path],
                    line: Callable[[str], None]) -> TemplateInfo:
        from ..templates.builder import TemplateBuildError

        limits = request.limits
        job = m.BuildJob(template_id=request.template_id, build_id=build_id, dockerfile=request.dockerfile,
                         aliases=list(request.aliases), tags=tags, cpu_count=request.cpu_count,
                         memory_mb=request.memory_mb, disk_mb=request.disk_mb, start_cmd=request.start_cmd,
                         ready_cmd=request.ready_cmd, build_args=dict(request.build_args), no_cache=request.no_cache,
                         trust_host_ca=request.trust_host_ca, build_memory_mb=limits.memory_mb,
                         build_cpus=limits.cpus, build_pids=limits.pids,
                         build_timeout_seconds=int(limits.timeout_seconds))
        live = self.nodes.placement(job.template_id)
        if not live:
            raise TemplateBuildError("no node can be reached to run the build: start it again later")
        node = live[0]
        line(f"building on node {node.node_id}")
        job = job.model_copy(update={"has_context": bool(contexts)})
        if contexts:
            tar = await asyncio.to_thread(_context_tar, contexts)
            try:
                await self._send_context(node.http, job.build_id, tar, node.node_id)
            finally:
                tar.unlink(missing_ok=True)
                shutil.rmtree(tar.parent, ignore_errors=True)
        result: m.BuildEvent | None = None
        try:
            async with node.http.stream("POST", m.BUILDS_PREFIX, json=job.model_dump(), timeout=BUILD_TIMEOUT) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise TemplateBuildError(_refusal(r, node.node_id))
                async for text in r.aiter_lines():
                    if not text.strip():
                        continue
                    event = m.BuildEvent.model_validate_json(text)
                    if event.line is not None:
                        line(event.line)
                    else:
                        result = event
        except httpx.HTTPError as exc:
            raise TemplateBuildError(f"node {node.node_id} stopped answering during the build ({type(exc).__name__}):"
                                     " start the build again") from exc
        if result is None:
            raise TemplateBuildError(f"node {node.node_id} ended the build without a result: start it again")
        if result.error is not None:
            raise TemplateBuildError(result.error, result.step, result.log_tail)
        assert result.info is not None
        self.templates.forget(job.template_id)
        return TemplateInfo.from_json(json.dumps(result.info))

    @staticmethod
    async def _send_context(http: httpx.AsyncClient, build_id: str, tar: Path, node_id: str) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            with tar.open("rb") as f:
                while chunk := await asyncio.to_thread(f.read, 2**20):
                    yield chunk

        try:
            r = await http.put(f"{m.BUILDS_PREFIX}/{build_id}/context", content=chunks(), timeout=UPLOAD_TIMEOUT)
        except httpx.HTTPError as exc:
            raise NodeError(502, f"node {node_id} cannot be reached to send the build context") from exc
        if r.status_code >= 400:
            from ..templates.builder import TemplateBuildError

            raise TemplateBuildError(_refusal(r, node_id))


def _refusal(r: httpx.Response, node_id: str) -> str:
    try:
        return str(r.json()["message"])
    except (ValueError, KeyError, TypeError):
        return f"node {node_id} refused the build ({r.status_code})"


def _context_tar(contexts: list[Path]) -> Path:
    """The uploads merged into one context (as a local build merges them) and archived: host root only reads the
    merged tree (`tar -c` archives symlinks as links, never follows them)."""
    from ..templates.build_service import _merge_contexts

    work = Path(tempfile.mkdtemp(prefix="sandhive-context-", dir="/var/tmp"))
    merged = work / "context"
    _merge_contexts(contexts, merged)
    tar = work / "context.tar"
    subprocess.run(["tar", "-c", "-f", str(tar), "--numeric-owner", "-C", str(merged), "."], check=True,
                   capture_output=True)
    shutil.rmtree(merged, ignore_errors=True)
    return tar


class RegistryTemplates:
    """Built templates as the template registry holds them (see the module)."""

    def __init__(self, ref: TemplateRegistryRef, ttl: float = TTL_SECONDS) -> None:
        self.ref = ref
        self.ttl = ttl
        self._cache: dict[str, tuple[float, TemplateInfo | None]] = {}

    def get(self, template_id: str) -> TemplateInfo | None:
        """template.json of `template_id` in the registry, or None (an alias is no id: None)."""
        if not ID_PATTERN.fullmatch(template_id):
            return None
        cached = self._cache.get(template_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            found = oci_registry.lookup(self.ref, template_id)
        except RegistryError as exc:  # built-ins still resolve through the nodes; built ones as last seen
            log.warning("template registry: %s", exc)
            return cached[1] if cached is not None else None
        info = found[1] if found is not None else None
        # "none" is kept briefly only: a build through another replica may push it any moment
        self._cache[template_id] = (time.monotonic() + (self.ttl if info is not None else MISS_TTL_SECONDS), info)
        return info

    def forget(self, template_id: str) -> None:
        self._cache.pop(template_id, None)

    def list(self) -> list[TemplateInfo]:
        """Every template in the registry (its catalog, one page of up to 1000 repositories)."""
        prefix = self.ref.repository("x")[:-1]
        try:
            with httpx.Client(timeout=oci_registry.TIMEOUT, trust_env=False) as http:
                r = http.get(f"{self.ref.api}_catalog", params={"n": 1000})
                r.raise_for_status()
                repositories = r.json().get("repositories") or []
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("template registry: cannot list templates: %s", exc)
            return []
        found = []
        for repository in repositories:
            if isinstance(repository, str) and repository.startswith(prefix):
                info = self.get(repository[len(prefix):])
                if info is not None:
                    found.append(info)
        return found

    def delete(self, template_id: str) -> TemplateInfo:
        info = self.get(template_id)
        if info is None:
            raise LookupError(f"template '{template_id}' not found")
        try:
            if not oci_registry.delete(self.ref, template_id):
                log.warning("template registry: %s kept the image of deleted template %s (deletes disabled?)",
                            self.ref.host, template_id)
        except RegistryError as exc:
            log.warning("template registry: deleting template %s: %s", template_id, exc)
        self._cache.pop(template_id, None)
        return info
