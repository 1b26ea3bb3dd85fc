"""envd behaves as E2B's envd where agent code depends on it (issue 13, items 1-5), driven through the released
`e2b` SDK, sync and async, against the live server of conftest.py. One sandbox per backend serves the module.

1. `sudo -n true` as the default user works (gvisor: impossible, skipped with the reason).
2. `files.write(..., metadata=...)` returns the metadata it stored.
3. `files.remove` of a missing path succeeds (`rm -rf`).
4. A watcher sees CREATE, CHMOD, WRITE for one `files.write` of a new file, right after it returns.
5. `commands.run(..., timeout=T)` raises the SDK's TimeoutException after ~T s and the command is killed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from e2b import AsyncSandbox, FilesystemEventType, Sandbox
from e2b.exceptions import TimeoutException

from ..helpers import wait_until_async
from .conftest import Live

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(600)]

GVISOR_NO_SETUID = ("gVisor's sentry does not implement setuid executables: prctl(PR_GET_NO_NEW_PRIVS) always "
                    "answers 1 and execve never raises privileges, whatever runsc's flags or the bundle's "
                    "noNewPrivileges say, so sudo cannot work under gVisor (use the SDK's user=\"root\")")


@pytest.fixture(scope="module")
def sbx(live: Live) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(timeout=300, api_key=live.key, api_url=live.url, sandbox_url=live.url)
    try:
        yield sandbox
    finally:
        sandbox.kill()


async def _async(sbx: Sandbox, live: Live) -> AsyncSandbox:
    return await AsyncSandbox.connect(sbx.sandbox_id, api_key=live.key, api_url=live.url, sandbox_url=live.url)


def _fresh_dir(sbx: Sandbox) -> str:
    path = f"/home/user/conf-{uuid.uuid4().hex[:8]}"
    sbx.files.make_dir(path)
    return path


# ---- 1. sudo -------------------------------------------------------------------------------------------------
def _skip_sudo_on_gvisor(live: Live) -> None:
    if live.server.backend == "gvisor":
        print(f"skipping on gvisor: {GVISOR_NO_SETUID}")
        pytest.skip(GVISOR_NO_SETUID)


def test_sudo_as_the_default_user(sbx: Sandbox, live: Live) -> None:
    _skip_sudo_on_gvisor(live)
    result = sbx.commands.run("sudo -n true && id -un && sudo -n id -un")
    assert result.exit_code == 0 and result.stdout.split() == ["user", "root"], result


async def test_sudo_as_the_default_user_async(sbx: Sandbox, live: Live) -> None:
    _skip_sudo_on_gvisor(live)
    asbx = await _async(sbx, live)
    result = await asbx.commands.run("sudo -n true && sudo -n id -u")
    assert result.exit_code == 0 and result.stdout.strip() == "0", result


# ---- 2. metadata in the upload response ------------------------------------------------------------------------
def test_write_returns_its_metadata(sbx: Sandbox) -> None:
    path = f"{_fresh_dir(sbx)}/meta.txt"
    written = sbx.files.write(path, "x", metadata={"Owner": "agent-7", "stage": "draft"})
    assert written.path == path and written.name == "meta.txt"
    assert written.metadata == {"owner": "agent-7", "stage": "draft"}
    assert sbx.files.get_info(path).metadata == written.metadata
    assert sbx.files.write(f"{path}.plain", "y").metadata is None


async def test_write_returns_its_metadata_async(sbx: Sandbox, live: Live) -> None:
    asbx = await _async(sbx, live)
    path = f"{_fresh_dir(sbx)}/meta.txt"
    written = await asbx.files.write(path, b"x", metadata={"owner": "agent-8"})
    assert written.metadata == {"owner": "agent-8"}
    many = await asbx.files.write_files([{"path": f"{path}.{i}", "data": str(i)} for i in range(2)],
                                        metadata={"batch": "1"})
    assert [w.metadata for w in many] == [{"batch": "1"}, {"batch": "1"}]


# ---- 3. remove like rm -rf ---------------------------------------------------------------------------------------
def test_remove_of_a_missing_path_succeeds(sbx: Sandbox) -> None:
    workdir = _fresh_dir(sbx)
    sbx.files.write(f"{workdir}/tree/a/b.txt", "b")
    sbx.files.remove(f"{workdir}/tree")
    assert not sbx.files.exists(f"{workdir}/tree")
    sbx.files.remove(f"{workdir}/tree")  # gone already: still a success
    sbx.files.remove(f"{workdir}/never/was/here.txt")
    assert sbx.files.list(workdir) == []


async def test_remove_of_a_missing_path_succeeds_async(sbx: Sandbox, live: Live) -> None:
    asbx = await _async(sbx, live)
    workdir = _fresh_dir(sbx)
    await asbx.files.remove(f"{workdir}/does-not-exist")
    await asbx.files.remove("does-not-exist")  # relative to the user's home, as in the issue
    assert await asbx.files.list(workdir) == []


# ---- 4. watch events of one write -------------------------------------------------------------------------------
E2B_WRITE_EVENTS = [FilesystemEventType.CREATE, FilesystemEventType.CHMOD, FilesystemEventType.WRITE]


def test_polled_watcher_sees_create_chmod_write(sbx: Sandbox) -> None:
    """E2B's own SDK test: the events are there when the SDK polls right after `write` returns."""
    workdir = _fresh_dir(sbx)
    handle = sbx.files.watch_dir(workdir)
    try:
        sbx.files.write(f"{workdir}/w.txt", "watched")
        events = handle.get_new_events()
        assert [(e.name, e.type) for e in events] == [("w.txt", t) for t in E2B_WRITE_EVENTS]
        sbx.files.write(f"{workdir}/w.txt", "again")  # a file written over: no CREATE, a WRITE
        time.sleep(0.3)
        again = [e.type for e in handle.get_new_events() if e.name == "w.txt"]
        assert FilesystemEventType.CREATE not in again and again[-1] == FilesystemEventType.WRITE, again
    finally:
        handle.stop()


