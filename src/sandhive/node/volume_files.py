"""Files inside a volume without a sandbox (E2B's volume content API), done by host root on the volume's mount.

Everything in a volume may have been planted by sandboxed code: a symlink to /etc/shadow, a `..`-laden link
chain, a FIFO that blocks whoever opens it. So no path is ever joined and opened: every lookup starts at the
volume root's fd and goes through openat2(2) with RESOLVE_BENEATH (no step may leave the root: absolute links
and `..` above it fail with EXDEV), RESOLVE_NO_MAGICLINKS (no /proc-style links) and RESOLVE_NO_XDEV (no
crossing into another mount). The last component of a path is acted on relative to its parent's fd without
following it (unlink, chown, readlink, lstat), files are opened O_NONBLOCK and must be regular files, and
recursive deletes use `shutil.rmtree(dir_fd=...)`, which never follows a link. The volume is mounted
nodev, so a device node planted inside opens nothing.

Ids: files are stored in the canonical range (`userns.BASE` + id, see node/volumes.py); callers give and
see ids as a sandbox sees them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from ..errors import NodeError
from . import userns

_libc = ctypes.CDLL(None, use_errno=True)
SYS_OPENAT2 = 437
RESOLVE_NO_XDEV, RESOLVE_NO_MAGICLINKS, RESOLVE_BENEATH = 0x01, 0x02, 0x08
RESOLVE = RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH
DEFAULT_ID = 1000  # the SDK's sandbox user
CHUNK = 1 << 20
MAX_DEPTH = 32
MAX_ENTRIES = 100_000  # a listing this long is cut (a sandbox can make millions of files)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dir_fd: int, path: str, flags: int, mode: int = 0) -> int:
    """openat(2) that cannot leave `dir_fd`'s tree (see the module's docstring). Retries EAGAIN (a rename raced)."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, RESOLVE)
    for _ in range(16):
        fd = _libc.syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_long(dir_fd), path.encode(), ctypes.byref(how),
                           ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, "the path kept changing while it was looked up", path)


@dataclass(frozen=True)
class Entry:
    name: str
    type: str  # file | directory | symlink | unknown
    path: str
    size: int
    mode: int
    uid: int
    gid: int
    atime: datetime
    mtime: datetime
    ctime: datetime
    target: str | None = None


def _inner(host: int) -> int:
    return host - userns.BASE if userns.BASE <= host < userns.BASE + userns.SIZE else 65534


def _host(inner: int | None) -> int:
    value = DEFAULT_ID if inner is None else inner
    if not 0 <= value < userns.SIZE:
        raise NodeError(400, f"uid/gid {value} is outside 0..{userns.SIZE - 1}")
    return userns.BASE + value


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "unknown"


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def parts_of(path: str) -> list[str]:
    """The components of a path inside the volume ("/" and "" are its root); '..' and NUL are refused."""
    if not isinstance(path, str) or "\0" in path or len(path) > 4096:
        raise NodeError(400, "invalid path")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise NodeError(400, f"invalid path {path!r}: '..' is not allowed")
    return parts


def _display(parts: list[str]) -> str:
    return "/" + "/".join(parts)


@contextlib.contextmanager
def _errors(path: str) -> Iterator[None]:
    """OS errors as the user's: what to fix, never a host path."""
    try:
        yield
    except NodeError:
        raise
    except OSError as exc:
        code = exc.errno
        if code == errno.ENOENT:
            raise NodeError(404, f"path {path} not found") from None
        if code in (errno.EXDEV, errno.ELOOP):
            raise NodeError(400, f"path {path} leads outside the volume (through a symlink)") from None
        if code == errno.ENOTDIR:
            raise NodeError(400, f"a part of path {path} is not a directory") from None
        if code == errno.EISDIR:
            raise NodeError(400, f"path {path} is a directory") from None
        if code == errno.EEXIST:
            raise NodeError(409, f"path {path} already exists") from None
        if code == errno.ENOTEMPTY:
            raise NodeError(409, f"directory {path} is not empty") from None
        if code in (errno.ENOSPC, errno.EDQUOT):
            raise NodeError(507, "the volume is full") from None
        if code in (errno.EACCES, errno.EPERM, errno.ENXIO, errno.EROFS):
            raise NodeError(400, f"path {path} cannot be used that way") from None
        if code == errno.ENAMETOOLONG:
            raise NodeError(400, "path too long") from None
        raise


