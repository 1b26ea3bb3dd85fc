"""Every public method of the blocking face (`Sandbox`), the seed API included, against a live server."""

from __future__ import annotations

import gc
import io
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from sandhive import (
    CommandExitException,
    CommandHandle,
    FilesystemEventType,
    FileType,
    PtySize,
    Sandbox,
    SandboxException,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
)
from tests.helpers import wait_until
from tests.sdk.conftest import Live

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900), pytest.mark.usefixtures("sdk_env")]


@pytest.fixture(scope="module")
def sbx(live: Live) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(timeout=900, metadata={"suite": "sync"})
    try:
        yield sandbox
    finally:
        sandbox.kill()


def eventually(check: Callable[[], object], timeout: float = 10.0) -> object:
    """Poll `check` until it returns something truthy (and return that)."""
    return wait_until(check, timeout, "the condition", interval=0.1)


def through_proxy(live: Live, url: str, method: str = "GET", headers_extra: dict[str, str] | None = None,
                  **kwargs: object) -> httpx.Response:
    """Send to a `<port>-<id>.localhost:<port>` URL by connecting to the server with that Host header
    (Python's resolver does not map `*.localhost` to loopback as browsers and curl do)."""
    parsed = httpx.URL(url)
    assert parsed.host.endswith(".localhost") and live.url.endswith(f":{parsed.port}")
    direct = parsed.copy_with(host="127.0.0.1")
    headers = {"Host": parsed.netloc.decode(), **(headers_extra or {})}
    return httpx.request(method, str(direct), headers=headers, trust_env=False, timeout=30, **kwargs)


# ---- lifecycle ---------------------------------------------------------------------------------------------


def test_create_with_options_info_and_context_manager(live: Live) -> None:
    run = uuid.uuid4().hex[:8]
    with Sandbox.create("base", timeout=120, metadata={"run": run}, envs={"GREETING": "hi there"}) as s:
        assert s.sandbox_id.startswith("i") and s.id == s.sandbox_id
        assert s.template_id and s.envd_version and repr(s).startswith("Sandbox(sandbox_id=")
        assert s.connection_config.api_url == live.url
        assert s.commands.run("echo $GREETING").stdout == "hi there\n"
        info = s.get_info()
        assert info.sandbox_id == s.sandbox_id and info.metadata == {"run": run}
        assert info.state is SandboxState.RUNNING and info.end_at > info.started_at and info.cpu_count >= 1
        assert Sandbox.get_info(s.sandbox_id).metadata == {"run": run}
        assert s.is_running()
    assert not s.is_running()  # leaving the block killed it
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(s.sandbox_id)


def test_seed_constructors_and_close() -> None:
    with Sandbox() as sandbox:
        assert sandbox.template_id == "base"
        assert sandbox.commands.run("true").exit_code == 0
    sandbox = Sandbox(template="base", env_vars={"SEED": "yes"})
    try:
        assert sandbox.commands.run("echo $SEED").stdout == "yes\n"
    finally:
        sandbox.close()
    assert Sandbox.kill(sandbox.id) is False


def test_connect_timeouts_and_metrics(sbx: Sandbox) -> None:
    again = Sandbox.connect(sbx.sandbox_id, timeout=900)
    assert again.sandbox_id == sbx.sandbox_id
    assert again.commands.run("echo connected").stdout == "connected\n"
    assert sbx.connect() is sbx
    sbx.set_timeout(1800)
    assert sbx.get_info().end_at > datetime.now(UTC) + timedelta(minutes=25)
    Sandbox.set_timeout(sbx.sandbox_id, 900)
    assert sbx.get_info().end_at < datetime.now(UTC) + timedelta(minutes=16)
    around_now = {"start": datetime.now(UTC) - timedelta(hours=1), "end": datetime.now(UTC) + timedelta(hours=1)}
    for metrics in (sbx.get_metrics(), Sandbox.get_metrics(sbx.sandbox_id), sbx.get_metrics(**around_now)):
        assert len(metrics) >= 1
        m = metrics[0]
        assert m.cpu_count >= 1 and m.cpu_used_pct >= 0 and 0 < m.mem_used <= m.mem_total and m.disk_total > 0


