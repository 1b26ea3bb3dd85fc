"""`Template` and `AsyncTemplate`: build sandbox templates from Python, as with E2B's SDK.

    from sandhive import Template

    template = Template().from_image("python:3.11-slim").pip_install(["pandas"]).set_workdir("/workspace")
    Template.build(template, "data-science", on_build_logs=print)
    # or, from a Dockerfile and its directory (Sandhive's extension of E2B's API):
    Template.build(Template(file_context_path="app").from_dockerfile("Dockerfile"), "my-app")

Both faces run the same flow (`template_flow`) through the SDK's one transport (`transport`); they differ only in
`def` versus `async def`.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .config import ConnectionConfig
from .template_builder import TemplateBase, TemplateBuilder, TemplateFinal
from .template_flow import (
    LogCallback,
    alias_exists_call,
    assign_tags_call,
    build_flow,
    get_tags_call,
    remove_tags_call,
    run_async,
    run_sync,
    status_call,
)
from .template_models import (
    BuildInfo,
    LogEntry,
    LogEntryEnd,
    LogEntryStart,
    TemplateBuildStatusResponse,
    TemplateException,
    TemplateTag,
    TemplateTagInfo,
)
from .transport import AsyncTransport, SyncTransport

if TYPE_CHECKING:
    from typing import Unpack

    from .config import ConnectionOptions

TemplateClass = TemplateBuilder | TemplateFinal


def _name(name: str | None, alias: str | None) -> str:
    chosen = name or alias
    if not chosen:
        raise TemplateException("a template name is needed: Template.build(template, 'my-template')")
    return chosen


def _base(template: Any) -> TemplateBase:
    """The definition behind whatever the chain returned (`TemplateBuilder`, `TemplateFinal`, or itself)."""
    base = getattr(template, "_template", template)
    if not isinstance(base, TemplateBase):
        raise TemplateException(f"not a template: {template!r} (build what `Template().from_...` returns)")
    return base


def _run(flow: Any, config: ConnectionConfig) -> Any:
    transport = SyncTransport(config)
    try:
        return run_sync(flow, transport)
    finally:
        transport.close()


async def _run_async(flow: Any, config: ConnectionConfig) -> Any:
    transport = AsyncTransport(config)
    try:
        return await run_async(flow, transport)
    finally:
        await transport.close()


def _bracket(on_build_logs: LogCallback, entry: type[LogEntryStart | LogEntryEnd], message: str) -> None:
    if on_build_logs:
        on_build_logs(entry(timestamp=datetime.now(UTC), message=message))


class Template(TemplateBase):
    """A template definition, and the blocking calls that build and inspect templates."""

    @classmethod
    def build(cls, template: TemplateClass, name: str | None = None, *, alias: str | None = None,
              tags: list[str] | None = None, cpu_count: int | None = None, memory_mb: int | None = None,
              min_free_disk_mb: int | None = None, skip_cache: bool = False, on_build_logs: LogCallback = None,
              build_args: dict[str, str] | None = None, **opts: Unpack[ConnectionOptions]) -> BuildInfo:
        """Build `template` as `name` ('name' or 'name:tag') and wait until it is ready.

        Raises BuildException (with the failing step and the last log lines) if the build fails. `skip_cache`
        rebuilds every layer; `build_args` are ARG values of a `from_dockerfile` template.
        """
        chosen = _name(name, alias)
        _bracket(on_build_logs, LogEntryStart, "Build started")
        try:
            config = ConnectionConfig.resolve(**opts)
            flow = build_flow(config, _base(template), chosen, tags=tags, cpu_count=cpu_count,
                              memory_mb=memory_mb, min_free_disk_mb=min_free_disk_mb, skip_cache=skip_cache,
                              on_build_logs=on_build_logs, wait=True, build_args=build_args)
            return _run(flow, config)
        finally:
            _bracket(on_build_logs, LogEntryEnd, "Build finished")

    @classmethod
    def build_in_background(cls, template: TemplateClass, name: str | None = None, *, alias: str | None = None,
                            tags: list[str] | None = None, cpu_count: int | None = None,
                            memory_mb: int | None = None, min_free_disk_mb: int | None = None,
                            skip_cache: bool = False, on_build_logs: LogCallback = None,
                            build_args: dict[str, str] | None = None,
                            **opts: Unpack[ConnectionOptions]) -> BuildInfo:
        """Start a build and return at once; follow it with `get_build_status`."""
        config = ConnectionConfig.resolve(**opts)
        flow = build_flow(config, _base(template), _name(name, alias), tags=tags, cpu_count=cpu_count,
                          memory_mb=memory_mb, min_free_disk_mb=min_free_disk_mb, skip_cache=skip_cache,
                          on_build_logs=on_build_logs, wait=False, build_args=build_args)
        return _run(flow, config)

    @classmethod
    def get_build_status(cls, build_info: BuildInfo, logs_offset: int | None = None,
                         **opts: Unpack[ConnectionOptions]) -> TemplateBuildStatusResponse:
        """The build's status and its log entries from `logs_offset`."""
        return cls._once(status_call(ConnectionConfig.resolve(**opts), build_info.template_id,
                                     build_info.build_id, logs_offset), opts)

    @classmethod
    def exists(cls, name: str, **opts: Unpack[ConnectionOptions]) -> bool:
        """Whether a template answers to `name` (yours, another team's, or built in)."""
        return cls._once(alias_exists_call(ConnectionConfig.resolve(**opts), name), opts)

    @classmethod
    def alias_exists(cls, alias: str, **opts: Unpack[ConnectionOptions]) -> bool:
        return cls.exists(alias, **opts)

    @classmethod
    def assign_tags(cls, target_name: str, tags: str | list[str], **opts: Unpack[ConnectionOptions]) -> TemplateTagInfo:
        """More tags for the build `target_name` ('name:tag')."""
        names = [tags] if isinstance(tags, str) else list(tags)
        return cls._once(assign_tags_call(ConnectionConfig.resolve(**opts), target_name, names), opts)

    @classmethod
    def remove_tags(cls, name: str, tags: str | list[str], **opts: Unpack[ConnectionOptions]) -> None:
        names = [tags] if isinstance(tags, str) else list(tags)
        cls._once(remove_tags_call(ConnectionConfig.resolve(**opts), name, names), opts)

    @classmethod
    def get_tags(cls, template_id: str, **opts: Unpack[ConnectionOptions]) -> list[TemplateTag]:
        return cls._once(get_tags_call(ConnectionConfig.resolve(**opts), template_id), opts)

    @staticmethod
    def _once(call: Any, opts: ConnectionOptions) -> Any:
        config = ConnectionConfig.resolve(**opts)

        def one() -> Any:
            return (yield call)

        return _run(one(), config)


