"""Directory watching with inotify, for WatchDir streams and the polled CreateWatcher API.

Watches are added as the watching user (inotify_add_watch needs read permission on the directory), both
the first ones and those a recursive watch adds for directories created later; the entries sent with
events are read as that user too. A user therefore watches only what they could list themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

from asyncinotify import Mask, RecursiveInotify

from ..rpc.filesystem import filesystem_pb as pb
from .acting_user import acting_as, run_as
from .entries import entry_info
from .uploads import UPLOAD_SUFFIX, created_by_upload
from .users import User

WATCH_MASK = (Mask.CREATE | Mask.MOVED_TO | Mask.MODIFY | Mask.DELETE | Mask.DELETE_SELF
              | Mask.MOVED_FROM | Mask.MOVE_SELF | Mask.ATTRIB)
_UPLOAD_OF_NEW_FILE = (pb.EventType.CREATE, pb.EventType.CHMOD, pb.EventType.WRITE)
_UPLOAD_OVER_A_FILE = (pb.EventType.CHMOD, pb.EventType.WRITE)
MAX_PENDING_EVENTS = 10_000  # per polled watcher; the oldest go first when a client stops polling
SETTLE_SECONDS = 0.5  # at most this long a poll waits for events already queued to be read

# Filesystems that are served over a network: watching them needs allow_network_mounts.
NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse.sshfs", "ceph", "glusterfs",
                        "fuse.s3fs", "fuse.gcsfuse", "afs", "virtiofs"})


def _event_type(mask: Mask) -> pb.EventType | None:
    if mask & (Mask.CREATE | Mask.MOVED_TO):
        return pb.EventType.CREATE
    if mask & Mask.MODIFY:
        return pb.EventType.WRITE
    if mask & (Mask.DELETE | Mask.DELETE_SELF):
        return pb.EventType.REMOVE
    if mask & (Mask.MOVED_FROM | Mask.MOVE_SELF):
        return pb.EventType.RENAME
    if mask & Mask.ATTRIB:
        return pb.EventType.CHMOD
    return None


def filesystem_type(path: str) -> str:
    """The type of the filesystem `path` lives on, from the longest matching mount point."""
    best, fstype = "", ""
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount_point = fields[1].replace("\\040", " ")
                if (path == mount_point or path.startswith(mount_point.rstrip("/") + "/")) \
                        and len(mount_point) >= len(best):
                    best, fstype = mount_point, fields[2]
    except OSError:
        return ""
    return fstype


class UserRecursiveInotify(RecursiveInotify):
    """asyncinotify's recursive watch, adding every watch as `user`.

    Subdirectories the user cannot read are left out (the top one must be readable), symlinks to
    directories are not followed (no loops), and a directory that vanishes or cannot be read before its
    watch is added ends nothing.
    """

    def __init__(self, user: User) -> None:
        super().__init__()
        self._user = user

    def add_watch(self, path, mask: Mask):
        """inotify_add_watch as the user, after opening the directory for reading as the user: Linux checks
        read permission in inotify_add_watch itself, gVisor does not."""
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        return super().add_watch(path, mask)

    def add_recursive_watch(self, path: Path, mask: Mask | None = None) -> list:
        set_mask = self._DIR_MASK if mask is None else mask | self._DIR_MASK
        watches = [self.add_watch(path, set_mask)]
        self._mask_map[path] = mask
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                with contextlib.suppress(PermissionError, FileNotFoundError, NotADirectoryError):
                    watches += self.add_recursive_watch(child, mask)
        return watches

    def _handle_directory_event(self, event) -> None:
        # Runs on the event loop's thread, synchronously: the switch lasts only for this call.
        with acting_as(self._user), contextlib.suppress(OSError, ValueError):
            super()._handle_directory_event(event)


class DirWatcher:
    """An inotify watch on one directory (and its subdirectories when recursive), as `user`.

    Construct it in a thread acting as `user` (`acting_user.run_as`): the first watches are added there.
    """

    def __init__(self, path: str, recursive: bool, include_entry: bool, user: User) -> None:
        self.root = path
        self.include_entry = include_entry
        self.user = user
        self._idle = True  # waiting for the kernel's next event, not building one
        self._upload_cookies: dict[int, bool] = {}  # rename cookie -> the upload created the file
        self._inotify = UserRecursiveInotify(user)
        try:
            if recursive:
                self._inotify.add_recursive_watch(Path(path), WATCH_MASK)
            else:
                self._inotify.add_watch(path, WATCH_MASK)
        except BaseException:
            self._inotify.close()
            raise

    async def events(self) -> AsyncIterator[pb.FilesystemEvent]:
        """Yield FilesystemEvents, names relative to the watched directory.

        envd's own uploads land through a temporary sibling renamed over the target (so a broken upload
        never leaves half a file); watchers see what E2B's envd, which writes in place, makes them see:
        CREATE, CHMOD (the chown), WRITE for a new file; CHMOD, WRITE for one replaced.
        """
        while True:
            self._idle = True
            event = await self._inotify.get()
            self._idle = False
            kind = _event_type(event.mask)
            if kind is None or event.path is None:
                continue
            full = str(event.path)
            if full.endswith(UPLOAD_SUFFIX):
                if event.mask & Mask.MOVED_FROM:
                    self._upload_cookies[event.cookie] = created_by_upload(full)
                continue
            kinds: tuple[pb.EventType, ...] = (kind,)
            if event.mask & Mask.MOVED_TO and event.cookie in self._upload_cookies:
                created = self._upload_cookies.pop(event.cookie)
                kinds = _UPLOAD_OF_NEW_FILE if created else _UPLOAD_OVER_A_FILE
            for kind in kinds:
                yield await self._event(full, kind)

    def settled(self) -> bool:
        """Whether every event the kernel queued so far has been yielded (none buffered or being built)."""
        if not self._idle or self._inotify._events:  # asyncinotify's read-ahead buffer
            return False
        return not select.select([self._inotify.fd], [], [], 0)[0]

    async def _event(self, full: str, kind: pb.EventType) -> pb.FilesystemEvent:
        # relpath of two absolute paths is string arithmetic: no I/O on the loop.
        fs_event = pb.FilesystemEvent(name=os.path.relpath(full, self.root), type=kind)  # noqa: ASYNC240
        if self.include_entry and kind not in (pb.EventType.REMOVE, pb.EventType.RENAME):
            with contextlib.suppress(OSError):
                fs_event.entry = await run_as(self.user, entry_info, full)
        return fs_event

    def close(self) -> None:
        self._inotify.close()


class PolledWatcher:
    """A watcher whose events wait in a bounded queue until the client polls them."""

    def __init__(self, watcher: DirWatcher) -> None:
        self.watcher = watcher
        self.pending: deque[pb.FilesystemEvent] = deque(maxlen=MAX_PENDING_EVENTS)
        self._task = asyncio.get_running_loop().create_task(self._collect())

    async def _collect(self) -> None:
        async for event in self.watcher.events():
            self.pending.append(event)

    async def drain(self) -> list[pb.FilesystemEvent]:
        """The events so far, including those of changes made before this call: a change that returned (a
        `files.write`) has its events queued in the kernel already, and E2B's SDK polls right after it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_SECONDS
        # settled() reads the inotify buffer's state: nothing signals it, so it is polled (1 ms, bounded).
        while not self.watcher.settled() and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        events = list(self.pending)
        self.pending.clear()
        return events

    def close(self) -> None:
        self._task.cancel()
        self.watcher.close()
