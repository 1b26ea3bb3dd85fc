"""Every public method of the asyncio face (`AsyncSandbox`), the seed API included, and 50 commands at once
across 5 sandboxes, against a live server."""

from __future__ import annotations

import asyncio
import io
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from sandhive import (
    AsyncSandbox,
    CommandExitException,
    FilesystemEvent,
    FilesystemEventType,
    FileType,
    PtySize,
    SandboxException,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
)
from tests.helpers import wait_until_async
from tests.sdk.conftest import Live

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900), pytest.mark.usefixtures("sdk_env")]


@pytest.fixture(scope="module")
async def sbx(live: Live) -> AsyncIterator[AsyncSandbox]:
    sandbox = await AsyncSandbox.create(timeout=900, metadata={"suite": "async"})
    try:
        yield sandbox
    finally:
        await sandbox.kill()


async def eventually(check: Callable[[], Awaitable[object]], timeout: float = 10.0) -> object:
    return await wait_until_async(check, timeout, "the condition", interval=0.1)


async def through_proxy(live: Live, url: str, method: str = "GET", **kwargs: object) -> httpx.Response:
    """Send to a `<port>-<id>.localhost:<port>` URL via the server's address, with that Host header."""
    parsed = httpx.URL(url)
    assert live.url.endswith(f":{parsed.port}")
    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        return await client.request(method, str(parsed.copy_with(host="127.0.0.1")),
                                    headers={"Host": parsed.netloc.decode(),
                                             "Content-Type": "application/octet-stream"}, **kwargs)


def test_async_sandbox_is_not_constructed_directly() -> None:
    with pytest.raises(TypeError, match="AsyncSandbox.create"):
        AsyncSandbox()


# ---- lifecycle ---------------------------------------------------------------------------------------------


async def test_create_with_options_info_and_context_manager(live: Live) -> None:
    run = uuid.uuid4().hex[:8]
    async with await AsyncSandbox.create("base", timeout=120, metadata={"run": run}, envs={"G": "hi"}) as s:
        assert s.sandbox_id.startswith("i") and s.id == s.sandbox_id and s.template_id and s.envd_version
        assert s.connection_config.api_url == live.url and repr(s).startswith("AsyncSandbox(")
        assert (await s.commands.run("echo $G")).stdout == "hi\n"
        info = await s.get_info()
        assert info.metadata == {"run": run} and info.state is SandboxState.RUNNING
        assert (await AsyncSandbox.get_info(s.sandbox_id)).sandbox_id == s.sandbox_id
        assert await s.is_running()
    assert not await s.is_running()
    with pytest.raises(SandboxNotFoundException):
        await AsyncSandbox.get_info(s.sandbox_id)


async def test_connect_timeouts_metrics_and_close(sbx: AsyncSandbox) -> None:
    again = await AsyncSandbox.connect(sbx.sandbox_id, timeout=900)
    assert (await again.commands.run("echo connected")).stdout == "connected\n"
    assert await sbx.connect() is sbx
    await sbx.set_timeout(1800)
    assert (await sbx.get_info()).end_at > datetime.now(UTC) + timedelta(minutes=25)
    await AsyncSandbox.set_timeout(sbx.sandbox_id, 900)
    assert (await sbx.get_info()).end_at < datetime.now(UTC) + timedelta(minutes=16)
    since = datetime.now(UTC) - timedelta(hours=1)
    for metrics in (await sbx.get_metrics(), await AsyncSandbox.get_metrics(sbx.sandbox_id, start=since),
                    await sbx.get_metrics(start=since, end=datetime.now(UTC) + timedelta(hours=1))):
        assert metrics and metrics[0].cpu_count >= 1 and 0 < metrics[0].mem_used <= metrics[0].mem_total
    other = await AsyncSandbox.create(timeout=60)
    await other.close()
    assert await AsyncSandbox.kill(other.sandbox_id) is False


