"""Sandhive: self-hosted sandboxes for AI agents, compatible with E2B's SDKs.

`from sandhive import Sandbox, AsyncSandbox` is the SDK (`sandhive.sdk`). It is imported lazily, on first
use of one of its names: sandboxes' system image ships only this file, `sandhive.envd` and `sandhive.rpc`,
and `import sandhive.envd` there must not pull in the SDK (or httpx).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

# The SDK's public names, re-exported here (the list is sandhive.sdk.__all__; a test keeps the two equal).
_SDK_NAMES = (
    "AsyncCodeInterpreter", "AsyncCommandHandle", "AsyncSandbox", "AsyncSandboxPaginator", "AsyncTemplate",
    "AsyncWatchHandle",
    "AuthenticationException", "BuildException", "BuildInfo", "BuildStatusReason", "CommandExitException",
    "CodeInterpreter", "CommandHandle", "CommandResult", "ConnectionConfig", "Context", "Execution",
    "ExecutionError", "Logs", "OutputMessage", "Result", "EntryInfo", "FileNotFoundException", "FileType",
    "FileUploadException", "FilesystemEvent", "FilesystemEventType", "InvalidArgumentException", "LogEntry",
    "LogEntryEnd", "LogEntryLevel", "LogEntryStart", "NotEnoughSpaceException", "NotFoundException", "ProcessInfo",
    "PtySize", "RateLimitException", "ReadyCmd", "Sandbox", "SandboxException", "SandboxInfo", "SandboxMetrics",
    "SandboxNetworkInfo", "SandboxNetworkOpts", "SandboxNetworkSelectorContext", "SandboxNetworkUpdate", "ALL_TRAFFIC",
    "SandboxNotFoundException", "SandboxPaginator", "SandboxQuery", "SandboxState", "ServerUnreachableException",
    "SnapshotInfo",
    "Template", "TemplateBase", "TemplateBuildStatus", "TemplateBuildStatusResponse", "TemplateBuilder",
    "TemplateClass", "TemplateException", "TemplateFinal", "TemplateTag", "TemplateTagInfo", "TimeoutException",
    "Volume", "VolumeInfo", "WatchHandle", "WriteEntry", "WriteInfo", "default_build_logger", "wait_for_file",
    "wait_for_port", "wait_for_process", "wait_for_timeout", "wait_for_url",
)

__all__ = ["__version__", *_SDK_NAMES]

if TYPE_CHECKING:
    from .sdk import *  # noqa: F403 — for type checkers and IDEs only


def __getattr__(name: str) -> Any:
    if name in _SDK_NAMES:
        from . import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'sandhive' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SDK_NAMES))
