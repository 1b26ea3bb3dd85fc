"""`sandhive sandbox shell ID`: an interactive bash in the sandbox, on a PTY that is your terminal's twin.

Your terminal goes into raw mode, so every key (Ctrl-C, Tab, arrows, Ctrl-Z) reaches the sandbox's bash as bytes,
and its output is written here as it arrives. SIGWINCH (your terminal changed size) resizes the sandbox's PTY.
Ctrl-D ends bash and so the session, which exits with bash's status. Any other ending (an error, SIGTERM, SIGHUP,
a closed terminal) kills the PTY's process so that nothing is left running in the sandbox, and the terminal is
restored on every path.

Two threads: this one waits on stdin and on a wake-up pipe (signals, the end of the PTY) with `select`; a pump
thread reads the PTY's output stream, which the SDK exposes only as a blocking `wait(on_pty=...)`. Signal handlers
only write to the pipe: an exception raised from a handler could land in the middle of the cleanup (a closing
terminal sends SIGHUP more than once) and leave the PTY running.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import termios
import threading
import tty
from types import FrameType
from typing import Annotated, Any

import typer

from . import client
from .common import EXIT_FAILED, EXIT_USAGE, fail
from .config import ApiKey, ApiUrl, resolve
from .failures import reporting

READ_SIZE = 65536
WAKE_RESIZE, WAKE_ENDED, WAKE_HANGUP = b"w", b"x", b"h"
DEFAULT_SIZE = (24, 80)  # rows, cols when the terminal cannot say


def shell_command(
    sandbox_id: Annotated[str, typer.Argument(metavar="ID", help="The sandbox to open a shell in.")],
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Open an interactive shell in a sandbox, in this terminal; Ctrl-D (or `exit`) leaves it."""
    if not os.isatty(0):
        fail("`sandbox shell` needs a terminal on stdin; in scripts use `sandhive sandbox exec ID -- CMD`",
             EXIT_USAGE)
    target = resolve(url, api_key)
    with reporting(target.url, f"shell in sandbox {sandbox_id} failed"):
        sandbox = client.connect(target, sandbox_id)
        code = TerminalSession(sandbox, stdin_fd=0, stdout_fd=1).run()
    raise typer.Exit(code)


def terminal_size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return DEFAULT_SIZE
    return (size.lines or DEFAULT_SIZE[0], size.columns or DEFAULT_SIZE[1])


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class TerminalSession:
    """One PTY in `sandbox` attached to the local terminal on `stdin_fd`/`stdout_fd`."""

    def __init__(self, sandbox: Any, stdin_fd: int, stdout_fd: int) -> None:
        self.sandbox = sandbox
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.pid: int | None = None
        self.exit_code: int | None = None  # set by the pump when the PTY's process ended
        self.error: BaseException | None = None  # the pump's failure, re-raised in the main thread
        self.terminal_gone = False  # writing to our terminal failed: it was closed under us
        self.hangup: int | None = None  # SIGTERM or SIGHUP arrived
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    def run(self) -> int:
        """Attach until the PTY's process ends (its exit status) or the session is cut (its process is killed)."""
        rows, cols = terminal_size(self.stdin_fd)
        handle = self.sandbox.pty.create(client.pty_size(rows, cols), timeout=0)
        self.pid = handle.pid
        saved_mode = termios.tcgetattr(self.stdin_fd)
        saved_handlers = {s: signal.getsignal(s) for s in (signal.SIGWINCH, signal.SIGTERM, signal.SIGHUP)}
        pump = threading.Thread(target=self._pump, args=(handle,), name="pty-output", daemon=True)
        try:
            signal.signal(signal.SIGWINCH, self._on_winch)
            signal.signal(signal.SIGTERM, self._on_hangup)
            signal.signal(signal.SIGHUP, self._on_hangup)
            tty.setraw(self.stdin_fd, termios.TCSANOW)
            pump.start()
            self._forward_input()
        finally:
            # The PTY's process first: after a hangup the terminal may be gone, and restoring it can fail.
            if self.exit_code is None:  # cut short here (or the stream broke): end the PTY's process too
                with contextlib.suppress(Exception):
                    self.sandbox.pty.kill(self.pid)
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self.stdin_fd, termios.TCSADRAIN, saved_mode)
            for signum, handler in saved_handlers.items():
                signal.signal(signum, handler)
            if pump.ident is not None:
                pump.join(10)
            if not pump.is_alive():  # a pump still stuck on a dead stream may yet write to the pipe: leave it
                os.close(self._wake_r)
                os.close(self._wake_w)
        if self.exit_code is not None:
            return self.exit_code
        if self.hangup is not None:
            return 128 + self.hangup
        if self.terminal_gone:
            return 128 + signal.SIGHUP
        if self.error is not None:
            raise self.error
        return EXIT_FAILED

    def _forward_input(self) -> None:
        """Keys to the PTY and terminal sizes to its resize, until the PTY ends or the terminal goes away."""
        while True:
            ready, _, _ = select.select([self._wake_r, self.stdin_fd], [], [])
            if self._wake_r in ready:
                woken = os.read(self._wake_r, 512)
                if WAKE_ENDED in woken or WAKE_HANGUP in woken:
                    return
                if WAKE_RESIZE in woken:
                    self._send(self.sandbox.pty.resize, client.pty_size(*terminal_size(self.stdin_fd)))
            if self.stdin_fd in ready:
                try:
                    data = os.read(self.stdin_fd, READ_SIZE)
                except OSError:  # EIO: the terminal was closed under us
                    data = b""
                if not data:
                    self.terminal_gone = True
                    return
                self._send(self.sandbox.pty.send_stdin, data)

    def _send(self, call: Any, arg: Any) -> None:
        """A call to the PTY; once its process has ended, failures are expected and the loop is about to stop."""
        try:
            call(self.pid, arg)
        except Exception:
            if not self._ended():
                raise

    def _ended(self) -> bool:
        return self.exit_code is not None or self.error is not None or self.terminal_gone

    def _pump(self, handle: Any) -> None:
        exit_exception = client.sdk().CommandExitException
        try:
            self.exit_code = int(handle.wait(on_pty=self._output).exit_code)
        except exit_exception as exc:
            self.exit_code = int(exc.exit_code)
        except BaseException as exc:  # handed to the main thread, which raises it (unless our terminal is gone)
            self.error = exc
        finally:
            self._wake(WAKE_ENDED)

    def _output(self, data: bytes) -> None:
        try:
            write_all(self.stdout_fd, data)
        except OSError:  # EIO: the terminal was closed (the SDK hands the error back out of `wait`)
            self.terminal_gone = True
            raise

    def _wake(self, what: bytes) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, what)

    def _on_winch(self, _signum: int, _frame: FrameType | None) -> None:
        self._wake(WAKE_RESIZE)

    def _on_hangup(self, signum: int, _frame: FrameType | None) -> None:
        if self.hangup is None:
            self.hangup = signum
        self._wake(WAKE_HANGUP)
