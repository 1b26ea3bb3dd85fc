"""Each way things go wrong raises its typed exception, with a message that says what to do — both faces.

No server (a free port nobody listens on), a wrong or missing key, a killed sandbox, a missing file, a
command past its timeout, and bad arguments.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from sandhive import (
    AsyncSandbox,
    AuthenticationException,
    CommandExitException,
    FileNotFoundException,
    InvalidArgumentException,
    NotFoundException,
    Sandbox,
    SandboxException,
    SandboxNotFoundException,
    ServerUnreachableException,
    TimeoutException,
)
from tests.helpers import free_port
from tests.sdk.conftest import Live

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900), pytest.mark.usefixtures("sdk_env")]


@pytest.fixture(scope="module")
def sbx(live: Live) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(timeout=600)
    try:
        yield sandbox
    finally:
        sandbox.kill()


@pytest.fixture(scope="module")
def killed(live: Live) -> Sandbox:
    """A sandbox object whose sandbox was killed."""
    sandbox = Sandbox.create(timeout=60)
    assert sandbox.kill() is True
    return sandbox


# ---- no server ---------------------------------------------------------------------------------------------


def test_no_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnreachableException) as caught:
        Sandbox.create(api_url=url)
    message = str(caught.value)
    assert f"no server at {url}" in message and "`make up` (as root)" in message and "SANDHIVE_API_URL" in message
    assert isinstance(caught.value, ConnectionError)
    with pytest.raises(ServerUnreachableException, match="no server at"):
        Sandbox.list(api_url=url).next_items()
    with pytest.raises(ServerUnreachableException, match="no server at"):
        Sandbox.kill("ideadbeef", api_url=url)


async def test_no_server_async() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnreachableException, match=f"no server at {url}: start one with `make up` \\(as root\\)"):
        await AsyncSandbox.create(api_url=url)
    with pytest.raises(ServerUnreachableException):
        await AsyncSandbox.get_info("ideadbeef", api_url=url)


def test_no_server_for_sandbox_traffic(sbx: Sandbox) -> None:
    """The envd path (Connect RPC and /files) maps a dead sandbox URL the same way."""
    url = f"http://127.0.0.1:{free_port()}"
    elsewhere = Sandbox.connect(sbx.sandbox_id, sandbox_url=url)
    with pytest.raises(ServerUnreachableException, match=f"no server at {url}"):
        elsewhere.commands.run("true")
    with pytest.raises(ServerUnreachableException, match=f"no server at {url}"):
        elsewhere.files.read("/etc/hostname")
    with pytest.raises(ServerUnreachableException, match=f"no server at {url}"):
        elsewhere.files.list("/")


async def test_no_server_for_sandbox_traffic_async(sbx: Sandbox) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    elsewhere = await AsyncSandbox.connect(sbx.sandbox_id, sandbox_url=url)
    with pytest.raises(ServerUnreachableException, match=f"no server at {url}"):
        await elsewhere.commands.run("true")
    with pytest.raises(ServerUnreachableException, match=f"no server at {url}"):
        await elsewhere.files.exists("/etc")


# ---- keys --------------------------------------------------------------------------------------------------


def test_wrong_key(live: Live) -> None:
    with pytest.raises(AuthenticationException) as caught:
        Sandbox.create(api_key="e2b_not_a_key")
    assert f"refused by {live.url}" in str(caught.value) and "sandhive keys create" in str(caught.value)
    with pytest.raises(AuthenticationException, match="sandhive keys create"):
        list(Sandbox.list(api_key="e2b_not_a_key"))


async def test_wrong_key_async() -> None:
    with pytest.raises(AuthenticationException, match="sandhive keys create"):
        await AsyncSandbox.create(api_key="e2b_not_a_key")


def test_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDHIVE_API_KEY")
    with pytest.raises(AuthenticationException, match="no API key.*sandhive keys create.*SANDHIVE_API_KEY"):
        Sandbox.create()


def test_unknown_user(sbx: Sandbox) -> None:
    """envd refuses to act as a user the sandbox does not have."""
    with pytest.raises(AuthenticationException, match="check the user= you passed"):
        sbx.files.read("/etc/hostname", user="nobody-such")
    with pytest.raises(AuthenticationException, match="check the user= you passed"):
        sbx.commands.run("true", user="nobody-such")


# ---- a killed sandbox --------------------------------------------------------------------------------------


def test_killed_sandbox(killed: Sandbox) -> None:
    sid = killed.sandbox_id
    with pytest.raises(SandboxNotFoundException) as caught:
        killed.commands.run("echo")
    assert f"sandbox {sid} is not running" in str(caught.value) and "Sandbox.create()" in str(caught.value)
    with pytest.raises(SandboxNotFoundException, match="is not running"):
        killed.files.read("/etc/hostname")
    with pytest.raises(SandboxNotFoundException, match="is not running"):
        killed.files.write("/tmp/x", "x")
    with pytest.raises(SandboxNotFoundException, match=f"sandbox {sid} not found.*Sandbox.list"):
        killed.get_info()
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(sid)
    with pytest.raises(SandboxNotFoundException):
        killed.set_timeout(60)
    assert killed.kill() is False and not killed.is_running()


async def test_killed_sandbox_async(killed: Sandbox) -> None:
    sandbox = await AsyncSandbox.create(timeout=60)
    await sandbox.kill()
    with pytest.raises(SandboxNotFoundException, match="is not running"):
        await sandbox.commands.run("echo")
    with pytest.raises(SandboxNotFoundException, match="is not running"):
        await sandbox.files.list("/")
    with pytest.raises(SandboxNotFoundException, match="not found"):
        await AsyncSandbox.connect(killed.sandbox_id)


# ---- a missing file ----------------------------------------------------------------------------------------


def test_missing_file(sbx: Sandbox) -> None:
    with pytest.raises(FileNotFoundException) as caught:
        sbx.files.read("/no/such/file.txt")
    assert "/no/such/file.txt: no such file or directory in sandbox" in str(caught.value)
    assert isinstance(caught.value, NotFoundException) and isinstance(caught.value, FileNotFoundError)
    with pytest.raises(FileNotFoundException, match="/no/such/dir"):
        sbx.files.list("/no/such/dir")
    with pytest.raises(FileNotFoundException, match="/no/such/info"):
        sbx.files.get_info("/no/such/info")
    with pytest.raises(FileNotFoundException, match="/no/such/old"):
        sbx.files.rename("/no/such/old", "/tmp/new")
    with pytest.raises(FileNotFoundException):
        sbx.files.read("/no/such/file.txt", format="stream")
    assert sbx.files.exists("/no/such/file.txt") is False


async def test_missing_file_async(sbx: Sandbox) -> None:
    sandbox = await AsyncSandbox.connect(sbx.sandbox_id)
    with pytest.raises(FileNotFoundException, match="/no/such/file.txt: no such file"):
        await sandbox.files.read("/no/such/file.txt")
    await sandbox.files.remove("/no/such/file.txt")  # like `rm -rf`, as E2B's envd: a missing path is success


# ---- a command past its timeout ----------------------------------------------------------------------------


def test_command_timeout(sbx: Sandbox) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutException) as caught:
        sbx.commands.run("sleep 30", timeout=1)
    assert time.monotonic() - started < 10
    assert "did not finish within 1s and was killed" in str(caught.value)
    assert "timeout=" in str(caught.value) and isinstance(caught.value, TimeoutError)
    assert not [p for p in sbx.commands.list() if p.args[-1:] == ["sleep 30"]]  # killed, as it said


async def test_command_timeout_async(sbx: Sandbox) -> None:
    sandbox = await AsyncSandbox.connect(sbx.sandbox_id)
    started = time.monotonic()
    with pytest.raises(TimeoutException, match="did not finish within 1.5s and was killed"):
        await sandbox.commands.run("sleep 31", timeout=1.5)
    assert time.monotonic() - started < 10
    assert not [p for p in await sandbox.commands.list() if p.args[-1:] == ["sleep 31"]]
    handle = await sandbox.commands.run("sleep 32", background=True, timeout=1)
    with pytest.raises(TimeoutException):
        await handle.wait()


# ---- other refusals ----------------------------------------------------------------------------------------


def test_unknown_template() -> None:
    with pytest.raises(NotFoundException, match="template 'no-such-template' not found"):
        Sandbox.create("no-such-template")


def test_bad_arguments(sbx: Sandbox) -> None:
    with pytest.raises(InvalidArgumentException, match="format must be one of"):
        sbx.files.read("/etc/hostname", format="xml")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentException, match="depth"):
        sbx.files.list("/", depth=0)
    with pytest.raises(InvalidArgumentException, match="does not exist or is not a directory"):
        sbx.commands.run("true", cwd="/no/such/dir")
    with pytest.raises(InvalidArgumentException, match="not an http"):
        Sandbox.create(api_url="localhost:3000")
    with pytest.raises(TypeError):
        Sandbox.create(no_such_option=1)  # type: ignore[call-arg]


def test_command_exit_message(sbx: Sandbox) -> None:
    with pytest.raises(CommandExitException, match="exited with code 7: it broke") as caught:
        sbx.commands.run("echo it broke >&2; exit 7")
    assert isinstance(caught.value, SandboxException) and caught.value.stderr == "it broke\n"
