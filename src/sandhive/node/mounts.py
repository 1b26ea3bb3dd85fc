"""mount(2) and umount2(2) through libc: the node mounts per sandbox, and a process per call is slow."""

from __future__ import annotations

import ctypes
import errno
import os

_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode() or None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype} on {target} failed: {os.strerror(err)}")


def umount(target: str, lazy: bool = False) -> None:
    """Unmount `target`; not mounted (EINVAL) or missing (ENOENT) count as done."""
    if _libc.umount2(target.encode(), MNT_DETACH if lazy else 0) != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return
        raise OSError(err, f"umount {target} failed: {os.strerror(err)}")


def is_mounted(target: str) -> bool:
    target = os.path.realpath(target)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)
