"""`filesystem.Filesystem`: stat, list, make, move, remove and watch (wire doc §3.4).

All disk work runs in threads so a slow disk never stalls envd's event loop, each acting as the
request's user (see acting_user.py): the kernel's permission checks apply, and what a user creates is theirs.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import stat
import uuid
from collections.abc import AsyncIterator
from types import ModuleType
from typing import TYPE_CHECKING, Literal

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from protobuf import Oneof

from ..rpc.filesystem import filesystem_pb as pb
from ..rpc.filesystem.filesystem_connect import Filesystem
from .acting_user import run_as
from .entries import entry_info, list_dir
from .paths import make_dirs_as, resolve_path
from .requests import keepalive_interval, request_timeout, request_user
from .state import SandboxState
from .streams import until_deadline, with_keepalive
from .users import User

if TYPE_CHECKING:
    from .watcher import DirWatcher, PolledWatcher


def _watching() -> ModuleType:
    """`sandhive.envd.watcher`, imported on the first watch rather than at envd's start.

    It imports asyncinotify, which looks libc up with `ctypes.util.find_library` at import time: that
    runs `ldconfig`/`ld` subprocesses and costs ~3 ms on the host and ~20 ms under gVisor. Few
    sandboxes ever watch a directory, and none on the way to their first command, so the first
    WatchDir/CreateWatcher pays it (in a thread, like other disk work) instead of every sandbox start.
    """
    from . import watcher

    return watcher


def _os_error(exc: OSError, path: str) -> ConnectError:
    """Map an OSError to the Connect code E2B's SDK expects for it."""
    if exc.errno == errno.ENOENT:
        return ConnectError(Code.NOT_FOUND, f"path '{path}' does not exist")
    if exc.errno == errno.EEXIST:
        return ConnectError(Code.ALREADY_EXISTS, f"path '{path}' already exists")
    if exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.EINVAL, errno.ENOTEMPTY):
        return ConnectError(Code.INVALID_ARGUMENT, f"{exc.strerror}: '{path}'")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ConnectError(Code.PERMISSION_DENIED, f"{exc.strerror}: '{path}'")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ConnectError(Code.RESOURCE_EXHAUSTED, f"not enough disk space for '{path}'")
    return ConnectError(Code.INTERNAL, f"{exc.strerror or exc}: '{path}'")


def _watch_keepalive() -> pb.WatchDirResponse:
    keepalive: Oneof[Literal["keepalive"], pb.WatchDirResponse.KeepAlive] = Oneof("keepalive",
                                                                                pb.WatchDirResponse.KeepAlive())
    return pb.WatchDirResponse(event=keepalive)


