"""`sandhive mcp` driven by the official `mcp` SDK's own client, over stdio and over streamable HTTP, against a live
`sandhive serve` (container backend: the MCP server is a client of the API, the same code whatever the backend).

One server for the module, without a pool (its first create prepares the template, ~12 s; the others take < 1 s).
The stdio server is `python -m sandhive.cli mcp` spawned by the client itself; the HTTP one is
`sandhive mcp --http 127.0.0.1:PORT`, started here and stopped by PID. Both run with an environment of their own
(no SANDHIVE_*/E2B_* from outside, a private HOME), so only what a test passes reaches them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent

from tests.api.rig import Server, container_server
from tests.helpers import free_port, stop_process_group, wait_until, wait_until_async

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]

TEAM = "mcp"
SRC = Path(__file__).resolve().parents[2] / "src"
TOOLS = {"create_sandbox", "run_command", "run_code", "read_file", "write_file", "list_files", "get_host",
         "list_sandboxes", "kill_sandbox"}


def own_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SANDHIVE_", "E2B_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), PYTHONPATH=str(SRC), **extra)
    return env


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[Server, str]]:
    with container_server("mcp", TEAM, "--pool-size", "0") as server:  # no warm sandboxes: fewer CPUs busy
        yield server, server.key(TEAM)


@pytest.fixture(scope="module")
def http_url(live: tuple[Server, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`sandhive mcp --http` on a free loopback port: its /mcp URL once it answers."""
    server, _ = live
    port = free_port()
    log = tmp_path_factory.mktemp("mcp-http") / "mcp-http.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sandhive.cli", "mcp", "--http", f"127.0.0.1:{port}"],
                                env=own_env(log.parent, SANDHIVE_API_URL=server.url), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/mcp"

    def answers() -> bool:
        assert proc.poll() is None, f"sandhive mcp --http exited {proc.returncode}:\n{log.read_text()}"
        try:
            return httpx.post(url, json={}, trust_env=False, timeout=5).status_code == 401  # no key: refused
        except httpx.TransportError:
            return False

    try:
        wait_until(answers, 60, "sandhive mcp --http to answer")
        yield url
    finally:
        stop_process_group(proc)
        assert "Traceback" not in log.read_text(), log.read_text()


@asynccontextmanager
async def stdio_client(live: tuple[Server, str], home: Path, key: str | None = None) -> AsyncIterator[Client]:
    server, good_key = live
    params = StdioServerParameters(command=sys.executable, args=["-m", "sandhive.cli", "mcp"],
                                   env=own_env(home, SANDHIVE_API_URL=server.url, SANDHIVE_API_KEY=key or good_key))
    async with Client(params, read_timeout_seconds=120) as client:
        yield client


@asynccontextmanager
async def http_client(url: str, headers: dict[str, str]) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers=headers, timeout=120) as http, \
            Client(streamable_http_client(url, http_client=http), read_timeout_seconds=120) as client:
        yield client


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool's structured answer; an error result fails the test with its message."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, f"{tool} failed: {text(result)}"
    assert result.structured_content is not None
    return result.structured_content


async def error_of(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool} did not fail: {result.structured_content}"
    message = text(result)
    assert "Traceback" not in message
    return message


