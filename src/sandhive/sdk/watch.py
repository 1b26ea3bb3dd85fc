"""Directory watches: `WatchHandle` (blocking, polls a watcher envd keeps) and `AsyncWatchHandle` (a stream).

The sync face cannot hold a stream open while your code runs, so it asks envd to keep the events
(`CreateWatcher`) and fetches them when you call `get_new_events()`. The async face reads envd's `WatchDir`
stream in a task and calls `on_event` as events arrive — the same split as E2B's SDK.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any

from . import fs_calls as calls
from . import readers
from .exceptions import SandboxException
from .models import FilesystemEvent
from .ref import SandboxRef
from .transport import SyncTransport


class WatchHandle:
    """Events under a watched directory since the last poll."""

    def __init__(self, ref: SandboxRef, transport: SyncTransport, watcher_id: str, path: str) -> None:
        self._ref = ref
        self._io = transport
        self._watcher_id = watcher_id
        self._path = path
        self._stopped = False

    def get_new_events(self) -> list[FilesystemEvent]:
        """The events since the previous call (or since the watch began)."""
        if self._stopped:
            raise SandboxException(f"the watch on {self._path} was stopped: start a new one with files.watch_dir")
        return self._io.rpc(calls.watcher_events(self._ref, self._watcher_id, self._path,
                                                 timeout=self._ref.config.request_timeout))

    def stop(self) -> None:
        """End the watch; envd forgets its events."""
        if not self._stopped:
            self._stopped = True
            self._io.rpc(calls.remove_watcher(self._ref, self._watcher_id, self._path,
                                              timeout=self._ref.config.request_timeout))


class AsyncWatchHandle:
    """A running watch: `on_event` gets each event; `on_exit` gets None or the error that ended it."""

    def __init__(self, events: AsyncGenerator[Any, None], on_event: Callable[[FilesystemEvent], Any],
                 on_exit: Callable[[Exception | None], Any] | None) -> None:
        """Internal: handles come from `await files.watch_dir(...)`."""
        self._events = events
        self._on_event = on_event
        self._on_exit = on_exit
        self._started = asyncio.Event()
        self._task = readers.start_reader(self._pump())

    async def _until_started(self, what: str) -> AsyncWatchHandle:
        await readers.wait_started(self._task, self._started, what)
        return self

    async def _pump(self) -> None:
        error: Exception | None = None
        try:
            first = await anext(self._events, None)
            if first != "start":
                raise SandboxException(f"envd did not confirm the watch (its first message was {first!r})")
            self._started.set()
            async for event in self._events:
                await readers.call(self._on_event, event)
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            if not self._started.is_set():
                raise
            error = exc
        finally:
            await self._events.aclose()
        if self._on_exit is not None:
            await readers.call(self._on_exit, error)

    async def stop(self) -> None:
        """End the watch (and with it the stream)."""
        self._task.cancel()
        await asyncio.wait({self._task})