class AsyncTemplate(TemplateBase):
    """A template definition, and the asyncio calls that build and inspect templates (as `Template`'s)."""

    @classmethod
    async def build(cls, template: TemplateClass, name: str | None = None, *, alias: str | None = None,
                    tags: list[str] | None = None, cpu_count: int | None = None, memory_mb: int | None = None,
                    min_free_disk_mb: int | None = None, skip_cache: bool = False,
                    on_build_logs: LogCallback = None, build_args: dict[str, str] | None = None,
                    **opts: Unpack[ConnectionOptions]) -> BuildInfo:
        chosen = _name(name, alias)
        _bracket(on_build_logs, LogEntryStart, "Build started")
        try:
            config = ConnectionConfig.resolve(**opts)
            flow = build_flow(config, _base(template), chosen, tags=tags, cpu_count=cpu_count,
                              memory_mb=memory_mb, min_free_disk_mb=min_free_disk_mb, skip_cache=skip_cache,
                              on_build_logs=on_build_logs, wait=True, build_args=build_args)
            return await _run_async(flow, config)
        finally:
            _bracket(on_build_logs, LogEntryEnd, "Build finished")

    @classmethod
    async def build_in_background(cls, template: TemplateClass, name: str | None = None, *,
                                  alias: str | None = None, tags: list[str] | None = None,
                                  cpu_count: int | None = None, memory_mb: int | None = None,
                                  min_free_disk_mb: int | None = None, skip_cache: bool = False,
                                  on_build_logs: LogCallback = None, build_args: dict[str, str] | None = None,
                                  **opts: Unpack[ConnectionOptions]) -> BuildInfo:
        config = ConnectionConfig.resolve(**opts)
        flow = build_flow(config, _base(template), _name(name, alias), tags=tags, cpu_count=cpu_count,
                          memory_mb=memory_mb, min_free_disk_mb=min_free_disk_mb, skip_cache=skip_cache,
                          on_build_logs=on_build_logs, wait=False, build_args=build_args)
        return await _run_async(flow, config)

    @classmethod
    async def get_build_status(cls, build_info: BuildInfo, logs_offset: int | None = None,
                               **opts: Unpack[ConnectionOptions]) -> TemplateBuildStatusResponse:
        return await cls._once(status_call(ConnectionConfig.resolve(**opts), build_info.template_id,
                                           build_info.build_id, logs_offset), opts)

    @classmethod
    async def exists(cls, name: str, **opts: Unpack[ConnectionOptions]) -> bool:
        return await cls._once(alias_exists_call(ConnectionConfig.resolve(**opts), name), opts)

    @classmethod
    async def alias_exists(cls, alias: str, **opts: Unpack[ConnectionOptions]) -> bool:
        return await cls.exists(alias, **opts)

    @classmethod
    async def assign_tags(cls, target_name: str, tags: str | list[str],
                          **opts: Unpack[ConnectionOptions]) -> TemplateTagInfo:
        names = [tags] if isinstance(tags, str) else list(tags)
        return await cls._once(assign_tags_call(ConnectionConfig.resolve(**opts), target_name, names), opts)

    @classmethod
    async def remove_tags(cls, name: str, tags: str | list[str], **opts: Unpack[ConnectionOptions]) -> None:
        names = [tags] if isinstance(tags, str) else list(tags)
        await cls._once(remove_tags_call(ConnectionConfig.resolve(**opts), name, names), opts)

    @classmethod
    async def get_tags(cls, template_id: str, **opts: Unpack[ConnectionOptions]) -> list[TemplateTag]:
        return await cls._once(get_tags_call(ConnectionConfig.resolve(**opts), template_id), opts)

    @staticmethod
    async def _once(call: Any, opts: ConnectionOptions) -> Any:
        config = ConnectionConfig.resolve(**opts)

        def one() -> Any:
            return (yield call)

        return await _run_async(one(), config)


def default_build_logger(min_level: str = "info") -> LogCallback:
    """An `on_build_logs` that prints entries at `min_level` or above, one a line."""
    order = ["debug", "info", "warn", "error"]
    floor = order.index(min_level) if min_level in order else 1

    def log(entry: LogEntry) -> None:
        if order.index(entry.level) >= floor if entry.level in order else True:
            with contextlib.suppress(Exception):
                print(f"{entry.timestamp.astimezone().strftime('%H:%M:%S')} {entry.level.upper():5} {entry.message}")

    return log