async def drive_a_sandbox(client: Client) -> str:
    """What the issue asks of either transport: tools listed, a sandbox created, `echo mcp-ok` run, a file
    written, read back and listed, the sandbox killed and gone from the list. Returns its id."""
    assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
    sandbox_id = (await call(client, "create_sandbox", template="base", timeout=300))["sandbox_id"]
    try:
        ran = await call(client, "run_command", sandbox_id=sandbox_id, command="echo mcp-ok")
        assert ran["stdout"] == "mcp-ok\n" and ran["exit_code"] == 0
        failed = await call(client, "run_command", sandbox_id=sandbox_id, command="echo oops >&2; exit 3")
        assert failed["exit_code"] == 3 and failed["stderr"] == "oops\n"  # a result, not an error
        written = await call(client, "write_file", sandbox_id=sandbox_id, path="notes/hello.txt", content="héllo\n")
        assert written == {"path": "/home/user/notes/hello.txt", "bytes": 7}
        assert (await call(client, "read_file", sandbox_id=sandbox_id, path="notes/hello.txt")) == {"result": "héllo\n"}
        listed = await call(client, "list_files", sandbox_id=sandbox_id, path="/home/user/notes")
        assert [(e["name"], e["type"], e["size"]) for e in listed["entries"]] == [("hello.txt", "file", 7)]
        host = await call(client, "get_host", sandbox_id=sandbox_id, port=8000)
        assert host["host"].startswith(f"8000-{sandbox_id}.")
        mine = await call(client, "list_sandboxes")
        assert sandbox_id in {s["sandbox_id"] for s in mine["sandboxes"]}
    finally:
        killed = await call(client, "kill_sandbox", sandbox_id=sandbox_id)
    assert killed == {"sandbox_id": sandbox_id, "killed": True}
    assert sandbox_id not in {s["sandbox_id"] for s in (await call(client, "list_sandboxes"))["sandboxes"]}
    return sandbox_id


async def test_stdio_client_drives_a_sandbox(live: tuple[Server, str], tmp_path: Path) -> None:
    async with stdio_client(live, tmp_path) as client:
        gone = await drive_a_sandbox(client)
        assert "not found" in await error_of(client, "run_command", sandbox_id=gone, command="true")


async def test_background_command_and_code_on_a_plain_sandbox(live: tuple[Server, str], tmp_path: Path) -> None:
    """`background` returns a pid at once and the command runs on; `run_code` outside a code-interpreter
    sandbox is a tool error that names the template to use."""
    async with stdio_client(live, tmp_path) as client:
        sandbox_id = (await call(client, "create_sandbox"))["sandbox_id"]
        try:
            started = await call(client, "run_command", sandbox_id=sandbox_id, background=True,
                                 command="sleep 1; echo later > /tmp/bg.txt")
            assert started["pid"] > 0 and started["exit_code"] is None

            async def written() -> bool:
                result = await client.call_tool("read_file", {"sandbox_id": sandbox_id, "path": "/tmp/bg.txt"})
                return not result.is_error and result.structured_content == {"result": "later\n"}

            await wait_until_async(written, 60, "the background command's file", interval=0.5)
            message = await error_of(client, "run_code", sandbox_id=sandbox_id, code="1 + 1")
            assert "code-interpreter-v1" in message
        finally:
            await call(client, "kill_sandbox", sandbox_id=sandbox_id)


async def test_http_client_drives_a_sandbox(live: tuple[Server, str], http_url: str) -> None:
    _, key = live
    async with http_client(http_url, {"Authorization": f"Bearer {key}"}) as client:
        await drive_a_sandbox(client)
    async with http_client(http_url, {"X-API-Key": key}) as client:  # E2B's header works as well
        assert isinstance((await call(client, "list_sandboxes"))["sandboxes"], list)


async def test_a_wrong_or_missing_key_is_an_error_that_names_it(live: tuple[Server, str], http_url: str,
                                                               tmp_path: Path) -> None:
    wrong = "e2b_" + "0" * 40
    async with stdio_client(live, tmp_path, key=wrong) as client:
        assert "API key was refused" in await error_of(client, "list_sandboxes")
        assert "API key was refused" in await error_of(client, "create_sandbox")
    async with http_client(http_url, {"Authorization": f"Bearer {wrong}"}) as client:
        assert "API key was refused" in await error_of(client, "list_sandboxes")
    with pytest.raises(BaseException) as refused:  # the client's task group wraps the MCPError
        async with http_client(http_url, {}) as client:
            await client.list_tools()
    if isinstance(refused.value, BaseExceptionGroup):
        assert refused.group_contains(MCPError, match=r"no Sandhive API key: send it .*Authorization: Bearer",
                                      depth=None), refused.value
    else:
        assert isinstance(refused.value, MCPError) and "Authorization: Bearer" in str(refused.value)
