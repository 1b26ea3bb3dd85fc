"""pty.* through the released e2b SDK: create, send input, resize, kill."""

from __future__ import annotations

import contextlib
import threading

from e2b import CommandExitException, PtySize, Sandbox

from tests.helpers import wait_until


def _collect(chunks: list[bytes], needle: bytes, timeout: float = 10.0) -> bytes:
    return wait_until(lambda: needle in b"".join(chunks) and b"".join(chunks), timeout,
                      f"{needle!r} in PTY output", show=lambda: repr(b"".join(chunks)[-500:]))


def test_pty_echo_resize_and_kill(sbx: Sandbox) -> None:
    chunks: list[bytes] = []
    handle = sbx.pty.create(PtySize(rows=24, cols=80))
    def follow() -> None:
        with contextlib.suppress(CommandExitException):  # it ends killed
            handle.wait(on_pty=chunks.append)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    sbx.pty.send_stdin(handle.pid, b"stty size; echo marker-$((6*7))\n")
    _collect(chunks, b"marker-42")
    assert b"24 80" in b"".join(chunks)
    sbx.pty.resize(handle.pid, PtySize(rows=40, cols=132))
    sbx.pty.send_stdin(handle.pid, b"stty size\n")
    _collect(chunks, b"40 132")
    assert handle.pid in [p.pid for p in sbx.commands.list()]
    assert sbx.pty.kill(handle.pid) is True
    reader.join(10)
    assert not reader.is_alive()
    assert handle.pid not in [p.pid for p in sbx.commands.list()]


def test_pty_ctrl_d_ends_the_shell(sbx: Sandbox) -> None:
    handle = sbx.pty.create(PtySize(rows=10, cols=40))
    sbx.pty.send_stdin(handle.pid, b"exit 0\n")
    result = handle.wait(on_pty=lambda _: None)
    assert result.exit_code == 0
