"""A read-only view of a template rootfs with its owners shifted back to real ids.

Template trees are stored owned by the sandbox uid range (userns.BASE + id) because containers run in a
user namespace. A microVM guest has no such namespace: its disk must hold the real ids (root is 0). An
idmapped bind mount presents the tree that way without copying or chowning it: the mount is attached
to a user namespace whose uid_map reads "BASE 0 SIZE", so a file stored as BASE+n is seen as n.
`mkfs.ext4 -d` then reads ownership through the view.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .. import mounts, userns

_libc = ctypes.CDLL(None, use_errno=True)
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC, AT_RECURSIVE, AT_EMPTY_PATH = 1, 0o2000000, 0x8000, 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY, MOUNT_ATTR_IDMAP = 0x1, 0x100000
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


@contextlib.contextmanager
def _unshifting_userns() -> Iterator[int]:
    """An fd of a user namespace mapping ids BASE..BASE+SIZE-1 (inside) to 0..SIZE-1 (outside)."""
    holder = subprocess.Popen(["unshare", "--user", "--", "sleep", "60"], stdin=subprocess.DEVNULL)
    try:
        own = os.stat("/proc/self/ns/user").st_ino
        deadline = time.monotonic() + 5
        while os.stat(f"/proc/{holder.pid}/ns/user").st_ino == own:
            if time.monotonic() > deadline or holder.poll() is not None:
                raise OSError("unshare --user did not create a user namespace")
            time.sleep(0.002)
        for name in ("uid_map", "gid_map"):
            Path(f"/proc/{holder.pid}/{name}").write_text(f"{userns.BASE} 0 {userns.SIZE}\n")
        fd = os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        holder.kill()
        holder.wait()
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def unshifted_view(tree: Path) -> Iterator[Path]:
    """Yield a temporary read-only path showing `tree` with real (unshifted) owners."""
    with _unshifting_userns() as ns_fd, tempfile.TemporaryDirectory(prefix="sandhive-idmap-") as target:
        tree_fd = _check(_syscall(SYS_OPEN_TREE, AT_FDCWD, str(tree).encode(),
                                       OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE), f"open_tree {tree}")
        try:
            attr = _MountAttr(MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY, 0, 0, ns_fd)
            _check(_syscall(SYS_MOUNT_SETATTR, tree_fd, b"", AT_EMPTY_PATH, ctypes.byref(attr),
                                 ctypes.sizeof(attr)), f"idmapping {tree}")
            _check(_syscall(SYS_MOVE_MOUNT, tree_fd, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH),
                   f"mounting the idmapped view of {tree}")
        finally:
            os.close(tree_fd)
        try:
            yield Path(target)
        finally:
            mounts.umount(target, lazy=True)
