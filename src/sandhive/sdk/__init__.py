"""Sandhive's Python SDK: `Sandbox` (blocking) and `AsyncSandbox` (asyncio) over one shared core.

    from sandhive import Sandbox

    with Sandbox.create() as sbx:
        print(sbx.commands.run("echo hello").stdout)

`CodeInterpreter` / `AsyncCodeInterpreter` are sandboxes of `code-interpreter-v1` with `run_code`.

Configured by `SANDHIVE_API_KEY` and `SANDHIVE_API_URL` (or E2B's `E2B_API_KEY`, `E2B_API_URL`,
`E2B_SANDBOX_URL`); explicit keyword arguments win. See docs/sdk.md.
"""

from __future__ import annotations

from .code_interpreter import AsyncCodeInterpreter, CodeInterpreter
from .code_models import Context, Execution, ExecutionError, Logs, OutputMessage, Result
from .commands import AsyncCommandHandle, CommandHandle
from .config import ConnectionConfig
from .exceptions import (
    AuthenticationException,
    CommandExitException,
    FileNotFoundException,
    InvalidArgumentException,
    NotEnoughSpaceException,
    NotFoundException,
    RateLimitException,
    SandboxException,
    SandboxNotFoundException,
    ServerUnreachableException,
    TimeoutException,
)
from .models import (
    CommandResult,
    EntryInfo,
    FilesystemEvent,
    FilesystemEventType,
    FileType,
    ProcessInfo,
    PtySize,
    SandboxInfo,
    SandboxMetrics,
    SandboxQuery,
    SandboxState,
    WriteEntry,
    WriteInfo,
)
from .network_calls import (
    ALL_TRAFFIC,
    SandboxNetworkInfo,
    SandboxNetworkOpts,
    SandboxNetworkSelectorContext,
    SandboxNetworkUpdate,
)
from .paginator import AsyncSandboxPaginator, SandboxPaginator
from .sandbox import AsyncSandbox, Sandbox
from .snapshot_calls import SnapshotInfo
from .template import AsyncTemplate, Template, TemplateClass, default_build_logger
from .template_builder import TemplateBase, TemplateBuilder, TemplateFinal
from .template_models import (
    BuildException,
    BuildInfo,
    BuildStatusReason,
    FileUploadException,
    LogEntry,
    LogEntryEnd,
    LogEntryLevel,
    LogEntryStart,
    ReadyCmd,
    TemplateBuildStatus,
    TemplateBuildStatusResponse,
    TemplateException,
    TemplateTag,
    TemplateTagInfo,
    wait_for_file,
    wait_for_port,
    wait_for_process,
    wait_for_timeout,
    wait_for_url,
)
from .volume import Volume
from .volume_calls import VolumeInfo
from .watch import AsyncWatchHandle, WatchHandle

__all__ = [
    "ALL_TRAFFIC",
    "AsyncCodeInterpreter",
    "AsyncCommandHandle",
    "AsyncSandbox",
    "AsyncSandboxPaginator",
    "AsyncTemplate",
    "AsyncWatchHandle",
    "AuthenticationException",
    "BuildException",
    "BuildInfo",
    "BuildStatusReason",
    "CodeInterpreter",
    "CommandExitException",
    "CommandHandle",
    "CommandResult",
    "ConnectionConfig",
    "Context",
    "EntryInfo",
    "Execution",
    "ExecutionError",
    "FileNotFoundException",
    "FileType",
    "FileUploadException",
    "FilesystemEvent",
    "FilesystemEventType",
    "InvalidArgumentException",
    "LogEntry",
    "LogEntryEnd",
    "LogEntryLevel",
    "LogEntryStart",
    "Logs",
    "NotEnoughSpaceException",
    "NotFoundException",
    "OutputMessage",
    "ProcessInfo",
    "PtySize",
    "RateLimitException",
    "ReadyCmd",
    "Result",
    "Sandbox",
    "SandboxException",
    "SandboxInfo",
    "SandboxMetrics",
    "SandboxNetworkInfo",
    "SandboxNetworkOpts",
    "SandboxNetworkSelectorContext",
    "SandboxNetworkUpdate",
    "SandboxNotFoundException",
    "SandboxPaginator",
    "SandboxQuery",
    "SandboxState",
    "ServerUnreachableException",
    "SnapshotInfo",
    "Template",
    "TemplateBase",
    "TemplateBuildStatus",
    "TemplateBuildStatusResponse",
    "TemplateBuilder",
    "TemplateClass",
    "TemplateException",
    "TemplateFinal",
    "TemplateTag",
    "TemplateTagInfo",
    "TimeoutException",
    "Volume",
    "VolumeInfo",
    "WatchHandle",
    "WriteEntry",
    "WriteInfo",
    "default_build_logger",
    "wait_for_file",
    "wait_for_port",
    "wait_for_process",
    "wait_for_timeout",
    "wait_for_url",
]