async def test_streamed_watcher_sees_create_chmod_write(sbx: Sandbox, live: Live) -> None:
    asbx = await _async(sbx, live)
    workdir = _fresh_dir(sbx)
    events = []
    handle = await asbx.files.watch_dir(workdir, events.append)
    try:
        await asbx.files.write(f"{workdir}/a.txt", "watched")
        async def three() -> bool:
            return len(events) >= 3

        await wait_until_async(three, 10, "three watch events", show=lambda: events)
        await asyncio.sleep(0.3)  # and nothing more comes
        assert [(e.name, e.type) for e in events] == [("a.txt", t) for t in E2B_WRITE_EVENTS]
    finally:
        await handle.stop()


# ---- 5. Connect-Timeout-Ms ---------------------------------------------------------------------------------------
def _running(sbx: Sandbox, argv: str) -> bool:
    """Whether a process with exactly this command line runs in the sandbox (read from /proc, as root)."""
    script = ("for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done")
    out = sbx.commands.run(script, user="root", timeout=30).stdout
    return any(line.strip() == argv for line in out.splitlines())


def _gone_soon(sbx: Sandbox, argv: str, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while _running(sbx, argv):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


async def test_async_run_times_out_and_kills_the_command(sbx: Sandbox, live: Live) -> None:
    """The async SDK enforces nothing itself: the server must end the stream and the process."""
    asbx = await _async(sbx, live)
    started = time.monotonic()
    with pytest.raises(TimeoutException):
        await asbx.commands.run("sleep 31", timeout=2)
    took = time.monotonic() - started
    assert 1.5 < took < 15, f"the 2 s timeout ended the command after {took:.1f} s"  # not at its end (31 s)
    assert _gone_soon(sbx, "sleep 31"), "`sleep 31` still runs after its timeout"


def test_sync_run_times_out_and_kills_the_command(sbx: Sandbox) -> None:
    """The sync SDK sends the same Connect-Timeout-Ms (and also times out on its side): the process must end."""
    started = time.monotonic()
    with pytest.raises(TimeoutException):
        sbx.commands.run("sleep 32", timeout=2)
    assert time.monotonic() - started < 15  # the timeout ended it, not its end (32 s); a loaded host is slow
    assert _gone_soon(sbx, "sleep 32"), "`sleep 32` still runs after its timeout"


async def test_background_command_is_killed_at_its_timeout(sbx: Sandbox, live: Live) -> None:
    """E2B bounds a background command by `timeout` too (0 means none): the process is killed, not only the
    stream, even though nobody waits on it."""
    asbx = await _async(sbx, live)
    handle = await asbx.commands.run("sleep 33", background=True, timeout=2)
    unbounded = await asbx.commands.run("sleep 34", background=True, timeout=0)
    try:
        assert _running(sbx, "sleep 33") and _running(sbx, "sleep 34")
        await asyncio.sleep(2.5)
        assert _gone_soon(sbx, "sleep 33"), "`sleep 33` still runs after its timeout"
        assert _running(sbx, "sleep 34"), "a command without a timeout was killed"
    finally:
        await unbounded.kill()
        await handle.disconnect()