def test_list_pages_filters_and_iteration() -> None:
    run = uuid.uuid4().hex[:8]
    sandboxes = [Sandbox.create(metadata={"run": run, "i": str(i)}, timeout=120) for i in range(3)]
    try:
        ids = {s.sandbox_id for s in sandboxes}
        pager = Sandbox.list(query=SandboxQuery(metadata={"run": run}), limit=2)
        pages = []
        while pager.has_next:
            pages.append(pager.next_items())
        assert [len(p) for p in pages] == [2, 1] and pager.next_token is None
        assert {i.sandbox_id for p in pages for i in p} == ids
        with pytest.raises(SandboxException, match="has_next"):
            pager.next_items()
        assert {i.sandbox_id for i in Sandbox.list(metadata={"run": run})} == ids
        assert list(Sandbox.list(metadata={"run": run}, state=[SandboxState.PAUSED])) == []
        assert len(list(Sandbox.list(metadata={"run": run, "i": "1"}, state=[SandboxState.RUNNING]))) == 1
        first = Sandbox.list(metadata={"run": run}, limit=1)
        head = first.next_items()
        rest = list(Sandbox.list(metadata={"run": run}, limit=1, next_token=first.next_token))
        assert {i.sandbox_id for i in head + rest} == ids
    finally:
        for sandbox in sandboxes:
            sandbox.kill()


def test_kill_by_id_and_instance() -> None:
    sandbox = Sandbox.create(timeout=60)
    assert Sandbox.kill(sandbox.sandbox_id) is True
    assert sandbox.kill() is False


def test_custom_httpx_transport_carries_rest_and_rpc() -> None:
    transport = httpx.HTTPTransport(retries=1)
    with Sandbox.create(timeout=60, transport=transport) as s:
        assert s.commands.run("echo via transport").stdout == "via transport\n"
        assert s.files.write("t.txt", "x").path == "/home/user/t.txt"


# ---- commands ----------------------------------------------------------------------------------------------


def test_run_with_envs_cwd_user_and_callbacks(sbx: Sandbox) -> None:
    out: list[str] = []
    err: list[str] = []
    result = sbx.commands.run("echo out; echo err >&2; pwd; whoami; echo $X", envs={"X": "y"}, cwd="/tmp",
                              user="root", on_stdout=out.append, on_stderr=err.append)
    assert result.exit_code == 0 and result.error is None
    assert result.stdout == "out\n/tmp\nroot\ny\n" and result.stderr == "err\n"
    assert "".join(out) == result.stdout and "".join(err) == result.stderr


def test_output_is_decoded_incrementally(sbx: Sandbox) -> None:
    result = sbx.commands.run(r"printf '\xc3'; sleep 0.2; printf '\xa9\n'; printf '\xff\n' >&2")
    assert result.stdout == "é\n" and result.stderr == "\ufffd\n"


def test_non_zero_exit_raises_with_output(sbx: Sandbox) -> None:
    with pytest.raises(CommandExitException) as caught:
        sbx.commands.run("echo partial; echo broken >&2; exit 3")
    exc = caught.value
    assert exc.exit_code == 3 and exc.stdout == "partial\n" and exc.stderr == "broken\n"
    assert "code 3" in str(exc) and "broken" in str(exc)


def test_background_handle_iterates_and_waits(sbx: Sandbox) -> None:
    handle = sbx.commands.run("for i in 1 2 3; do echo $i; sleep 0.1; done", background=True)
    assert handle.pid > 0 and handle.exit_code is None
    assert handle.pid in [p.pid for p in sbx.commands.list()]
    chunks = list(handle)
    assert "".join(c[0] for c in chunks if c[0]) == "1\n2\n3\n"
    assert handle.exit_code == 0 and handle.stdout == "1\n2\n3\n" and handle.stderr == "" and handle.error is None
    seen: list[str] = []
    assert handle.wait(on_stdout=seen.append).stdout == "1\n2\n3\n"


