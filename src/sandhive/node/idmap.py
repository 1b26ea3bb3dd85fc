"""Idmapped bind mounts: one directory tree shown with its owners shifted, without copying or chowning it.

Template trees are stored once, owned by the canonical range (`userns.BASE` + id). A sandbox runs in a range
of its own, and a microVM guest needs real ids (root is 0); both see the same tree through an idmapped bind
mount. The mount is attached to a user namespace whose uid_map/gid_map read "FROM TO SIZE": a file stored as
FROM+n is seen as TO+n through it (the kernel's mount idmapping, Linux 5.12+). The kernel refuses to idmap an
overlay mount itself, so a sandbox's root is an overlay whose *lower* layer is such a mount.

An idmapping user namespace needs a process to create it (`unshare --user`) but not to keep it: its fd does.
`IdmapNamespaces` keeps one per mapping, so a sandbox start on a range seen before costs three system calls.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from . import mounts

_libc = ctypes.CDLL(None, use_errno=True)
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC, AT_RECURSIVE, AT_EMPTY_PATH = 1, 0o2000000, 0x8000, 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_IDMAP = 0x1, 0x2, 0x4, 0x100000
AT_FDCWD = -100


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _syscall(number: int, *args: int | bytes | ctypes._Pointer) -> int:
    """syscall(2) with every integer passed as a C long (a variadic int would leave the upper half undefined)."""
    cargs = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return _libc.syscall(ctypes.c_long(number), *cargs)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def mapping_namespace(inner: int, outer: int, size: int) -> int:
    """A new fd of a user namespace mapping ids inner..inner+size-1 (inside) to outer..outer+size-1 (outside),
    for uids and gids alike. The caller closes it."""
    holder = subprocess.Popen(["unshare", "--user", "--", "sleep", "60"], stdin=subprocess.DEVNULL)
    try:
        own = os.stat("/proc/self/ns/user").st_ino
        deadline = time.monotonic() + 5
        while os.stat(f"/proc/{holder.pid}/ns/user").st_ino == own:
            if time.monotonic() > deadline or holder.poll() is not None:
                raise OSError("unshare --user did not create a user namespace")
            time.sleep(0.001)
        for name in ("uid_map", "gid_map"):
            Path(f"/proc/{holder.pid}/{name}").write_text(f"{inner} {outer} {size}\n")
        return os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        holder.kill()
        holder.wait()


class IdmapNamespaces:
    """Idmapping user namespaces kept open by mapping, so each is made once per server (a few ms each)."""

    def __init__(self) -> None:
        self._fds: dict[tuple[int, int, int], int] = {}

    def get(self, inner: int, outer: int, size: int) -> int:
        key = (inner, outer, size)
        if key not in self._fds:
            self._fds[key] = mapping_namespace(inner, outer, size)
        return self._fds[key]

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


def bind(tree: Path, target: Path, userns_fd: int, *, readonly: bool = True, nosuid: bool = False) -> None:
    """Mount `tree` (with the mounts below it) on the existing directory `target`, idmapped through `userns_fd`."""
    tree_fd = _check(_syscall(SYS_OPEN_TREE, AT_FDCWD, str(tree).encode(),
                              OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE), f"open_tree {tree}")
    try:
        flags = MOUNT_ATTR_IDMAP | (MOUNT_ATTR_RDONLY if readonly else 0) | (MOUNT_ATTR_NOSUID if nosuid else 0)
        attr = _MountAttr(flags, 0, 0, userns_fd)
        _check(_syscall(SYS_MOUNT_SETATTR, tree_fd, b"", AT_EMPTY_PATH, ctypes.pointer(attr), ctypes.sizeof(attr)),
               f"idmapping {tree}")
        _check(_syscall(SYS_MOVE_MOUNT, tree_fd, b"", AT_FDCWD, str(target).encode(), MOVE_MOUNT_F_EMPTY_PATH),
               f"mounting the idmapped view of {tree} on {target}")
    finally:
        os.close(tree_fd)


@contextlib.contextmanager
def shifted_view(tree: Path, target: Path, inner: int, outer: int, size: int) -> Iterator[Path]:
    """`target` shows `tree` read-only with inner+n shown as outer+n, for the duration of the block."""
    fd = mapping_namespace(inner, outer, size)
    try:
        bind(tree, target, fd)
    finally:
        os.close(fd)
    try:
        yield target
    finally:
        mounts.umount(str(target), lazy=True)
