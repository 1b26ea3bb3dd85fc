"""Writing uploaded files safely: into a temporary sibling, renamed over the target when complete.

A broken or interrupted upload therefore never leaves a half-written file in place of a good one.
Disk writes happen in threads; the caller streams the body in, so memory stays flat for any size.
Everything that touches a path (directories made, the temporary file created, the rename over the target,
the clean-up) runs as the uploading user, so the kernel decides whether the user may write there, and new
files and directories belong to that user. Writes to the already opened file need no identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import zlib

from .acting_user import run_as
from .entries import METADATA_XATTR_PREFIX
from .paths import make_dirs_as
from .users import User

FLUSH_AT = 256 * 1024  # bytes buffered before a write is handed to a thread
UPLOAD_SUFFIX = ".sandhive-upload"  # temporary siblings; watchers report them as E2B's in-place writes
NEW_FILE_MARK = ".new"  # before UPLOAD_SUFFIX when the target did not exist: watchers report CREATE first


class DiskFull(OSError):
    """The upload does not fit on the sandbox's disk (HTTP 507)."""


class UploadTarget:
    """One file being uploaded."""

    def __init__(self, path: str, user: User, metadata: dict[str, str] | None) -> None:
        self.path = path
        self.user = user
        self.metadata = metadata
        self._fd: int | None = None
        self._tmp: str | None = None
        self._buffer = bytearray()

    async def open(self) -> None:
        await run_as(self.user, self._open)

    def _open(self) -> None:
        if os.path.isdir(self.path):
            raise IsADirectoryError(21, "path is a directory", self.path)
        directory = os.path.dirname(self.path)
        make_dirs_as(directory, self.user)
        mark = "" if os.path.lexists(self.path) else NEW_FILE_MARK
        self._fd, self._tmp = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.",
                                               suffix=mark + UPLOAD_SUFFIX, dir=directory)

    def entry(self) -> dict[str, object]:
        """The upload response's EntryInfo for this file (wire doc §3.1), its metadata as stored."""
        info: dict[str, object] = {"path": self.path, "name": os.path.basename(self.path), "type": "file"}
        if self.metadata:
            info["metadata"] = {key.lower(): value for key, value in self.metadata.items()}
        return info

    async def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= FLUSH_AT:
            await self._flush()

    async def _flush(self) -> None:
        if self._buffer:
            assert self._fd is not None, "written before open()"
            chunk, self._buffer = bytes(self._buffer), bytearray()
            await asyncio.to_thread(_write_all, self._fd, chunk)

    async def commit(self) -> None:
        await self._flush()
        await run_as(self.user, self._commit)

    def _commit(self) -> None:
        assert self._fd is not None and self._tmp is not None
        fd, tmp, self._fd = self._fd, self._tmp, None
        try:
            existing = os.stat(self.path) if os.path.exists(self.path) else None
            mode = existing.st_mode & 0o7777 if existing else 0o666 & ~_umask()
            os.fchmod(fd, mode)
            if os.geteuid() == 0:
                os.fchown(fd, self.user.uid, self.user.gid)
            if self.metadata is not None:
                _replace_metadata(fd, self.metadata)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._tmp = None

    async def abort(self) -> None:
        await run_as(self.user, self._abort)

    def _abort(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            self._tmp = None


def created_by_upload(temporary_name: str) -> bool:
    """Whether an upload's temporary sibling (named by `UploadTarget`) stands for a file that did not exist.

    Watchers read it off the name when the temporary file is renamed over its target: E2B's envd creates
    the file, chowns it, then writes in place (CREATE, CHMOD, WRITE), but truncates an existing one (CHMOD,
    WRITE), and a watcher must tell the two apart after the rename.
    """
    return temporary_name.endswith(NEW_FILE_MARK + UPLOAD_SUFFIX)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except OSError as exc:
            if exc.errno in (28, 122):  # ENOSPC, EDQUOT
                raise DiskFull(exc.errno, "not enough disk space") from None
            raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_metadata(fd: int, metadata: dict[str, str]) -> None:
    for name in os.listxattr(fd):
        if name.startswith(METADATA_XATTR_PREFIX):
            os.removexattr(fd, name)
    for key, value in metadata.items():
        os.setxattr(fd, METADATA_XATTR_PREFIX + key.lower(), value.encode())


class GunzipStream:
    """Incremental gzip decoding with bounded output per step (no zip bombs in memory)."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(wbits=31)

    def feed(self, data: bytes, limit: int = 1 << 20):
        chunk = self._z.decompress(data, limit)
        while chunk:
            yield chunk
            chunk = self._z.decompress(self._z.unconsumed_tail, limit) if self._z.unconsumed_tail else b""

    def finish(self) -> None:
        if not self._z.eof:
            raise ValueError("the gzip body is truncated")


def free_bytes(path: str) -> int:
    """Bytes available to a writer under `path` (the nearest existing ancestor)."""
    while not os.path.exists(path):
        path = os.path.dirname(path) or "/"
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
