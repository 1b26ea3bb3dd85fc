"""`sbx.files`: the sandbox's filesystem — `Files` (blocking) and `AsyncFiles`.

Each method is one call from `fs_calls` sent by the face's transport; relative paths are relative to the
user's home, as in E2B. `format="stream"` reads hand out the file chunk by chunk as it arrives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO, Any, Literal

from . import fs_calls as calls
from .models import EntryInfo, FilesystemEvent, WriteEntry, WriteInfo
from .ref import SandboxRef
from .signing import file_url
from .transport import AsyncTransport, SyncTransport
from .watch import AsyncWatchHandle, WatchHandle

ReadFormat = Literal["text", "bytes", "stream"]
WATCH_TIMEOUT = 60.0  # an async watch's stream ends after this (E2B's default); 0 means no limit


class _Urls:
    """Signed upload/download links (no I/O, so both faces share them)."""

    _ref: SandboxRef

    def download_url(self, path: str, user: str | None = None, use_signature_expiration: int | None = None) -> str:
        """A URL that downloads `path` without headers (signed; `use_signature_expiration` seconds limit it)."""
        return file_url(self._ref, path, "read", user, use_signature_expiration)

    def upload_url(self, path: str, user: str | None = None, use_signature_expiration: int | None = None) -> str:
        """A URL that takes a `POST` of the file (multipart or octet-stream) to `path`, signed."""
        return file_url(self._ref, path, "write", user, use_signature_expiration)


class Files(_Urls):
    """The sandbox's filesystem (blocking)."""

    def __init__(self, ref: SandboxRef, transport: SyncTransport) -> None:
        self._ref = ref
        self._io = transport

    def _t(self, request_timeout: float | None) -> float | None:
        return self._ref.config.timeout(request_timeout)

    def read(self, path: str, format: ReadFormat = "text", user: str | None = None,
             request_timeout: float | None = None) -> str | bytes | Iterator[bytes]:
        """The file as text (UTF-8), bytes, or an iterator of byte chunks (`format="stream"`)."""
        call = calls.read(self._ref, path, format, user=user, timeout=self._t(request_timeout))
        return self._io.download(call) if format == "stream" else self._io.call(call)

    def write(self, path: str, data: str | bytes | IO, user: str | None = None,
              request_timeout: float | None = None) -> WriteInfo:
        """Create or replace `path` (parents included) with `data`: text, bytes or a file object (streamed)."""
        return self._io.call(calls.write(self._ref, path, calls.sync_body(data), user=user,
                                         timeout=self._t(request_timeout)))

    def write_files(self, files: list[WriteEntry], user: str | None = None,
                    request_timeout: float | None = None) -> list[WriteInfo]:
        """Write several files in one request."""
        return self._io.call(calls.write_files(self._ref, files, user=user, timeout=self._t(request_timeout)))

    def list(self, path: str, depth: int = 1, user: str | None = None,
             request_timeout: float | None = None) -> list[EntryInfo]:
        """Entries under `path`, `depth` levels down."""
        return self._io.rpc(calls.list_dir(self._ref, path, depth, user=user, timeout=self._t(request_timeout)))

    def exists(self, path: str, user: str | None = None, request_timeout: float | None = None) -> bool:
        return self._io.rpc(calls.exists(self._ref, path, user=user, timeout=self._t(request_timeout)))

    def get_info(self, path: str, user: str | None = None, request_timeout: float | None = None) -> EntryInfo:
        return self._io.rpc(calls.stat(self._ref, path, user=user, timeout=self._t(request_timeout)))

    def make_dir(self, path: str, user: str | None = None, request_timeout: float | None = None) -> bool:
        """True if created, False if it already existed."""
        return self._io.rpc(calls.make_dir(self._ref, path, user=user, timeout=self._t(request_timeout)))

    def rename(self, old_path: str, new_path: str, user: str | None = None,
               request_timeout: float | None = None) -> EntryInfo:
        return self._io.rpc(calls.rename(self._ref, old_path, new_path, user=user,
                                         timeout=self._t(request_timeout)))

    def remove(self, path: str, user: str | None = None, request_timeout: float | None = None) -> None:
        """Remove a file or a whole directory tree."""
        self._io.rpc(calls.remove(self._ref, path, user=user, timeout=self._t(request_timeout)))

    def watch_dir(self, path: str, recursive: bool = False, user: str | None = None,
                  request_timeout: float | None = None) -> WatchHandle:
        """Start watching `path`; poll with `handle.get_new_events()`, end with `handle.stop()`."""
        watcher_id = self._io.rpc(calls.create_watcher(self._ref, path, recursive, user=user,
                                                       timeout=self._t(request_timeout)))
        return WatchHandle(self._ref, self._io, watcher_id, path)


