"""The legacy API (the seed's) — `sandbox.process` and `sandbox.filesystem` — as thin aliases over `commands`
and `files`.

Code written for the seed keeps working: `proc = sandbox.process.start(cmd)`, `proc.wait()`, then
`proc.stdout`, `proc.stderr`, `proc.exit_code`. Differences from the modern API are the seed's own: a
process has stdin, runs without a time limit, and a non-zero exit is a value, not an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .commands import AsyncCommandHandle, AsyncCommands, CommandHandle, Commands
from .exceptions import CommandExitException, SandboxException
from .files import AsyncFiles, Files
from .models import CommandResult, EntryInfo, FilesystemEvent
from .output import OutputCallback
from .watch import AsyncWatchHandle, WatchHandle

POLL_SECONDS = 0.2  # how often a legacy watcher (blocking face) asks envd for new events


def _result(error: CommandExitException) -> CommandResult:
    return CommandResult(error.stdout, error.stderr, error.exit_code, error.error)


Handle = TypeVar("Handle", CommandHandle, AsyncCommandHandle)


class _ProcessView(Generic[Handle]):
    """What a seed process shows of its handle."""

    _handle: Handle

    @property
    def process_id(self) -> int:
        return self._handle.pid

    pid = process_id

    @property
    def stdout(self) -> str:
        return self._handle.stdout

    @property
    def stderr(self) -> str:
        return self._handle.stderr

    @property
    def exit_code(self) -> int | None:
        return self._handle.exit_code

    @property
    def finished(self) -> bool:
        return self._handle.exit_code is not None


class Process(_ProcessView[CommandHandle]):
    """A process started with `sandbox.process.start` (blocking face)."""

    def __init__(self, handle: CommandHandle) -> None:
        self._handle = handle

    def wait(self, timeout: float | None = None) -> CommandResult:
        """Wait for the end; the result carries the exit code (non-zero does not raise, as in the seed).
        `timeout` is accepted for the seed's signature: the process runs as long as it needs."""
        try:
            return self._handle.wait()
        except CommandExitException as exc:
            return _result(exc)

    def kill(self) -> None:
        self._handle.kill()

    def send_stdin(self, data: str | bytes) -> None:
        self._handle.send_stdin(data)


class ProcessManager:
    """`sandbox.process`: the seed's way to run commands."""

    def __init__(self, commands: Commands) -> None:
        self._commands = commands

    def start(self, cmd: str, on_stdout: OutputCallback | None = None, on_stderr: OutputCallback | None = None,
              env_vars: dict[str, str] | None = None, cwd: str | None = None, user: str | None = None,
              timeout: float | None = None) -> Process:
        """Start `cmd` (with stdin open, no time limit unless `timeout`); returns at once."""
        handle = self._commands.run(cmd, background=True, envs=env_vars, cwd=cwd, user=user, on_stdout=on_stdout,
                                    on_stderr=on_stderr, stdin=True, timeout=timeout or 0)
        assert isinstance(handle, CommandHandle)  # background=True answers with the handle
        return Process(handle)

    def start_and_wait(self, cmd: str, **kwargs: Any) -> CommandResult:
        return self.start(cmd, **kwargs).wait()


class FilesystemWatcher:
    """The seed's directory watcher: listeners are called from a background thread once started."""

    def __init__(self, files: Files, path: str, recursive: bool) -> None:
        self._files = files
        self._path = path
        self._recursive = recursive
        self._listeners: list[Callable[[FilesystemEvent], Any]] = []
        self._handle: WatchHandle | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add_event_listener(self, listener: Callable[[FilesystemEvent], Any]) -> Callable[[], None]:
        """Call `listener` with each event; the returned function removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def start(self) -> None:
        self._handle = self._files.watch_dir(self._path, recursive=self._recursive)
        self._thread = threading.Thread(target=self._poll, name=f"sandhive-watch {self._path}", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        assert self._handle is not None
        while not self._stop.wait(POLL_SECONDS):
            try:
                events = self._handle.get_new_events()
            except SandboxException:
                return  # the sandbox or the watch is gone: nothing more will come
            for event in events:
                for listener in list(self._listeners):
                    listener(event)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._handle is not None:
            with contextlib.suppress(SandboxException):
                self._handle.stop()


class Filesystem:
    """`sandbox.filesystem`: the seed's file API."""

    def __init__(self, files: Files) -> None:
        self._files = files

    def read(self, path: str) -> str:
        text = self._files.read(path)
        assert isinstance(text, str)  # format="text" answers with a str
        return text

    def read_bytes(self, path: str) -> bytes:
        data = self._files.read(path, format="bytes")
        assert isinstance(data, bytes)  # format="bytes" answers with bytes
        return data

    def write(self, path: str, content: str | bytes) -> None:
        self._files.write(path, content)

    write_bytes = write

    def list(self, path: str) -> list[EntryInfo]:
        return self._files.list(path)

    def exists(self, path: str) -> bool:
        return self._files.exists(path)

    def remove(self, path: str) -> None:
        self._files.remove(path)

    def make_dir(self, path: str) -> None:
        self._files.make_dir(path)

    def watch_dir(self, path: str, recursive: bool = False) -> FilesystemWatcher:
        """A watcher: `add_event_listener(fn)`, then `start()`; `stop()` when done."""
        return FilesystemWatcher(self._files, path, recursive)


