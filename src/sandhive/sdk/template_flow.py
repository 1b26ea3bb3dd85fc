"""A template build as one flow of calls, shared by `Template` (blocking) and `AsyncTemplate` (asyncio).

The flow is a generator: it yields what to do next — an `HttpCall` to send, an `Upload` of a tar to a signed
URL, a `Sleep` between status polls — and receives the answer. Each face only executes the yielded steps
(`run_sync`, `run_async`) through the SDK's one transport (`transport.SyncTransport`/`AsyncTransport`, as
`Sandbox` and `AsyncSandbox` do), so the two stay one implementation and every request is sent, timed out and
mapped to an exception the same way.

Steps of a build (docs/wire.md §2.6): register it (`POST /v3/templates`), upload what the server lacks of
each COPY step's files (or, for a Dockerfile, of its context), start it, then poll its status, handing each
new log entry to `on_build_logs`, until it is ready or failed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote

from .config import ConnectionConfig
from .errors import Context
from .exceptions import (
    AuthenticationException,
    RateLimitException,
    SandboxException,
    ServerUnreachableException,
    TimeoutException,
)
from .fs_calls import async_body, sync_body
from .template_builder import TemplateBase
from .template_files import files_hash, tar_files
from .template_models import (
    BuildException,
    BuildInfo,
    BuildStatusReason,
    FileUploadException,
    LogEntry,
    LogEntryLevel,
    TemplateBuildStatus,
    TemplateBuildStatusResponse,
    TemplateException,
    TemplateTag,
    TemplateTagInfo,
)
from .transport import AsyncTransport, SyncTransport
from .wire import HttpCall

POLL_SECONDS = 0.2  # as E2B's SDK polls
UPLOAD_TIMEOUT = 3600.0  # a large context may take long to send
CONTEXT_SOURCE = "."  # the whole context directory, as a Dockerfile build needs it
LogCallback = Callable[[LogEntry], None] | None
Flow = Generator[Any, Any, Any]


@dataclass
class Sleep:
    seconds: float


@dataclass
class Upload:
    """PUT a tar to a signed URL on the server (no API key: the URL's signature authorises it). `call` is the
    request without its body: each face streams `file` its own way (read in a thread under asyncio)."""

    call: HttpCall[None]
    file: IO[bytes]


def _ctx(config: ConnectionConfig, what: str, timeout: float | None = None) -> Context:
    return Context(what=what, server=config.api_url, timeout=timeout if timeout is not None else config.request_timeout)


def _call(config: ConnectionConfig, method: str, path: str, what: str, parse: Any, **fields: Any) -> HttpCall[Any]:
    return HttpCall(method, f"{config.api_url}{path}", _ctx(config, what), parse, headers=config.api_headers(),
                    timeout=config.request_timeout, **fields)


def _path(value: str) -> str:
    return quote(value, safe="")


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _entry(data: dict[str, Any]) -> LogEntry:
    return LogEntry(timestamp=_when(data["timestamp"]), level=data.get("level", "info"), message=data["message"])


def _status(data: dict[str, Any]) -> TemplateBuildStatusResponse:
    reason = data.get("reason")
    return TemplateBuildStatusResponse(
        build_id=data["buildID"], template_id=data["templateID"], status=TemplateBuildStatus(data["status"]),
        log_entries=[_entry(e) for e in data.get("logEntries") or []], logs=list(data.get("logs") or []),
        reason=BuildStatusReason(message=reason["message"], step=reason.get("step"),
                                 log_entries=[_entry(e) for e in reason.get("logEntries") or []])
        if reason else None)


# ---- single calls -------------------------------------------------------------------------------------

def status_call(config: ConnectionConfig, template_id: str, build_id: str,
                logs_offset: int | None) -> HttpCall[TemplateBuildStatusResponse]:
    params = {} if logs_offset is None else {"logsOffset": logs_offset}
    return _call(config, "GET", f"/templates/{_path(template_id)}/builds/{_path(build_id)}/status",
                 f"get the status of build {build_id}", lambda r: _status(r.json()), params=params)


def alias_exists_call(config: ConnectionConfig, alias: str) -> HttpCall[bool]:
    """200: yours (or built in); 403: exists but another team's; 404: no such template."""
    return _call(config, "GET", f"/templates/aliases/{_path(alias)}", f"check whether template '{alias}' exists",
                 lambda r: True, special={404: lambda r: False, 403: lambda r: True})


def assign_tags_call(config: ConnectionConfig, target: str, tags: list[str]) -> HttpCall[TemplateTagInfo]:
    return _call(config, "POST", "/templates/tags", f"tag template '{target}'",
                 lambda r: TemplateTagInfo(build_id=r.json()["buildID"], tags=list(r.json()["tags"])),
                 json={"target": target, "tags": tags})


def remove_tags_call(config: ConnectionConfig, name: str, tags: list[str]) -> HttpCall[None]:
    return _call(config, "DELETE", "/templates/tags", f"untag template '{name}'", lambda r: None,
                 json={"name": name, "tags": tags})


def get_tags_call(config: ConnectionConfig, template: str) -> HttpCall[list[TemplateTag]]:
    return _call(config, "GET", f"/templates/{_path(template)}/tags", f"list the tags of template '{template}'",
                 lambda r: [TemplateTag(tag=t["tag"], build_id=t["buildID"], created_at=_when(t["createdAt"]))
                            for t in r.json()])


# ---- the build ----------------------------------------------------------------------------------------

def _log(on_build_logs: LogCallback, message: str, level: LogEntryLevel = "info") -> None:
    if on_build_logs:
        on_build_logs(LogEntry(timestamp=datetime.now(UTC), level=level, message=message))


def build_flow(config: ConnectionConfig, template: TemplateBase, name: str, *, tags: list[str] | None,
               cpu_count: int | None, memory_mb: int | None, min_free_disk_mb: int | None, skip_cache: bool,
               on_build_logs: LogCallback, wait: bool, build_args: dict[str, str] | None = None) -> Flow:
    """Register, upload, start and (with `wait`) follow one build. Returns its BuildInfo."""
    if skip_cache:
        template._force = True
    body: dict[str, Any] = {"name": name}
    for key, value in (("tags", tags or None), ("cpuCount", cpu_count), ("memoryMB", memory_mb),
                       ("minFreeDiskMb", min_free_disk_mb)):
        if value is not None:
            body[key] = value
    _log(on_build_logs, f"Requesting build for template: {name}" + (f" with tags: {', '.join(tags)}" if tags else ""))
    registered = yield _call(config, "POST", "/v3/templates", f"register a build of template '{name}'",
                             lambda r: r.json(), json=body)
    template_id, build_id = registered["templateID"], registered["buildID"]
    _log(on_build_logs, f"Template created with ID: {template_id}, Build ID: {build_id}")

    ignore = template._ignore_patterns()
    if template._dockerfile is not None:
        context_hash = files_hash(CONTEXT_SOURCE, "CONTEXT", template._context, ignore)
        yield from _upload_files(config, template, template_id, CONTEXT_SOURCE, context_hash, False, True,
                                 on_build_logs, ignore, label=f"the build context {template._context}")
        start: dict[str, Any] = {"dockerfile": template._dockerfile_text(), "contextHash": context_hash,
                                 "force": template._force}
        for key, setting in (("startCmd", template._start_cmd), ("readyCmd", template._ready_cmd),
                             ("buildArgs", build_args)):
            if setting:
                start[key] = setting
    else:
        steps = template._steps_with_hashes()
        seen: set[str] = set()
        for step in steps:
            if step["type"] != "COPY" or (step["filesHash"] in seen and not step.get("forceUpload")):
                continue
            seen.add(step["filesHash"])
            yield from _upload_files(config, template, template_id, step["args"][0], step["filesHash"],
                                     bool(step.get("forceUpload")), step.get("gzip", True), on_build_logs, ignore,
                                     resolve_symlinks=bool(step.get("resolveSymlinks")))
        start = template._serialize(steps)
    _log(on_build_logs, "All file uploads completed")
    _log(on_build_logs, "Starting building...")
    yield _call(config, "POST", f"/v2/templates/{_path(template_id)}/builds/{_path(build_id)}",
                f"start build {build_id} of template '{name}'", lambda r: None, json=start)
    info = BuildInfo(template_id=template_id, build_id=build_id, name=name, alias=name,
                     tags=list(registered.get("tags") or []))
    if wait:
        _log(on_build_logs, "Waiting for logs...")
        yield from _follow(config, template, info, on_build_logs)
    return info


def _upload_files(config: ConnectionConfig, template: TemplateBase, template_id: str, source: str, digest: str,
                  force: bool, gzip: bool, on_build_logs: LogCallback, ignore: list[str], *,
                  resolve_symlinks: bool = False, label: str | None = None) -> Flow:
    what = label or f"'{source}'"
    state = yield _call(config, "GET", f"/templates/{_path(template_id)}/files/{digest}",
                        f"check the files of {what}", lambda r: r.json())
    url = state.get("url")
    if url and (force or not state.get("present")):
        tar = tar_files(source, template._context, ignore, resolve_symlinks, gzip)
        try:
            headers = {**(state.get("headers") or {}), "Content-Length": str(os.fstat(tar.fileno()).st_size),
                       "Content-Type": "application/octet-stream"}
            upload = HttpCall("PUT", url, _ctx(config, f"upload {what}", UPLOAD_TIMEOUT), lambda r: None,
                              headers=headers, timeout=UPLOAD_TIMEOUT)
            yield Upload(upload, tar)
        except SandboxException as exc:
            raise FileUploadException(f"uploading {what} failed: {exc}") from None
        finally:
            tar.close()
        _log(on_build_logs, f"Uploaded {what}")
    else:
        _log(on_build_logs, f"Skipping upload of {what}, already cached")


def _follow(config: ConnectionConfig, template: TemplateBase, info: BuildInfo, on_build_logs: LogCallback) -> Flow:
    """Poll until the build is ready (return) or failed (BuildException), passing on every log entry."""
    offset = 0
    while True:
        status: TemplateBuildStatusResponse = yield status_call(config, info.template_id, info.build_id, offset)
        offset += len(status.log_entries)
        for entry in status.log_entries:
            if on_build_logs:
                on_build_logs(entry)
        if status.status in (TemplateBuildStatus.READY, TemplateBuildStatus.ERROR):
            drained = status
            while drained.log_entries:  # at most 100 entries come per answer: read the rest
                drained = yield status_call(config, info.template_id, info.build_id, offset)
                offset += len(drained.log_entries)
                for entry in drained.log_entries:
                    if on_build_logs:
                        on_build_logs(entry)
            if status.status is TemplateBuildStatus.READY:
                return
            reason = status.reason or BuildStatusReason(message="the build failed")
            raise BuildException(reason.message + _origin(template, reason.step), reason.step, reason.log_entries)
        yield Sleep(POLL_SECONDS)


def _origin(template: TemplateBase, step: str | None) -> str:
    """Where in the user's code the failed step was added, when the server named an SDK step."""
    if step and step.isdigit() and 0 < int(step) <= len(template._origins) and template._origins[int(step) - 1]:
        return f"\n(the step was added at {template._origins[int(step) - 1]})"
    if step == "base" and template._origin:
        return f"\n(the base was chosen at {template._origin})"
    return ""


# ---- running a flow -----------------------------------------------------------------------------------

_PASS_THROUGH = (AuthenticationException, RateLimitException, ServerUnreachableException, TimeoutException,
                 BuildException, TemplateException)


def _as_build_error(exc: BaseException) -> BaseException:
    """API errors of a build surface as BuildException (as in E2B's SDK); who/where errors keep their type."""
    if isinstance(exc, SandboxException) and not isinstance(exc, _PASS_THROUGH):
        return BuildException(str(exc))
    return exc


def run_sync(flow: Flow, transport: SyncTransport) -> Any:
    """Execute a flow with blocking I/O. A step's error is thrown into the flow (which may explain it, as an
    upload does); what leaves the flow surfaces as E2B's SDK raises it (`_as_build_error`)."""
    result: Any = None
    error: BaseException | None = None
    while True:
        finished, step = _advance(flow, result, error)
        if finished:
            return step
        result, error = None, None
        try:
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
            elif isinstance(step, Upload):
                transport.call(replace(step.call, content=sync_body(step.file)))
            else:
                result = transport.call(step)
        except Exception as exc:
            error = exc


async def run_async(flow: Flow, transport: AsyncTransport) -> Any:
    """Execute a flow with asyncio I/O (as `run_sync`)."""
    result: Any = None
    error: BaseException | None = None
    while True:
        # The flow hashes and tars the build's files between its steps: blocking work, done in a worker thread.
        finished, step = await asyncio.to_thread(_advance, flow, result, error)
        if finished:
            return step
        result, error = None, None
        try:
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, Upload):
                await transport.call(replace(step.call, content=async_body(step.file)))
            else:
                result = await transport.call(step)
        except Exception as exc:
            error = exc


def _advance(flow: Flow, result: Any, error: BaseException | None) -> tuple[bool, Any]:
    """The flow's next step, or (True, its return value) once it ended (a StopIteration cannot cross threads).
    An SDK error the flow let through leaves as the build error E2B's SDK raises for it."""
    try:
        return False, flow.throw(error) if error is not None else flow.send(result)
    except StopIteration as stop:
        return True, stop.value
    except SandboxException as exc:
        converted = _as_build_error(exc)
        if converted is exc:
            raise
        raise converted from None