def test_background_callbacks_given_at_start(sbx: Sandbox) -> None:
    seen: list[str] = []
    handle = sbx.commands.run("echo a; echo b >&2", background=True, on_stdout=seen.append, on_stderr=seen.append)
    handle.wait()
    assert sorted(seen) == ["a\n", "b\n"]


def test_stdin(sbx: Sandbox) -> None:
    handle = sbx.commands.run("cat", background=True, stdin=True)
    handle.send_stdin("abc")
    sbx.commands.send_stdin(handle.pid, b"def")
    handle.close_stdin()
    assert handle.wait().stdout == "abcdef"
    other = sbx.commands.run("wc -c", background=True, stdin=True)
    other.send_stdin("12345")
    sbx.commands.close_stdin(other.pid)
    assert other.wait().stdout.strip() == "5"


def test_kill_disconnect_and_connect(sbx: Sandbox) -> None:
    handle = sbx.commands.run("echo started; sleep 60", background=True)
    handle.disconnect()
    again = sbx.commands.connect(handle.pid)
    assert again.pid == handle.pid
    assert sbx.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException) as caught:
        again.wait()
    assert caught.value.exit_code != 0
    assert sbx.commands.kill(handle.pid) is False
    second = sbx.commands.run("sleep 60", background=True)
    assert second.kill() is True
    with pytest.raises(CommandExitException):
        second.wait()
    assert second.pid not in [p.pid for p in sbx.commands.list()]


def test_commands_list_describes_processes(sbx: Sandbox) -> None:
    handle = sbx.commands.run("sleep 30", background=True, envs={"K": "v"}, cwd="/tmp")
    try:
        info = next(p for p in sbx.commands.list() if p.pid == handle.pid)
        assert info.cmd == "/bin/bash" and info.args == ["-l", "-c", "sleep 30"] and info.envs == {"K": "v"}
        assert info.cwd == "/tmp" and info.tag is None
    finally:
        handle.kill()


# ---- pty ---------------------------------------------------------------------------------------------------


# The end of bash's prompt: the last thing an interactive shell prints before it waits for a line.
PROMPT = re.compile(rb"[$#] \Z")


def until_prompt(terminal: CommandHandle) -> bytes:
    """Read a terminal's output up to its shell's first prompt (the handle's own timeout bounds the wait).

    Why a resize must wait for it: each time readline prepares the terminal for a line (before it prints the
    prompt) it reads the window size and writes it straight back (TIOCGWINSZ then TIOCSWINSZ, rltty.c's
    `set_winsize`). envd applies a resize at once, but one that lands between those two calls is undone by the
    shell, and `stty size` then prints the old size. Once the prompt is out, readline waits for input and
    writes no size until the next line."""
    seen = b""
    for _, _, data in terminal:
        seen += data or b""
        if PROMPT.search(seen):
            return seen
    raise AssertionError(f"the terminal ended before its shell printed a prompt: {seen!r}")


def test_pty_create_resize_input_and_kill(sbx: Sandbox) -> None:
    terminal = sbx.pty.create(PtySize(rows=24, cols=80))
    until_prompt(terminal)
    sbx.pty.resize(terminal.pid, PtySize(rows=30, cols=100))
    sbx.pty.send_stdin(terminal.pid, b"stty size; exit\n")
    output: list[bytes] = []
    result = terminal.wait(on_pty=output.append)
    assert result.exit_code == 0 and b"30 100" in b"".join(output)
    other = sbx.pty.create(PtySize(rows=24, cols=80), envs={"FOO": "bar"}, cwd="/tmp", timeout=0)
    assert sbx.pty.kill(other.pid) is True
    with pytest.raises(CommandExitException):
        other.wait()


# ---- files -------------------------------------------------------------------------------------------------