async def test_list_pages_filters_and_iteration() -> None:
    run = uuid.uuid4().hex[:8]
    sandboxes = await asyncio.gather(*[AsyncSandbox.create(metadata={"run": run}, timeout=120) for _ in range(3)])
    try:
        ids = {s.sandbox_id for s in sandboxes}
        pager = AsyncSandbox.list(query=SandboxQuery(metadata={"run": run}), limit=2)
        pages = []
        while pager.has_next:
            pages.append(await pager.next_items())
        assert [len(p) for p in pages] == [2, 1] and pager.next_token is None
        with pytest.raises(SandboxException):
            await pager.next_items()
        assert {i.sandbox_id async for i in AsyncSandbox.list(metadata={"run": run})} == ids
        assert [i async for i in AsyncSandbox.list(metadata={"run": run}, state=[SandboxState.PAUSED])] == []
    finally:
        await asyncio.gather(*[s.kill() for s in sandboxes])


async def test_kill_by_id_and_instance() -> None:
    sandbox = await AsyncSandbox.create(timeout=60)
    assert await AsyncSandbox.kill(sandbox.sandbox_id) is True
    assert await sandbox.kill() is False


async def test_fifty_commands_at_once_across_five_sandboxes() -> None:
    sandboxes = await asyncio.gather(*[AsyncSandbox.create(timeout=300) for _ in range(5)])
    try:
        jobs = [(s, i) for i in range(10) for s in sandboxes]
        results = await asyncio.gather(*[s.commands.run(f"echo {i} $(hostname); sleep 0.2") for s, i in jobs])
        assert len(results) == 50
        for (s, i), result in zip(jobs, results, strict=True):
            assert result.exit_code == 0 and result.stdout.split() == [str(i), s.sandbox_id]  # hostname = id
    finally:
        await asyncio.gather(*[s.kill() for s in sandboxes])


# ---- commands ----------------------------------------------------------------------------------------------


async def test_run_with_envs_cwd_user_and_callbacks(sbx: AsyncSandbox) -> None:
    out: list[str] = []
    err: list[str] = []

    async def on_stderr(text: str) -> None:  # callbacks may be coroutine functions
        err.append(text)

    result = await sbx.commands.run("echo out; echo err >&2; pwd; whoami; echo $X", envs={"X": "y"}, cwd="/tmp",
                                    user="root", on_stdout=out.append, on_stderr=on_stderr)
    assert result.stdout == "out\n/tmp\nroot\ny\n" and result.stderr == "err\n" and result.exit_code == 0
    assert "".join(out) == result.stdout and "".join(err) == result.stderr


async def test_output_is_decoded_incrementally(sbx: AsyncSandbox) -> None:
    result = await sbx.commands.run(r"printf '\xc3'; sleep 0.2; printf '\xa9\n'; printf '\xff\n' >&2")
    assert result.stdout == "é\n" and result.stderr == "\ufffd\n"


async def test_non_zero_exit_raises_with_output(sbx: AsyncSandbox) -> None:
    with pytest.raises(CommandExitException) as caught:
        await sbx.commands.run("echo partial; echo broken >&2; exit 4")
    assert caught.value.exit_code == 4 and caught.value.stdout == "partial\n" and caught.value.stderr == "broken\n"


async def test_background_callbacks_fire_while_it_runs(sbx: AsyncSandbox) -> None:
    seen: list[str] = []
    handle = await sbx.commands.run("for i in 1 2 3; do echo $i; sleep 0.3; done", background=True,
                                    on_stdout=seen.append)
    assert handle.pid in [p.pid for p in await sbx.commands.list()]

    async def first_line() -> bool:
        return bool(seen)

    assert await eventually(first_line, timeout=5)
    assert handle.exit_code is None  # still running (0.6 s to go) while its first line is already here
    result = await handle.wait()
    assert result.stdout == "1\n2\n3\n" and handle.stdout == result.stdout and handle.exit_code == 0
    assert handle.stderr == "" and handle.error is None


