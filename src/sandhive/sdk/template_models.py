"""What template builds report: log entries, build status, build info and tags (the names of E2B's SDK)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

from .exceptions import SandboxException

LogEntryLevel = Literal["debug", "info", "warn", "error"]
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


class TemplateException(SandboxException):
    """A template cannot be defined or used as asked (a bad path, a bad name, an unknown template)."""


class BuildException(SandboxException):
    """A template build failed. `step` is where (`base`, a step number, `finalize`, or a Dockerfile step) and
    `log_entries` the last lines of the build log, when the server said."""

    def __init__(self, message: str, step: str | None = None, log_entries: list[LogEntry] | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.log_entries = list(log_entries or [])


class FileUploadException(BuildException):
    """Uploading the files of a COPY step (or a Dockerfile's context) failed."""


@dataclass
class LogEntry:
    """One line of a build's log."""

    timestamp: datetime
    level: LogEntryLevel
    message: str

    def __post_init__(self) -> None:
        self.message = _ANSI.sub("", self.message)

    def __str__(self) -> str:
        return f"[{self.timestamp.isoformat()}] [{self.level}] {self.message}"


@dataclass
class LogEntryStart(LogEntry):
    """The first entry `on_build_logs` gets for a build."""

    level: LogEntryLevel = field(default="debug", init=False)


@dataclass
class LogEntryEnd(LogEntry):
    """The last entry `on_build_logs` gets for a build, whatever its outcome."""

    level: LogEntryLevel = field(default="debug", init=False)


class TemplateBuildStatus(StrEnum):
    BUILDING = "building"
    WAITING = "waiting"
    READY = "ready"
    ERROR = "error"


@dataclass
class BuildStatusReason:
    """Why a build is in its status (a failed build: what went wrong, at which step, the last log lines)."""

    message: str
    step: str | None = None
    log_entries: list[LogEntry] = field(default_factory=list)


@dataclass
class TemplateBuildStatusResponse:
    build_id: str
    template_id: str
    status: TemplateBuildStatus
    log_entries: list[LogEntry]
    logs: list[str] = field(default_factory=list)
    reason: BuildStatusReason | None = None


@dataclass
class BuildInfo:
    """A build the server accepted: the template's id, the build's id, the name and tags it was given."""

    template_id: str
    build_id: str
    name: str
    alias: str  # the name again (E2B's older field)
    tags: list[str] = field(default_factory=list)


@dataclass
class TemplateTag:
    tag: str
    build_id: str
    created_at: datetime


@dataclass
class TemplateTagInfo:
    build_id: str
    tags: list[str]


class ReadyCmd:
    """A ready check: a shell command that exits 0 once a sandbox of the template is ready."""

    def __init__(self, cmd: str) -> None:
        self._cmd = cmd

    def get_cmd(self) -> str:
        return self._cmd


def wait_for_port(port: int) -> ReadyCmd:
    """Ready once something listens on `port` (needs `ss`, from iproute2)."""
    return ReadyCmd(f'[ -n "$(ss -Htuln sport = :{int(port)})" ]')


def wait_for_url(url: str, status_code: int = 200) -> ReadyCmd:
    """Ready once `url` answers `status_code` (needs curl)."""
    return ReadyCmd(f'curl -s -o /dev/null -w "%{{http_code}}" {shlex.quote(url)} | grep -q "{int(status_code)}"')


def wait_for_process(process_name: str) -> ReadyCmd:
    """Ready once a process called `process_name` runs (needs pgrep, from procps)."""
    return ReadyCmd(f"pgrep {shlex.quote(process_name)} > /dev/null")


def wait_for_file(filename: str) -> ReadyCmd:
    """Ready once `filename` exists."""
    return ReadyCmd(f"[ -f {shlex.quote(filename)} ]")


def wait_for_timeout(timeout: int) -> ReadyCmd:
    """Ready `timeout` milliseconds after the start command started (at least a second)."""
    return ReadyCmd(f"sleep {max(1, int(timeout) // 1000)}")