class AsyncFiles(_Urls):
    """The sandbox's filesystem (asyncio)."""

    def __init__(self, ref: SandboxRef, transport: AsyncTransport) -> None:
        self._ref = ref
        self._io = transport

    def _t(self, request_timeout: float | None) -> float | None:
        return self._ref.config.timeout(request_timeout)

    async def read(self, path: str, format: ReadFormat = "text", user: str | None = None,
                   request_timeout: float | None = None) -> str | bytes | AsyncIterator[bytes]:
        call = calls.read(self._ref, path, format, user=user, timeout=self._t(request_timeout))
        return await (self._io.download(call) if format == "stream" else self._io.call(call))

    async def write(self, path: str, data: str | bytes | IO, user: str | None = None,
                    request_timeout: float | None = None) -> WriteInfo:
        return await self._io.call(calls.write(self._ref, path, calls.async_body(data), user=user,
                                               timeout=self._t(request_timeout)))

    async def write_files(self, files: list[WriteEntry], user: str | None = None,
                          request_timeout: float | None = None) -> list[WriteInfo]:
        return await self._io.call(calls.write_files(self._ref, files, user=user, timeout=self._t(request_timeout)))

    async def list(self, path: str, depth: int = 1, user: str | None = None,
                   request_timeout: float | None = None) -> list[EntryInfo]:
        return await self._io.rpc(calls.list_dir(self._ref, path, depth, user=user,
                                                 timeout=self._t(request_timeout)))

    async def exists(self, path: str, user: str | None = None, request_timeout: float | None = None) -> bool:
        return await self._io.rpc(calls.exists(self._ref, path, user=user, timeout=self._t(request_timeout)))

    async def get_info(self, path: str, user: str | None = None, request_timeout: float | None = None) -> EntryInfo:
        return await self._io.rpc(calls.stat(self._ref, path, user=user, timeout=self._t(request_timeout)))

    async def make_dir(self, path: str, user: str | None = None, request_timeout: float | None = None) -> bool:
        return await self._io.rpc(calls.make_dir(self._ref, path, user=user, timeout=self._t(request_timeout)))

    async def rename(self, old_path: str, new_path: str, user: str | None = None,
                     request_timeout: float | None = None) -> EntryInfo:
        return await self._io.rpc(calls.rename(self._ref, old_path, new_path, user=user,
                                               timeout=self._t(request_timeout)))

    async def remove(self, path: str, user: str | None = None, request_timeout: float | None = None) -> None:
        await self._io.rpc(calls.remove(self._ref, path, user=user, timeout=self._t(request_timeout)))

    async def watch_dir(self, path: str, on_event: Callable[[FilesystemEvent], Any],
                        on_exit: Callable[[Exception | None], Any] | None = None, user: str | None = None,
                        request_timeout: float | None = None, timeout: float | None = WATCH_TIMEOUT,
                        recursive: bool = False) -> AsyncWatchHandle:
        """Watch `path`: `on_event` (sync or async) gets each change; returns once envd watches."""
        call = calls.watch_stream(self._ref, path, recursive, user=user, timeout=float(timeout) if timeout else None)
        return await AsyncWatchHandle(self._io.stream(call), on_event, on_exit)._until_started(call.context.what)