async def test_stdin(sbx: AsyncSandbox) -> None:
    handle = await sbx.commands.run("cat", background=True, stdin=True)
    await handle.send_stdin("abc")
    await sbx.commands.send_stdin(handle.pid, b"def")
    await handle.close_stdin()
    assert (await handle.wait()).stdout == "abcdef"
    other = await sbx.commands.run("wc -c", background=True, stdin=True)
    await other.send_stdin("12345")
    await sbx.commands.close_stdin(other.pid)
    assert (await other.wait()).stdout.strip() == "5"


async def test_kill_disconnect_and_connect(sbx: AsyncSandbox) -> None:
    handle = await sbx.commands.run("sleep 60", background=True)
    await handle.disconnect()
    assert handle.pid in [p.pid for p in await sbx.commands.list()]  # disconnecting does not kill
    again = await sbx.commands.connect(handle.pid)
    assert await sbx.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException):
        await again.wait()
    assert await sbx.commands.kill(handle.pid) is False
    second = await sbx.commands.run("sleep 60", background=True)
    assert await second.kill() is True
    with pytest.raises(CommandExitException):
        await second.wait()


# ---- pty ---------------------------------------------------------------------------------------------------


# The end of bash's prompt: the last thing an interactive shell prints before it waits for a line.
PROMPT = re.compile(rb"[$#] \Z")


async def test_pty_create_resize_input_and_kill(sbx: AsyncSandbox) -> None:
    output: list[bytes] = []
    prompt = asyncio.Event()

    def on_data(data: bytes) -> None:
        output.append(data)
        if PROMPT.search(b"".join(output)):
            prompt.set()

    terminal = await sbx.pty.create(PtySize(rows=24, cols=80), on_data=on_data)
    # Resize only once the shell waits at its prompt: while readline prepares the terminal for a line it reads
    # the window size and writes it straight back (rltty.c's `set_winsize`), undoing a resize that lands in
    # between, so `stty size` would print the old size (see test_sync.until_prompt).
    await asyncio.wait_for(prompt.wait(), 60)
    await sbx.pty.resize(terminal.pid, PtySize(rows=40, cols=120))
    await sbx.pty.send_stdin(terminal.pid, b"stty size; exit\n")
    assert (await terminal.wait()).exit_code == 0 and b"40 120" in b"".join(output)
    other = await sbx.pty.create(PtySize(rows=24, cols=80), envs={"A": "b"}, cwd="/tmp", timeout=0)
    assert await sbx.pty.kill(other.pid) is True
    with pytest.raises(CommandExitException):
        await other.wait()


# ---- files -------------------------------------------------------------------------------------------------


async def test_read_and_write_in_every_format(sbx: AsyncSandbox) -> None:
    info = await sbx.files.write("/tmp/async/a.txt", "héllo")
    assert (info.name, info.type, info.path) == ("a.txt", FileType.FILE, "/tmp/async/a.txt")
    assert await sbx.files.read("/tmp/async/a.txt") == "héllo"
    assert await sbx.files.read("/tmp/async/a.txt", format="bytes") == "héllo".encode()
    big = os.urandom(3 * 1024 * 1024 + 7)
    await sbx.files.write("/tmp/async/big.bin", io.BytesIO(big))
    stream = await sbx.files.read("/tmp/async/big.bin", format="stream")
    chunks = [chunk async for chunk in stream]
    assert b"".join(chunks) == big and len(chunks) > 1
    assert (await sbx.files.write("relative-async.txt", b"x")).path == "/home/user/relative-async.txt"


async def test_write_files_list_info_dirs_rename_remove(sbx: AsyncSandbox) -> None:
    written = await sbx.files.write_files([{"path": "/tmp/atree/one.txt", "data": "1"},
                                           {"path": "/tmp/atree/sub/two.txt", "data": b"22"}])
    assert [w.name for w in written] == ["one.txt", "two.txt"]
    assert {e.name for e in await sbx.files.list("/tmp/atree")} == {"one.txt", "sub"}
    assert "/tmp/atree/sub/two.txt" in {e.path for e in await sbx.files.list("/tmp/atree", depth=2)}
    assert (await sbx.files.get_info("/tmp/atree/sub")).type is FileType.DIR
    assert await sbx.files.exists("/tmp/atree/one.txt") and not await sbx.files.exists("/tmp/atree/no")
    assert await sbx.files.make_dir("/tmp/atree/new") is True and await sbx.files.make_dir("/tmp/atree/new") is False
    assert (await sbx.files.rename("/tmp/atree/one.txt", "/tmp/atree/uno.txt")).path == "/tmp/atree/uno.txt"
    await sbx.files.remove("/tmp/atree")
    assert not await sbx.files.exists("/tmp/atree")


