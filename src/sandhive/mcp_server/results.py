"""What the tools answer: typed results (the MCP SDK derives each tool's output schema from them) and the
bounds that keep one answer small enough for a model's context."""

from __future__ import annotations

import re
from datetime import datetime

from mcp.types import CallToolResult, ContentBlock, ImageContent, TextContent
from pydantic import BaseModel, Field

from ..sdk import EntryInfo, Execution, SandboxInfo

MAX_OUTPUT_CHARS = 64 * 1024  # per stream of a command or a cell: the tail is kept, where errors are
MAX_FILE_BYTES = 1024 * 1024  # read_file's largest answer; bigger files are read in parts with run_command
MAX_IMAGES = 4  # run_code's plots sent as images in one answer
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colours (IPython colours its tracebacks)


class SandboxSummary(BaseModel):
    """A sandbox as the tools show it."""

    sandbox_id: str
    template_id: str
    template_alias: str | None = Field(default=None, description="The template name it was created from, if any.")
    state: str = Field(description="running or paused")
    started_at: datetime
    end_at: datetime = Field(description="When it is killed unless used or extended before.")
    metadata: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def of(cls, info: SandboxInfo) -> SandboxSummary:
        return cls(sandbox_id=info.sandbox_id, template_id=info.template_id, template_alias=info.name,
                   state=str(info.state.value), started_at=info.started_at, end_at=info.end_at,
                   metadata=dict(info.metadata or {}))


class CreatedSandbox(BaseModel):
    sandbox_id: str = Field(description="Pass this to the other tools.")
    template_id: str


class SandboxList(BaseModel):
    sandboxes: list[SandboxSummary]


class CommandOutcome(BaseModel):
    """A finished command, or (background) a started one."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = Field(default=None, description="None while a background command runs.")
    error: str | None = Field(default=None, description="Why the command could not run or was ended, if it was.")
    pid: int | None = Field(default=None, description="The process id of a background command.")


class CodeOutcome(BaseModel):
    """One run of code in a code-interpreter sandbox."""

    text: str | None = Field(default=None, description="The text of the main result (the cell's last expression).")
    results: list[str] = Field(default_factory=list,
                               description="Each result's text, with the other formats it has (png, html, ...).")
    stdout: str = ""
    stderr: str = ""
    error: str | None = Field(default=None, description="The exception the code raised: name, value and traceback.")

    @classmethod
    def of(cls, execution: Execution) -> CodeOutcome:
        results = []
        for result in execution.results:
            others = [f for f in result.formats() if f != "text"]
            results.append((result.text or "") + (f" [also as: {', '.join(others)}]" if others else ""))
        error = execution.error
        return cls(text=execution.text, results=results, stdout=tail("".join(execution.logs.stdout)),
                   stderr=tail("".join(execution.logs.stderr)),
                   error=tail(plain(f"{error.name}: {error.value}\n{error.traceback}")) if error else None)

    def to_result(self, execution: Execution) -> CallToolResult:
        """This outcome as the tool's answer: its JSON for the model and the client, and the execution's images
        (PNG, JPEG plots; at most MAX_IMAGES) as image content a multimodal model can look at."""
        images: list[ContentBlock] = [
            ImageContent(type="image", data=data, mime_type=f"image/{fmt}")
            for result in execution.results for fmt in ("png", "jpeg") if (data := getattr(result, fmt))]
        text = TextContent(type="text", text=self.model_dump_json(indent=2))
        return CallToolResult(content=[text, *images[:MAX_IMAGES]], structured_content=self.model_dump(mode="json"))


class FileEntry(BaseModel):
    name: str
    path: str
    type: str | None = Field(default=None, description="file, dir or symlink")
    size: int = 0


class FileList(BaseModel):
    entries: list[FileEntry]

    @classmethod
    def of(cls, entries: list[EntryInfo]) -> FileList:
        return cls(entries=[FileEntry(name=e.name, path=e.path, type=e.type.value if e.type else None, size=e.size)
                            for e in entries])


class WrittenFile(BaseModel):
    path: str
    bytes: int


class Host(BaseModel):
    host: str = Field(description="The Host that reaches the port through the Sandhive server.")
    url: str = Field(description="An http URL for the port (resolve *.localhost to loopback, or send the Host "
                                 "header to the server's address).")


class Killed(BaseModel):
    sandbox_id: str
    killed: bool


def tail(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    """`text`, or its last `limit` characters after a line that says how much was cut."""
    if len(text) <= limit:
        return text
    return f"[... {len(text) - limit} earlier characters cut ...]\n" + text[-limit:]


def plain(text: str) -> str:
    """`text` without terminal colour codes, which a model reads as noise."""
    return ANSI.sub("", text)
