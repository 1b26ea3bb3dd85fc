"""`sbx.commands`: run processes in the sandbox and drive them — `Commands` (blocking) and `AsyncCommands`.

Both faces send the same calls (`process_calls`) and collect output the same way (`output.CommandOutput`); the
handles differ only in how they wait. A sync handle reads its stream when you iterate or `wait()` (as E2B's
does), an async handle reads it in a task from the start, so callbacks fire as output arrives.

A command that runs past its `timeout` is killed and `TimeoutException` raised, as envd does for E2B.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterator

from ..rpc.process import process_pb as pb
from . import process_calls as calls
from . import readers
from .exceptions import SandboxException, TimeoutException
from .models import CommandResult, ProcessInfo
from .output import Chunk, CommandOutput, OutputCallback, callback_for, first_pid
from .ref import SandboxRef
from .transport import AsyncTransport, SyncTransport
from .wire import RpcCall

DEFAULT_TIMEOUT = 60.0  # seconds a command may run unless told otherwise (E2B's default); 0 means no limit


def stream_timeout(timeout: float | None) -> float | None:
    """A command's `timeout=` as a stream deadline: 0 or None mean no limit."""
    return float(timeout) if timeout else None


class CommandHandle:
    """A running command (blocking face). Iterate it for `(stdout, stderr, pty)` chunks, or `wait()`."""

    def __init__(self, pid: int, events: Iterator[pb.ProcessEvent], output: CommandOutput, commands: Commands,
                 timeout: float | None, callbacks: tuple[OutputCallback | None, ...] = (None, None, None)) -> None:
        self._pid = pid
        self._events = events
        self._output = output
        self._commands = commands
        self._timeout = timeout
        self._callbacks = callbacks  # on_stdout, on_stderr, on_pty given when it was started

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def stdout(self) -> str:
        """The stdout read so far."""
        return self._output.stdout

    @property
    def stderr(self) -> str:
        return self._output.stderr

    @property
    def exit_code(self) -> int | None:
        """None until the command ended (and its end was read)."""
        return self._output.exit_code

    @property
    def error(self) -> str | None:
        return self._output.error

    def __iter__(self) -> Iterator[Chunk]:
        try:
            for event in self._events:
                yield from self._output.feed(event)
                if self._output.finished:
                    return
            yield from self._output.flush()
        except TimeoutException:
            if self._timeout is None:
                raise
            with contextlib.suppress(SandboxException):
                self._commands.kill(self._pid)
            raise self._output.timed_out(self._timeout) from None

    def wait(self, on_pty: OutputCallback | None = None, on_stdout: OutputCallback | None = None,
             on_stderr: OutputCallback | None = None) -> CommandResult:
        """Read the command to its end, calling the callbacks on the way; raise CommandExitException if it
        exited non-zero."""
        on_stdout, on_stderr, on_pty = (on_stdout or self._callbacks[0], on_stderr or self._callbacks[1],
                                        on_pty or self._callbacks[2])
        for chunk in self:
            target = callback_for(chunk, on_stdout, on_stderr, on_pty)
            if target is not None:
                target[0](target[1])
        return self._output.result()

    def kill(self) -> bool:
        """SIGKILL the command; False if it was not running."""
        return self._commands.kill(self._pid)

    def send_stdin(self, data: str | bytes) -> None:
        """Needs the command started with `stdin=True`."""
        self._commands.send_stdin(self._pid, data)

    def close_stdin(self) -> None:
        self._commands.close_stdin(self._pid)

    def disconnect(self) -> None:
        """Stop reading the command's output; it keeps running (reattach with `commands.connect(pid)`)."""
        close = getattr(self._events, "close", None)
        if close is not None:
            close()


