"""What the SDK hands back: plain dataclasses and enums with E2B's names and meanings, shared by both faces."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import IO, TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from .network_calls import SandboxNetworkInfo


class SandboxState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"


@dataclass
class SandboxInfo:
    """A sandbox as the server describes it (`get_info`, `list`)."""

    sandbox_id: str
    template_id: str
    name: str | None  # the template alias it was created from, if any
    metadata: dict[str, str]
    started_at: datetime
    end_at: datetime
    state: SandboxState
    cpu_count: int
    memory_mb: int
    disk_size_mb: int
    envd_version: str
    # `get_info` only (a listing leaves them None): its internet switch and its `network` settings, snake_case
    allow_internet_access: bool | None = None
    network: SandboxNetworkInfo | None = None


@dataclass
class SandboxQuery:
    """Filters for `Sandbox.list`: sandboxes whose metadata has all these pairs, in these states."""

    metadata: dict[str, str] | None = None
    state: list[SandboxState] | None = None


@dataclass
class SandboxMetrics:
    """One sample of a sandbox's resource use."""

    timestamp: datetime
    cpu_count: int
    cpu_used_pct: float
    mem_used: int
    mem_total: int
    mem_cache: int
    disk_used: int
    disk_total: int


class FileType(StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"


@dataclass
class WriteInfo:
    """What a write created: the file's name, type and absolute path."""

    name: str
    type: FileType | None
    path: str


@dataclass
class EntryInfo(WriteInfo):
    """A file or directory in the sandbox (`list`, `get_info`, `rename`)."""

    size: int = 0
    mode: int = 0
    permissions: str = ""
    owner: str = ""
    group: str = ""
    modified_time: datetime | None = None
    symlink_target: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def is_dir(self) -> bool:
        """The seed API's name for `type == FileType.DIR`."""
        return self.type is FileType.DIR


class WriteEntry(TypedDict):
    """One file for `files.write_files`."""

    path: str
    data: str | bytes | IO


class FilesystemEventType(StrEnum):
    CHMOD = "chmod"
    CREATE = "create"
    REMOVE = "remove"
    RENAME = "rename"
    WRITE = "write"


@dataclass
class FilesystemEvent:
    """A change in a watched directory; `name` is relative to it."""

    name: str
    type: FilesystemEventType


@dataclass
class ProcessInfo:
    """A running command or PTY (`commands.list`)."""

    pid: int
    tag: str | None
    cmd: str
    args: list[str]
    envs: dict[str, str]
    cwd: str | None


@dataclass
class PtySize:
    rows: int
    cols: int


@dataclass
class CommandResult:
    """A finished command: its whole output and how it ended."""

    stdout: str
    stderr: str
    exit_code: int
    error: str | None = None
