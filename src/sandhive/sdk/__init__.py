"""Sandhive's Python SDK: `Sandbox` (blocking) and `AsyncSandbox` (asyncio) over one shared core.

    from sandhive import Sandbox

    with Sandbox.create() as sbx:
        print(sbx.commands.run("echo hello").stdout)

Configured by `SANDHIVE_API_KEY` and `SANDHIVE_API_URL` (or E2B's `E2B_API_KEY`, `E2B_API_URL`,
`E2B_SANDBOX_URL`); explicit keyword arguments win. See docs/sdk.md.
"""

from __future__ import annotations

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
from .paginator import AsyncSandboxPaginator, SandboxPaginator
from .sandbox import AsyncSandbox, Sandbox
from .watch import AsyncWatchHandle, WatchHandle

__all__ = [
    "AsyncCommandHandle",
    "AsyncSandbox",
    "AsyncSandboxPaginator",
    "AsyncWatchHandle",
    "AuthenticationException",
    "CommandExitException",
    "CommandHandle",
    "CommandResult",
    "ConnectionConfig",
    "EntryInfo",
    "FileNotFoundException",
    "FileType",
    "FilesystemEvent",
    "FilesystemEventType",
    "InvalidArgumentException",
    "NotEnoughSpaceException",
    "NotFoundException",
    "ProcessInfo",
    "PtySize",
    "RateLimitException",
    "Sandbox",
    "SandboxException",
    "SandboxInfo",
    "SandboxMetrics",
    "SandboxNotFoundException",
    "SandboxPaginator",
    "SandboxQuery",
    "SandboxState",
    "ServerUnreachableException",
    "TimeoutException",
    "WatchHandle",
    "WriteEntry",
    "WriteInfo",
]