def test_read_and_write_in_every_format(sbx: Sandbox) -> None:
    info = sbx.files.write("/tmp/sync/a.txt", "héllo")
    assert (info.name, info.type, info.path) == ("a.txt", FileType.FILE, "/tmp/sync/a.txt")
    assert sbx.files.read("/tmp/sync/a.txt") == "héllo"
    assert sbx.files.read("/tmp/sync/a.txt", format="bytes") == "héllo".encode()
    sbx.files.write("/tmp/sync/b.bin", b"\x00\x01\xff")
    assert sbx.files.read("/tmp/sync/b.bin", format="bytes") == b"\x00\x01\xff"
    big = os.urandom(3 * 1024 * 1024 + 7)
    sbx.files.write("/tmp/sync/big.bin", io.BytesIO(big))
    chunks = list(sbx.files.read("/tmp/sync/big.bin", format="stream"))
    assert b"".join(chunks) == big and len(chunks) > 1
    assert sbx.files.write("relative.txt", "home").path == "/home/user/relative.txt"


def test_write_files_list_info_dirs_rename_remove(sbx: Sandbox) -> None:
    written = sbx.files.write_files([{"path": "/tmp/tree/one.txt", "data": "1"},
                                     {"path": "/tmp/tree/sub/two.txt", "data": b"22"},
                                     {"path": "/tmp/tree/three.txt", "data": io.BytesIO(b"333")}])
    assert [w.path for w in written] == ["/tmp/tree/one.txt", "/tmp/tree/sub/two.txt", "/tmp/tree/three.txt"]
    top = {e.name: e for e in sbx.files.list("/tmp/tree")}
    assert set(top) == {"one.txt", "sub", "three.txt"} and top["sub"].type is FileType.DIR and top["sub"].is_dir
    deep = {e.path for e in sbx.files.list("/tmp/tree", depth=2)}
    assert "/tmp/tree/sub/two.txt" in deep
    entry = sbx.files.get_info("/tmp/tree/sub/two.txt")
    assert entry.size == 2 and entry.type is FileType.FILE and entry.owner == "user" and entry.modified_time
    assert sbx.files.exists("/tmp/tree/one.txt") and not sbx.files.exists("/tmp/tree/none")
    assert sbx.files.make_dir("/tmp/tree/new/deeper") is True
    assert sbx.files.make_dir("/tmp/tree/new/deeper") is False
    moved = sbx.files.rename("/tmp/tree/one.txt", "/tmp/tree/uno.txt")
    assert moved.path == "/tmp/tree/uno.txt" and sbx.files.read("/tmp/tree/uno.txt") == "1"
    sbx.files.remove("/tmp/tree")
    assert not sbx.files.exists("/tmp/tree")


def test_watch_dir_polls_events(sbx: Sandbox) -> None:
    sbx.files.make_dir("/tmp/watched/inner")
    handle = sbx.files.watch_dir("/tmp/watched", recursive=True)
    sbx.files.write("/tmp/watched/inner/new.txt", "x")
    events: list = []
    eventually(lambda: events.extend(handle.get_new_events()) or any(
        e.name == "inner/new.txt" and e.type is FilesystemEventType.CREATE for e in events))
    assert any(e.name == "inner/new.txt" and e.type is FilesystemEventType.CREATE for e in events), events
    handle.stop()
    with pytest.raises(SandboxException, match="stopped"):
        handle.get_new_events()


def test_signed_download_and_upload_urls(live: Live, sbx: Sandbox) -> None:
    sbx.files.write("/tmp/signed.txt", "signed content")
    for url in (sbx.download_url("/tmp/signed.txt"), sbx.files.download_url("/tmp/signed.txt"),
                sbx.download_url("/tmp/signed.txt", use_signature_expiration=60)):
        assert "signature=v1_" in url
        assert through_proxy(live, url).text == "signed content"
    upload = sbx.upload_url("/tmp/uploaded.txt", use_signature_expiration=60)
    answer = through_proxy(live, upload, "POST", content=b"uploaded!",
                           headers_extra={"Content-Type": "application/octet-stream"})
    assert answer.status_code == 200, answer.text
    assert sbx.files.read("/tmp/uploaded.txt") == "uploaded!"
    multipart = through_proxy(live, sbx.files.upload_url("/tmp/multipart.txt"), "POST",
                              files={"file": ("ignored-name", b"as a form")})  # E2B's documented way
    assert multipart.status_code == 200, multipart.text
    assert sbx.files.read("/tmp/multipart.txt") == "as a form"
    assert "signature=v1_" in sbx.files.upload_url("/tmp/other.txt", user="root")
    tampered = sbx.download_url("/tmp/signed.txt").replace("signed.txt", "uploaded.txt")
    assert through_proxy(live, tampered).status_code == 401