class AsyncProcess(_ProcessView[AsyncCommandHandle]):
    """A process started with `await sandbox.process.start` (asyncio face)."""

    def __init__(self, handle: AsyncCommandHandle) -> None:
        self._handle = handle

    async def wait(self, timeout: float | None = None) -> CommandResult:
        try:
            return await self._handle.wait()
        except CommandExitException as exc:
            return _result(exc)

    async def kill(self) -> None:
        await self._handle.kill()

    async def send_stdin(self, data: str | bytes) -> None:
        await self._handle.send_stdin(data)


class AsyncProcessManager:
    def __init__(self, commands: AsyncCommands) -> None:
        self._commands = commands

    async def start(self, cmd: str, on_stdout: OutputCallback | None = None, on_stderr: OutputCallback | None = None,
                    env_vars: dict[str, str] | None = None, cwd: str | None = None, user: str | None = None,
                    timeout: float | None = None) -> AsyncProcess:
        handle = await self._commands.run(cmd, background=True, envs=env_vars, cwd=cwd, user=user,
                                          on_stdout=on_stdout, on_stderr=on_stderr, stdin=True, timeout=timeout or 0)
        assert isinstance(handle, AsyncCommandHandle)  # background=True answers with the handle
        return AsyncProcess(handle)

    async def start_and_wait(self, cmd: str, **kwargs: Any) -> CommandResult:
        return await (await self.start(cmd, **kwargs)).wait()


class AsyncFilesystemWatcher:
    """The seed's watcher (asyncio face): listeners (plain or async) run on the event loop."""

    def __init__(self, files: AsyncFiles, path: str, recursive: bool) -> None:
        self._files = files
        self._path = path
        self._recursive = recursive
        self._listeners: list[Callable[[FilesystemEvent], Any]] = []
        self._handle: AsyncWatchHandle | None = None

    def add_event_listener(self, listener: Callable[[FilesystemEvent], Any]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def _dispatch(self, event: FilesystemEvent) -> None:
        for listener in list(self._listeners):
            result = listener(event)
            if asyncio.iscoroutine(result):
                await result

    async def start(self) -> None:
        self._handle = await self._files.watch_dir(self._path, self._dispatch, recursive=self._recursive, timeout=0)

    async def stop(self) -> None:
        if self._handle is not None:
            await self._handle.stop()


class AsyncFilesystem:
    def __init__(self, files: AsyncFiles) -> None:
        self._files = files

    async def read(self, path: str) -> str:
        text = await self._files.read(path)
        assert isinstance(text, str)  # format="text" answers with a str
        return text

    async def read_bytes(self, path: str) -> bytes:
        data = await self._files.read(path, format="bytes")
        assert isinstance(data, bytes)  # format="bytes" answers with bytes
        return data

    async def write(self, path: str, content: str | bytes) -> None:
        await self._files.write(path, content)

    write_bytes = write

    async def list(self, path: str) -> list[EntryInfo]:
        return await self._files.list(path)

    async def exists(self, path: str) -> bool:
        return await self._files.exists(path)

    async def remove(self, path: str) -> None:
        await self._files.remove(path)

    async def make_dir(self, path: str) -> None:
        await self._files.make_dir(path)

    def watch_dir(self, path: str, recursive: bool = False) -> AsyncFilesystemWatcher:
        return AsyncFilesystemWatcher(self._files, path, recursive)