class Commands:
    """Processes in the sandbox (blocking)."""

    def __init__(self, ref: SandboxRef, transport: SyncTransport) -> None:
        self._ref = ref
        self._io = transport

    def _timeout(self, request_timeout: float | None) -> float | None:
        return self._ref.config.timeout(request_timeout)

    def run(self, cmd: str, background: bool = False, envs: dict[str, str] | None = None, user: str | None = None,
            cwd: str | None = None, on_stdout: OutputCallback | None = None, on_stderr: OutputCallback | None = None,
            stdin: bool = False, timeout: float | None = DEFAULT_TIMEOUT,
            request_timeout: float | None = None) -> CommandResult | CommandHandle:
        """Run `cmd` in `bash -l -c`: wait for its CommandResult, or with `background=True` get its handle.

        `timeout` bounds the whole command (seconds, 0 = no limit). `stdin=True` lets you `send_stdin` later.
        """
        call = calls.start(self._ref, cmd, envs=envs, cwd=cwd, user=user, stdin=stdin,
                           timeout=stream_timeout(timeout))
        handle = self._open(call, f"command {cmd!r}", (on_stdout, on_stderr, None))
        return handle if background else handle.wait()

    def connect(self, pid: int, timeout: float | None = DEFAULT_TIMEOUT, request_timeout: float | None = None,
                on_stdout: OutputCallback | None = None, on_stderr: OutputCallback | None = None) -> CommandHandle:
        """Attach to a running command by pid and read its output from where no one has read it."""
        return self._open(calls.connect(self._ref, pid, timeout=stream_timeout(timeout)), f"process {pid}",
                          (on_stdout, on_stderr, None))

    def _open(self, call: RpcCall[pb.ProcessEvent | None], label: str,
              callbacks: tuple[OutputCallback | None, ...]) -> CommandHandle:
        events = self._io.stream(call)
        try:
            pid = first_pid(next(events, None), call.context.what)
        except BaseException:
            events.close()
            raise
        return CommandHandle(pid, events, CommandOutput(pid, label), self, call.timeout, callbacks)

    def list(self, request_timeout: float | None = None) -> list[ProcessInfo]:
        """The running commands and terminals."""
        return self._io.rpc(calls.list_processes(self._ref, timeout=self._timeout(request_timeout)))

    def kill(self, pid: int, request_timeout: float | None = None) -> bool:
        """SIGKILL `pid` (and its process group); False if no such process runs."""
        return self._io.rpc(calls.kill(self._ref, pid, timeout=self._timeout(request_timeout)))

    def send_stdin(self, pid: int, data: str | bytes, request_timeout: float | None = None) -> None:
        self._io.rpc(calls.send_input(self._ref, pid, data, timeout=self._timeout(request_timeout)))

    def close_stdin(self, pid: int, request_timeout: float | None = None) -> None:
        """EOF on the command's stdin."""
        self._io.rpc(calls.close_stdin(self._ref, pid, timeout=self._timeout(request_timeout)))


class AsyncCommandHandle:
    """A running command (asyncio face). One task reads its output from the start (callbacks fire as it
    arrives); `await wait()` for the result."""

    def __init__(self, events: AsyncGenerator[pb.ProcessEvent, None], label: str, commands: AsyncCommands,
                 timeout: float | None, callbacks: tuple[OutputCallback | None, ...]) -> None:
        """Internal: handles come from `commands.run(background=True)`, `commands.connect` and `pty.create`."""
        self._events = events
        self._label = label
        self._commands = commands
        self._timeout = timeout
        self._callbacks = callbacks
        self._output = CommandOutput(0, label)
        self._started = asyncio.Event()
        self._task = readers.start_reader(self._pump())

    async def _until_started(self, what: str) -> AsyncCommandHandle:
        await readers.wait_started(self._task, self._started, what)
        return self

    @property
    def pid(self) -> int:
        return self._output.pid

    @property
    def stdout(self) -> str:
        return self._output.stdout

    @property
    def stderr(self) -> str:
        return self._output.stderr

    @property
    def exit_code(self) -> int | None:
        return self._output.exit_code

    @property
    def error(self) -> str | None:
        return self._output.error

    async def _pump(self) -> None:
        try:
            self._output.pid = first_pid(await anext(self._events, None), self._label)
            self._started.set()
            async for event in self._events:
                for chunk in self._output.feed(event):
                    await _deliver(chunk, self._callbacks)
                if self._output.finished:
                    return
            for chunk in self._output.flush():
                await _deliver(chunk, self._callbacks)
        except TimeoutException:
            if self._timeout is None or not self._started.is_set():
                raise
            with contextlib.suppress(SandboxException):
                await self._commands.kill(self.pid)
            raise self._output.timed_out(self._timeout) from None
        finally:
            await self._events.aclose()

    async def wait(self) -> CommandResult:
        """The CommandResult once the command ends; CommandExitException if it exited non-zero."""
        await asyncio.wait({self._task})  # cancelling this wait leaves the reader running
        if not self._task.cancelled() and (error := self._task.exception()) is not None:
            raise error
        return self._output.result()

    async def kill(self) -> bool:
        return await self._commands.kill(self.pid)

    async def send_stdin(self, data: str | bytes) -> None:
        await self._commands.send_stdin(self.pid, data)

    async def close_stdin(self) -> None:
        await self._commands.close_stdin(self.pid)

    async def disconnect(self) -> None:
        """Stop reading the output; the command keeps running."""
        self._task.cancel()
        await asyncio.wait({self._task})


