"""`sbx.pty`: interactive terminals (a login bash on a pseudo-terminal) — `Pty` and `AsyncPty`.

A terminal is a process like any other (its handle is a command handle whose output is `pty` bytes), so both
faces reuse the command machinery and add only input to the terminal and resizing.
"""

from __future__ import annotations

from . import process_calls as calls
from .commands import DEFAULT_TIMEOUT, AsyncCommandHandle, AsyncCommands, CommandHandle, Commands, stream_timeout
from .models import PtySize
from .output import OutputCallback
from .ref import SandboxRef
from .transport import AsyncTransport, SyncTransport


class Pty:
    """Terminals in the sandbox (blocking). Iterate the handle (or `wait(on_pty=...)`) for its output."""

    def __init__(self, ref: SandboxRef, transport: SyncTransport, commands: Commands) -> None:
        self._ref = ref
        self._io = transport
        self._commands = commands

    def create(self, size: PtySize, user: str | None = None, cwd: str | None = None,
               envs: dict[str, str] | None = None, timeout: float | None = DEFAULT_TIMEOUT,
               request_timeout: float | None = None) -> CommandHandle:
        """Start `bash -i -l` on a `size` terminal (TERM=xterm-256color); `timeout` 0 keeps it open forever."""
        call = calls.start(self._ref, "", envs=envs, cwd=cwd, user=user, stdin=False,
                           timeout=stream_timeout(timeout), pty=size)
        return self._commands._open(call, "the terminal", (None, None, None))

    def send_stdin(self, pid: int, data: bytes | str, request_timeout: float | None = None) -> None:
        """Keystrokes to the terminal (Ctrl-D is b"\\x04")."""
        self._io.rpc(calls.send_input(self._ref, pid, data, pty=True,
                                      timeout=self._ref.config.timeout(request_timeout)))

    def resize(self, pid: int, size: PtySize, request_timeout: float | None = None) -> None:
        """Give the terminal a new size (its foreground programs get SIGWINCH); applied before this returns.

        A shell may still undo it: each time readline prepares to read a line (as bash starts, and after every
        command) it reads the size and writes it straight back, so a resize landing in between is lost. To be sure
        a resize sticks, send it while the shell waits at its prompt."""
        self._io.rpc(calls.resize(self._ref, pid, size, timeout=self._ref.config.timeout(request_timeout)))

    def kill(self, pid: int, request_timeout: float | None = None) -> bool:
        return self._commands.kill(pid, request_timeout)


class AsyncPty:
    """Terminals in the sandbox (asyncio); `on_data` receives the terminal's output bytes as they come."""

    def __init__(self, ref: SandboxRef, transport: AsyncTransport, commands: AsyncCommands) -> None:
        self._ref = ref
        self._io = transport
        self._commands = commands

    async def create(self, size: PtySize, on_data: OutputCallback | None = None, user: str | None = None,
                     cwd: str | None = None, envs: dict[str, str] | None = None,
                     timeout: float | None = DEFAULT_TIMEOUT,
                     request_timeout: float | None = None) -> AsyncCommandHandle:
        call = calls.start(self._ref, "", envs=envs, cwd=cwd, user=user, stdin=False,
                           timeout=stream_timeout(timeout), pty=size)
        return await self._commands._open(call, "the terminal", (None, None, on_data))

    async def send_stdin(self, pid: int, data: bytes | str, request_timeout: float | None = None) -> None:
        await self._io.rpc(calls.send_input(self._ref, pid, data, pty=True,
                                            timeout=self._ref.config.timeout(request_timeout)))

    async def resize(self, pid: int, size: PtySize, request_timeout: float | None = None) -> None:
        """As `Pty.resize` (a resize that lands while bash's readline prepares for a line is undone)."""
        await self._io.rpc(calls.resize(self._ref, pid, size, timeout=self._ref.config.timeout(request_timeout)))

    async def kill(self, pid: int, request_timeout: float | None = None) -> bool:
        return await self._commands.kill(pid, request_timeout)