class VolumeFiles:
    """The content of one volume whose file system is mounted at `root` (a trusted host path)."""

    def __init__(self, root: str) -> None:
        self.root = root

    @contextlib.contextmanager
    def _root_fd(self) -> Iterator[int]:
        fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _dir(self, root: int, parts: list[str], create: bool = False, uid: int | None = None,
             gid: int | None = None) -> Iterator[int]:
        """An fd of the directory `parts` (made, parents too, if `create`)."""
        fd = os.dup(root)
        try:
            for part in parts:
                if create:
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                        os.chown(part, _host(uid), _host(gid), dir_fd=fd, follow_symlinks=False)
                    except FileExistsError:
                        pass
                nxt = openat2(fd, part, os.O_PATH | os.O_DIRECTORY)
                os.close(fd)
                fd = nxt
            yield fd
        finally:
            os.close(fd)

    def _entry(self, parent: int, name: str, parts: list[str]) -> Entry:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False) if name else os.fstat(parent)
        target = os.readlink(name, dir_fd=parent) if name and stat.S_ISLNK(st.st_mode) else None
        return Entry(name=name or "/", type=_kind(st.st_mode), path=_display(parts), size=st.st_size,
                     mode=stat.S_IMODE(st.st_mode), uid=_inner(st.st_uid), gid=_inner(st.st_gid),
                     atime=_time(st.st_atime), mtime=_time(st.st_mtime), ctime=_time(st.st_ctime), target=target)

    def stat(self, path: str) -> Entry:
        parts = parts_of(path)
        with _errors(path), self._root_fd() as root:
            if not parts:
                return self._entry(root, "", parts)
            with self._dir(root, parts[:-1]) as parent:
                return self._entry(parent, parts[-1], parts)

    def list_dir(self, path: str, depth: int | None = None) -> list[Entry]:
        parts = parts_of(path)
        depth = 1 if depth is None else depth
        if not 1 <= depth <= MAX_DEPTH:
            raise NodeError(400, f"depth must be 1..{MAX_DEPTH}")
        out: list[Entry] = []
        with _errors(path), self._root_fd() as root, self._dir(root, parts) as directory:
            self._walk(directory, parts, depth, out)
        return out

    def _walk(self, directory: int, parts: list[str], depth: int, out: list[Entry]) -> None:
        fd = openat2(directory, ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            names = sorted(os.listdir(fd))
            for name in names:
                if len(out) >= MAX_ENTRIES:
                    return
                with contextlib.suppress(FileNotFoundError):  # removed while listed
                    entry = self._entry(fd, name, [*parts, name])
                    out.append(entry)
                    if depth > 1 and entry.type == "directory":
                        sub = openat2(fd, name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)
                        try:
                            self._walk(sub, [*parts, name], depth - 1, out)
                        finally:
                            os.close(sub)
        finally:
            os.close(fd)

    def make_dir(self, path: str, uid: int | None, gid: int | None, mode: int | None, force: bool) -> Entry:
        parts = parts_of(path)
        if not parts:
            raise NodeError(409, "path / already exists")
        with _errors(path), self._root_fd() as root, \
                self._dir(root, parts[:-1], create=force, uid=uid, gid=gid) as parent:
            os.mkdir(parts[-1], 0o755, dir_fd=parent)
            os.chown(parts[-1], _host(uid), _host(gid), dir_fd=parent, follow_symlinks=False)
            if mode is not None:
                _chmod_at(parent, parts[-1], mode)
            return self._entry(parent, parts[-1], parts)

    def open_read(self, path: str) -> BinaryIO:
        """A regular file, opened for reading (never a FIFO or device a sandbox planted)."""
        parts = parts_of(path)
        if not parts:
            raise NodeError(400, "path / is a directory")
        with _errors(path), self._root_fd() as root:
            fd = openat2(root, "/".join(parts), os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise NodeError(400, f"path {path} is not a regular file")
            except BaseException:
                os.close(fd)
                raise
            return os.fdopen(fd, "rb", buffering=0)

    def write(self, path: str, chunks: Iterator[bytes], uid: int | None, gid: int | None, mode: int | None,
              force: bool) -> Entry:
        """Create or overwrite a regular file with `chunks` (parents made if `force`). The last component is
        never followed: a symlink there is refused, not written through."""
        parts = parts_of(path)
        if not parts:
            raise NodeError(400, "path / is a directory")
        with _errors(path), self._root_fd() as root, \
                self._dir(root, parts[:-1], create=force, uid=uid, gid=gid) as parent:
            fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                         | os.O_CLOEXEC, 0o644, dir_fd=parent)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise NodeError(400, f"path {path} is not a regular file")
                os.ftruncate(fd, 0)
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                os.fchown(fd, _host(uid), _host(gid))
                if mode is not None:
                    os.fchmod(fd, mode & 0o7777 & ~0o6000)  # no setuid/setgid from outside
            finally:
                os.close(fd)
            return self._entry(parent, parts[-1], parts)

    def update(self, path: str, uid: int | None, gid: int | None, mode: int | None) -> Entry:
        parts = parts_of(path)
        with _errors(path), self._root_fd() as root, self._dir(root, parts[:-1] if parts else []) as parent:
            name = parts[-1] if parts else ""
            st = os.stat(name, dir_fd=parent, follow_symlinks=False) if name else os.fstat(parent)
            if uid is not None or gid is not None:
                new_uid = _host(uid) if uid is not None else st.st_uid
                new_gid = _host(gid) if gid is not None else st.st_gid
                if name:
                    os.chown(name, new_uid, new_gid, dir_fd=parent, follow_symlinks=False)
                else:
                    os.chown(_inode(parent), new_uid, new_gid)
            if mode is not None:
                _chmod_at(parent, name or ".", mode)
            return self._entry(parent, name, parts)

    def remove(self, path: str) -> None:
        parts = parts_of(path)
        if not parts:
            raise NodeError(400, "the volume's root cannot be removed")
        with _errors(path), self._root_fd() as root:
            with self._dir(root, parts[:-1]) as parent_path_fd:
                parent = openat2(parent_path_fd, ".", os.O_RDONLY | os.O_DIRECTORY)
            try:
                name = parts[-1]
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(name, dir_fd=parent)
                else:
                    os.unlink(name, dir_fd=parent)
            finally:
                os.close(parent)


def _inode(fd: int) -> str:
    """The magic link of an O_PATH fd: acting on it acts on that very inode, never on a looked-up path."""
    return f"/proc/self/fd/{fd}"


def _chmod_at(parent: int, name: str, mode: int) -> None:
    """chmod the entry `name` of `parent` itself, never what a symlink there (planted meanwhile) points to;
    setuid/setgid bits are never set from outside."""
    fd = openat2(parent, name, os.O_PATH | os.O_NOFOLLOW)
    try:
        if not stat.S_ISLNK(os.fstat(fd).st_mode):
            os.chmod(_inode(fd), mode & 0o7777 & ~0o6000)
    finally:
        os.close(fd)


def read_chunks(f: BinaryIO) -> Iterator[bytes]:
    with f:
        while chunk := f.read(CHUNK):
            yield chunk