class FilesystemService(Filesystem):
    """Implements the generated `Filesystem` protocol (subclassed: its `desc()` comes along)."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.watchers: dict[str, PolledWatcher] = {}

    def _path(self, raw: str, ctx: RequestContext) -> tuple[str, User]:
        user = request_user(ctx, self.state)
        try:
            return resolve_path(raw, user), user
        except ValueError as exc:
            raise ConnectError(Code.INVALID_ARGUMENT, str(exc)) from None

    async def stat(self, request: pb.StatRequest, ctx: RequestContext) -> pb.StatResponse:
        path, user = self._path(request.path, ctx)
        try:
            return pb.StatResponse(entry=await run_as(user, entry_info, path))
        except OSError as exc:
            raise _os_error(exc, path) from None

    async def make_dir(self, request: pb.MakeDirRequest, ctx: RequestContext) -> pb.MakeDirResponse:
        path, user = self._path(request.path, ctx)

        def make() -> pb.EntryInfo:
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, "exists", path)
            make_dirs_as(path, user)
            return entry_info(path)

        try:
            return pb.MakeDirResponse(entry=await run_as(user, make))
        except OSError as exc:
            raise _os_error(exc, path) from None

    async def move(self, request: pb.MoveRequest, ctx: RequestContext) -> pb.MoveResponse:
        source, user = self._path(request.source, ctx)
        destination, _ = self._path(request.destination, ctx)

        def move() -> pb.EntryInfo:
            os.lstat(source)  # ENOENT, or EACCES when the user cannot reach it
            make_dirs_as(os.path.dirname(destination), user)
            try:
                os.rename(source, destination)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                shutil.move(source, destination)
            return entry_info(destination)

        try:
            return pb.MoveResponse(entry=await run_as(user, move))
        except OSError as exc:
            missing_source = exc.errno == errno.ENOENT and exc.filename == source
            raise _os_error(exc, source if missing_source else destination) from None

    async def list_dir(self, request: pb.ListDirRequest, ctx: RequestContext) -> pb.ListDirResponse:
        path, user = self._path(request.path or ".", ctx)
        depth = request.depth or 1

        def listing() -> list[pb.EntryInfo]:
            if not stat.S_ISDIR(os.stat(path).st_mode):  # ENOENT, EACCES, or a file
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
            return list_dir(path, depth)

        try:
            return pb.ListDirResponse(entries=await run_as(user, listing))
        except OSError as exc:
            raise _os_error(exc, path) from None

    async def remove(self, request: pb.RemoveRequest, ctx: RequestContext) -> pb.RemoveResponse:
        """Remove like `rm -rf` (E2B's envd uses Go's os.RemoveAll): a path that does not exist, or that
        vanishes during the walk, is already what the caller asked for, so it is a success, not NOT_FOUND."""
        path, user = self._path(request.path, ctx)

        def unless_vanished(_function: object, _path: str, exc_info: tuple) -> None:
            if not isinstance(exc_info[1], FileNotFoundError):
                raise exc_info[1]

        def remove() -> None:
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, onerror=unless_vanished)  # `onexc` from Python 3.12
                else:
                    os.unlink(path)
            except FileNotFoundError:
                pass

        try:
            await run_as(user, remove)
        except OSError as exc:
            raise _os_error(exc, path) from None
        return pb.RemoveResponse()

    # ---- watching -------------------------------------------------------------------------
    async def _open_watcher(self, raw_path: str, recursive: bool, include_entry: bool,
                            allow_network_mounts: bool, ctx: RequestContext) -> DirWatcher:
        path, user = self._path(raw_path, ctx)
        watching = await asyncio.to_thread(_watching)
        try:
            is_dir = stat.S_ISDIR((await run_as(user, os.stat, path)).st_mode)
        except OSError as exc:  # missing, or the user cannot reach it
            raise _os_error(exc, path) from None
        if not is_dir:
            raise ConnectError(Code.INVALID_ARGUMENT, f"path '{path}' is not a directory")
        if not allow_network_mounts:
            fstype = await asyncio.to_thread(watching.filesystem_type, path)
            if fstype in watching.NETWORK_FS:
                raise ConnectError(Code.FAILED_PRECONDITION,
                                   f"'{path}' is on a network filesystem ({fstype}); "
                                   "pass allow_network_mounts to watch it")
        try:
            return await run_as(user, watching.DirWatcher, path, recursive, include_entry, user)
        except OSError as exc:
            raise _os_error(exc, path) from None

    async def watch_dir(self, request: pb.WatchDirRequest, ctx: RequestContext) -> AsyncIterator[pb.WatchDirResponse]:
        timeout = request_timeout(ctx)
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        watcher = await self._open_watcher(request.path, request.recursive, request.include_entry,
                                           request.allow_network_mounts, ctx)
        # Each oneof is typed where it is made: mypy cannot infer a field's literal name against the union.
        start: Oneof[Literal["start"], pb.WatchDirResponse.StartEvent] = Oneof("start",
                                                                               pb.WatchDirResponse.StartEvent())
        try:
            yield pb.WatchDirResponse(event=start)
            events = with_keepalive(watcher.events(), keepalive_interval(ctx), _watch_keepalive)
            async for item in until_deadline(events, deadline):
                if isinstance(item, pb.WatchDirResponse):
                    yield item
                else:
                    event: Oneof[Literal["filesystem"], pb.FilesystemEvent] = Oneof("filesystem", item)
                    yield pb.WatchDirResponse(event=event)
        finally:
            watcher.close()

    async def create_watcher(self, request: pb.CreateWatcherRequest, ctx: RequestContext) -> pb.CreateWatcherResponse:
        watcher = await self._open_watcher(request.path, request.recursive, request.include_entry,
                                           request.allow_network_mounts, ctx)
        watcher_id = uuid.uuid4().hex
        self.watchers[watcher_id] = _watching().PolledWatcher(watcher)
        return pb.CreateWatcherResponse(watcher_id=watcher_id)

    async def get_watcher_events(self, request: pb.GetWatcherEventsRequest,
                                 ctx: RequestContext) -> pb.GetWatcherEventsResponse:
        watcher = self.watchers.get(request.watcher_id)
        if watcher is None:
            raise ConnectError(Code.NOT_FOUND, f"watcher '{request.watcher_id}' not found")
        return pb.GetWatcherEventsResponse(events=await watcher.drain())

    async def remove_watcher(self, request: pb.RemoveWatcherRequest, ctx: RequestContext) -> pb.RemoveWatcherResponse:
        watcher = self.watchers.pop(request.watcher_id, None)
        if watcher is None:
            raise ConnectError(Code.NOT_FOUND, f"watcher '{request.watcher_id}' not found")
        watcher.close()
        return pb.RemoveWatcherResponse()