async def test_watch_dir_streams_events(sbx: AsyncSandbox) -> None:
    await sbx.files.make_dir("/tmp/awatched/inner")
    events: list[FilesystemEvent] = []
    exits: list[Exception | None] = []

    async def on_event(event: FilesystemEvent) -> None:
        events.append(event)

    handle = await sbx.files.watch_dir("/tmp/awatched", on_event, on_exit=exits.append, recursive=True)
    await sbx.files.write("/tmp/awatched/inner/new.txt", "x")

    async def created() -> bool:
        return any(e.name == "inner/new.txt" and e.type is FilesystemEventType.CREATE for e in events)

    assert await eventually(created), events
    await handle.stop()
    assert exits == [None]


async def test_signed_urls_and_get_host(live: Live, sbx: AsyncSandbox) -> None:
    await sbx.files.write("/tmp/asigned.txt", "signed")
    assert (await through_proxy(live, sbx.download_url("/tmp/asigned.txt"))).text == "signed"
    assert (await through_proxy(live, sbx.files.download_url("/tmp/asigned.txt", use_signature_expiration=30))
            ).text == "signed"
    answer = await through_proxy(live, sbx.upload_url("/tmp/aup.txt"), "POST", content=b"up")
    assert answer.status_code == 200 and await sbx.files.read("/tmp/aup.txt") == "up"
    assert "signature=v1_" in sbx.files.upload_url("/tmp/x", use_signature_expiration=10)
    server = await sbx.commands.run("cd /tmp && python3 -m http.server 8001", background=True, timeout=0)
    try:
        host = sbx.get_host(8001)

        async def serving() -> bool:
            return (await through_proxy(live, f"http://{host}/")).status_code == 200

        assert await eventually(serving, timeout=20)
    finally:
        await server.kill()


# ---- the seed's API ----------------------------------------------------------------------------------------


async def test_seed_process_and_filesystem(sbx: AsyncSandbox) -> None:
    proc = await sbx.process.start("echo seed; exit 2")
    result = await proc.wait()
    assert result.exit_code == 2 and proc.exit_code == 2 and proc.stdout == "seed\n" and proc.stderr == ""
    assert proc.finished and proc.process_id == proc.pid > 0
    cat = await sbx.process.start("cat")
    await cat.send_stdin("x")
    await cat.kill()
    assert (await cat.wait()).exit_code != 0
    assert (await sbx.process.start_and_wait("echo hi", env_vars={"A": "1"})).stdout == "hi\n"
    fs = sbx.filesystem
    await fs.make_dir("/tmp/aseed")
    await fs.write("/tmp/aseed/a.txt", "text")
    await fs.write_bytes("/tmp/aseed/b.bin", b"\x00")
    assert await fs.read("/tmp/aseed/a.txt") == "text" and await fs.read_bytes("/tmp/aseed/b.bin") == b"\x00"
    assert sorted(e.name for e in await fs.list("/tmp/aseed")) == ["a.txt", "b.bin"]
    assert await fs.exists("/tmp/aseed/a.txt")
    await fs.remove("/tmp/aseed/a.txt")
    assert not await fs.exists("/tmp/aseed/a.txt")
    watcher = fs.watch_dir("/tmp/aseed")
    seen: list[FilesystemEvent] = []
    remove = watcher.add_event_listener(seen.append)
    await watcher.start()
    try:
        await fs.write("/tmp/aseed/w.txt", "w")

        async def noticed() -> bool:
            return any(e.name == "w.txt" for e in seen)

        assert await eventually(noticed)
    finally:
        await watcher.stop()
    remove()
