"""The tools an MCP client sees: sandboxes made, used and killed through Sandhive's own async SDK.

Each tool is a method of `Tools`; its docstring is the description the model reads, its typed parameters (with
`Field` descriptions) become the input schema, and its return type the output schema. A tool that uses a running
sandbox connects to it for that call (which, as every connect does, keeps it alive at least the server's default
timeout) and lets it go afterwards; the sandbox lives on until `kill_sandbox` or its timeout.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import Field

from ..sdk import (
    AsyncCodeInterpreter,
    AsyncCommandHandle,
    AsyncSandbox,
    CommandExitException,
    CommandResult,
)
from ..version import __version__
from .access import Access, api_errors
from .results import (
    MAX_FILE_BYTES,
    CodeOutcome,
    CommandOutcome,
    CreatedSandbox,
    FileList,
    Host,
    Killed,
    SandboxList,
    SandboxSummary,
    WrittenFile,
    tail,
)

INSTRUCTIONS = """Sandhive runs isolated Linux sandboxes (E2B-compatible). Create one with create_sandbox, pass its
sandbox_id to run_command, run_code, read_file, write_file, list_files and get_host, and kill it with kill_sandbox
when done (it is killed anyway when its timeout passes). Commands run as the sandbox's user `user` in
/home/user."""

SandboxId = Annotated[str, Field(description="The sandbox's id, from create_sandbox or list_sandboxes.")]
Path = Annotated[str, Field(description="A path inside the sandbox; relative paths start in the user's home "
                                        "(/home/user).")]
EnvVars = Annotated[dict[str, str] | None, Field(description="Environment variables, name to value.")]

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
CHANGES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)


class Tools:
    """The tools, bound to the server's `Access` (its URL, and where each call's API key comes from)."""

    def __init__(self, access: Access) -> None:
        self.access = access

    def _opts(self, ctx: Context) -> dict:
        return self.access.options(ctx.headers)

    async def _connect(self, ctx: Context, sandbox_id: str) -> AsyncSandbox:
        return await AsyncSandbox.connect(sandbox_id, **self._opts(ctx))

    async def create_sandbox(
        self, ctx: Context,
        template: Annotated[str, Field(description="Template name or id: base (Debian with Python), "
                                                   "code-interpreter-v1 (for run_code), or your own.")] = "base",
        timeout: Annotated[int, Field(description="Seconds the sandbox lives unless used again (each use "
                                                  "extends it to at least the server's default).", ge=1)] = 300,
        env_vars: EnvVars = None,
        metadata: Annotated[dict[str, str] | None, Field(description="Labels to find it by later.")] = None,
    ) -> CreatedSandbox:
        """Start a new sandbox and return its id. Use template code-interpreter-v1 to run code with run_code."""
        with api_errors():
            sandbox = await AsyncSandbox.create(template, timeout=timeout, envs=env_vars, metadata=metadata,
                                                **self._opts(ctx))
        return CreatedSandbox(sandbox_id=sandbox.sandbox_id, template_id=sandbox.template_id)

    async def run_command(
        self, ctx: Context, sandbox_id: SandboxId,
        command: Annotated[str, Field(description="A shell command line (run by bash -l -c).")],
        background: Annotated[bool, Field(description="Start it and return its pid at once, without waiting; "
                                                      "it runs on after this call.")] = False,
        cwd: Annotated[str | None, Field(description="Working directory (default: /home/user).")] = None,
        env_vars: EnvVars = None,
        timeout: Annotated[float, Field(description="Seconds to wait for it to end before it is killed "
                                                    "(ignored with background).", gt=0)] = 60,
    ) -> CommandOutcome:
        """Run a shell command in a sandbox and return its stdout, stderr and exit code. A non-zero exit code is a
        result, not an error. Output longer than 64 KiB per stream keeps its end."""
        with api_errors():
            sandbox = await self._connect(ctx, sandbox_id)
            if background:
                handle = await sandbox.commands.run(command, background=True, cwd=cwd, envs=env_vars, timeout=0)
                assert isinstance(handle, AsyncCommandHandle)
                await handle.disconnect()  # stop reading: the process runs on
                return CommandOutcome(pid=handle.pid)
            try:
                result = await sandbox.commands.run(command, cwd=cwd, envs=env_vars, timeout=timeout)
            except CommandExitException as exc:
                return CommandOutcome(stdout=tail(exc.stdout), stderr=tail(exc.stderr), exit_code=exc.exit_code,
                                      error=exc.error)
        assert isinstance(result, CommandResult)
        return CommandOutcome(stdout=tail(result.stdout), stderr=tail(result.stderr), exit_code=result.exit_code,
                              error=result.error)

    async def run_code(
        self, ctx: Context, sandbox_id: SandboxId,
        code: Annotated[str, Field(description="The code to run, as a notebook cell (state persists between "
                                               "calls in the same sandbox).")],
        language: Annotated[str | None, Field(description="python (default), javascript, r, java or bash.")] = None,
        timeout: Annotated[float, Field(description="Seconds it may run before it is interrupted.", gt=0)] = 300,
    ) -> Annotated[CallToolResult, CodeOutcome]:
        """Run code in a Jupyter kernel of a code-interpreter sandbox (create_sandbox with template
        code-interpreter-v1) and return the cell's result, its printed output and any exception; plots come back
        as images."""
        with api_errors():
            sandbox = await AsyncCodeInterpreter.connect(sandbox_id, **self._opts(ctx))
            # In a sandbox of another template the SDK's error says to start one from code-interpreter-v1.
            execution = await sandbox.run_code(code, language=language, timeout=timeout)
        return CodeOutcome.of(execution).to_result(execution)

    async def read_file(self, ctx: Context, sandbox_id: SandboxId, path: Path) -> str:
        """Read a text file (UTF-8, at most 1 MiB) from a sandbox. For larger or binary files use run_command
        (e.g. head, tail, base64)."""
        with api_errors():
            sandbox = await self._connect(ctx, sandbox_id)
            data = bytearray()
            chunks = await sandbox.files.read(path, format="stream")
            assert isinstance(chunks, AsyncGenerator)  # the "stream" format's answer
            try:
                async for chunk in chunks:
                    data += chunk
                    if len(data) > MAX_FILE_BYTES:
                        raise ToolError(f"{path} is larger than {MAX_FILE_BYTES} bytes: read it in parts with "
                                        "run_command (head -c, tail -c, sed -n)")
            finally:
                await chunks.aclose()
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise ToolError(f"{path} is not UTF-8 text: read it with run_command (e.g. base64 {path})") from None

    async def write_file(
        self, ctx: Context, sandbox_id: SandboxId, path: Path,
        content: Annotated[str, Field(description="The whole new content (UTF-8 text).")],
    ) -> WrittenFile:
        """Write a text file in a sandbox, creating missing parent directories and replacing any old content."""
        data = content.encode()
        with api_errors():
            sandbox = await self._connect(ctx, sandbox_id)
            info = await sandbox.files.write(path, data)
        return WrittenFile(path=info.path, bytes=len(data))

    async def list_files(
        self, ctx: Context, sandbox_id: SandboxId, path: Path = "/home/user",
        depth: Annotated[int, Field(description="How many levels down to list (1: the directory's own entries).",
                                    ge=1, le=5)] = 1,
    ) -> FileList:
        """List the files and directories under a path in a sandbox, with their type and size."""
        with api_errors():
            sandbox = await self._connect(ctx, sandbox_id)
            return FileList.of(await sandbox.files.list(path, depth=depth))

    async def get_host(
        self, ctx: Context, sandbox_id: SandboxId,
        port: Annotated[int, Field(description="A port a server listens on inside the sandbox.", ge=1, le=65535)],
    ) -> Host:
        """The public host name that reaches a port inside a sandbox through the Sandhive server (for a web server
        or API started there with run_command in the background)."""
        with api_errors():
            sandbox = await self._connect(ctx, sandbox_id)
        host = sandbox.get_host(port)
        scheme = "https" if self.access.api_url.startswith("https:") else "http"
        return Host(host=host, url=f"{scheme}://{host}")

    async def list_sandboxes(self, ctx: Context) -> SandboxList:
        """List your running and paused sandboxes."""
        with api_errors():
            found = [SandboxSummary.of(info) async for info in AsyncSandbox.list(**self._opts(ctx))]
        return SandboxList(sandboxes=found)

    async def kill_sandbox(self, ctx: Context, sandbox_id: SandboxId) -> Killed:
        """Kill a sandbox: its processes and files are gone for good."""
        with api_errors():
            killed = await AsyncSandbox.kill(sandbox_id, **self._opts(ctx))
        if not killed:
            raise ToolError(f"no sandbox {sandbox_id}: it was killed already, its timeout passed, or it never "
                            "existed (list_sandboxes shows yours)")
        return Killed(sandbox_id=sandbox_id, killed=True)


def build_server(access: Access) -> MCPServer:
    """The MCP server with every tool, each acting through `access`."""
    server: MCPServer = MCPServer("sandhive", title="Sandhive sandboxes", version=__version__,
                                  instructions=INSTRUCTIONS, log_level="WARNING")
    tools = Tools(access)
    server.add_tool(tools.create_sandbox, annotations=CHANGES)
    server.add_tool(tools.run_command, annotations=CHANGES)
    server.add_tool(tools.run_code, annotations=CHANGES)
    server.add_tool(tools.read_file, annotations=READ_ONLY)
    server.add_tool(tools.write_file, annotations=CHANGES)
    server.add_tool(tools.list_files, annotations=READ_ONLY)
    server.add_tool(tools.get_host, annotations=READ_ONLY)
    server.add_tool(tools.list_sandboxes, annotations=READ_ONLY)
    server.add_tool(tools.kill_sandbox, annotations=DESTRUCTIVE)
    return server