def test_get_host_reaches_a_port(live: Live, sbx: Sandbox) -> None:
    server = sbx.commands.run("cd /tmp && python3 -m http.server 8000", background=True, timeout=0)
    try:
        host = sbx.get_host(8000)
        assert host.startswith(f"8000-{sbx.sandbox_id}.")
        answer = eventually(lambda: through_proxy(live, f"http://{host}/").status_code == 200, timeout=20)
        assert answer
    finally:
        server.kill()


# ---- the seed's API ----------------------------------------------------------------------------------------


def test_seed_process(sbx: Sandbox) -> None:
    proc = sbx.process.start("echo seed; echo oops >&2; exit 3")
    result = proc.wait()
    assert result.exit_code == 3 and proc.exit_code == 3 and proc.finished and proc.process_id > 0
    assert proc.stdout == "seed\n" and proc.stderr == "oops\n" and proc.pid == proc.process_id
    cat = sbx.process.start("cat", env_vars={"A": "1"}, cwd="/tmp")
    cat.send_stdin("typed")
    cat.kill()
    assert cat.wait().exit_code != 0
    seen: list[str] = []
    assert sbx.process.start_and_wait("echo hi", on_stdout=seen.append).stdout == "hi\n" and seen == ["hi\n"]


def test_seed_filesystem(sbx: Sandbox) -> None:
    fs = sbx.filesystem
    fs.make_dir("/tmp/seedfs")
    fs.write("/tmp/seedfs/a.txt", "text")
    fs.write_bytes("/tmp/seedfs/b.bin", b"\x00\x01")
    assert fs.read("/tmp/seedfs/a.txt") == "text" and fs.read_bytes("/tmp/seedfs/b.bin") == b"\x00\x01"
    assert sorted(e.name for e in fs.list("/tmp/seedfs")) == ["a.txt", "b.bin"]
    assert fs.exists("/tmp/seedfs/a.txt")
    fs.remove("/tmp/seedfs/a.txt")
    assert not fs.exists("/tmp/seedfs/a.txt")
    watcher = fs.watch_dir("/tmp/seedfs")
    seen: list = []
    remove = watcher.add_event_listener(seen.append)
    watcher.start()
    try:
        fs.write("/tmp/seedfs/watched.txt", "w")
        assert eventually(lambda: any(e.name == "watched.txt" for e in seen))
    finally:
        watcher.stop()
    remove()


def test_abandoned_handle_collected_inside_the_pool_lock_does_not_deadlock(sbx: Sandbox) -> None:
    """A handle dropped mid-stream and freed by the cycle collector while httpcore holds its pool lock (the
    collector runs at any allocation) must not close its response right there: that takes the same lock.

    Regression test for a hang this suite hit; it holds httpcore's lock itself to make the timing certain."""
    pool = getattr(getattr(sbx.files._io.http, "_transport", None), "_pool", None)
    lock = getattr(pool, "_optional_thread_lock", None)
    if lock is None:
        pytest.skip("httpcore's connection pool lock is not where this test expects it")
    handle = sbx.commands.run("sleep 30", background=True)
    cycle: list[object] = [handle]
    cycle.append(cycle)  # only the cycle collector can free it now
    handle.kill()
    del handle, cycle
    collected = threading.Event()

    def collect_holding_the_lock() -> None:
        with lock:
            gc.collect()
        collected.set()

    threading.Thread(target=collect_holding_the_lock, daemon=True).start()
    assert collected.wait(10), "the garbage collector deadlocked on httpcore's pool lock"
    assert sbx.commands.run("echo still fine").stdout == "still fine\n"