class AsyncCommands:
    """Processes in the sandbox (asyncio). Callbacks may be plain functions or coroutine functions."""

    def __init__(self, ref: SandboxRef, transport: AsyncTransport) -> None:
        self._ref = ref
        self._io = transport

    def _timeout(self, request_timeout: float | None) -> float | None:
        return self._ref.config.timeout(request_timeout)

    async def run(self, cmd: str, background: bool = False, envs: dict[str, str] | None = None,
                  user: str | None = None, cwd: str | None = None, on_stdout: OutputCallback | None = None,
                  on_stderr: OutputCallback | None = None, stdin: bool = False,
                  timeout: float | None = DEFAULT_TIMEOUT,
                  request_timeout: float | None = None) -> CommandResult | AsyncCommandHandle:
        """As `Commands.run`; with `background=True` the callbacks fire while you do other things."""
        call = calls.start(self._ref, cmd, envs=envs, cwd=cwd, user=user, stdin=stdin,
                           timeout=stream_timeout(timeout))
        handle = await self._open(call, f"command {cmd!r}", (on_stdout, on_stderr, None))
        return handle if background else await handle.wait()

    async def connect(self, pid: int, timeout: float | None = DEFAULT_TIMEOUT, request_timeout: float | None = None,
                      on_stdout: OutputCallback | None = None,
                      on_stderr: OutputCallback | None = None) -> AsyncCommandHandle:
        return await self._open(calls.connect(self._ref, pid, timeout=stream_timeout(timeout)), f"process {pid}",
                                (on_stdout, on_stderr, None))

    async def _open(self, call: RpcCall[pb.ProcessEvent | None], label: str,
                    callbacks: tuple[OutputCallback | None, ...]) -> AsyncCommandHandle:
        handle = AsyncCommandHandle(self._io.stream(call), label, self, call.timeout, callbacks)
        return await handle._until_started(call.context.what)

    async def list(self, request_timeout: float | None = None) -> list[ProcessInfo]:
        return await self._io.rpc(calls.list_processes(self._ref, timeout=self._timeout(request_timeout)))

    async def kill(self, pid: int, request_timeout: float | None = None) -> bool:
        return await self._io.rpc(calls.kill(self._ref, pid, timeout=self._timeout(request_timeout)))

    async def send_stdin(self, pid: int, data: str | bytes, request_timeout: float | None = None) -> None:
        await self._io.rpc(calls.send_input(self._ref, pid, data, timeout=self._timeout(request_timeout)))

    async def close_stdin(self, pid: int, request_timeout: float | None = None) -> None:
        await self._io.rpc(calls.close_stdin(self._ref, pid, timeout=self._timeout(request_timeout)))


async def _deliver(chunk: Chunk, callbacks: tuple[OutputCallback | None, ...]) -> None:
    target = callback_for(chunk, *callbacks)
    if target is not None:
        await readers.call(*target)

