"""The host uid/gid range that sandboxes' users map to.

Every sandbox runs in a user namespace where its uid 0..65535 is host uid BASE..BASE+65535, so root
inside a sandbox is an unprivileged uid outside. Template rootfs trees are stored already shifted into
this range (a file owned by uid 1000 in the image is owned by BASE+1000 on the host), so a sandbox
sees its files with the right owners without an idmapped mount.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

BASE = 100_000
SIZE = 65_536


def host_id(inner: int) -> int:
    """The host uid (or gid) of a sandbox's uid (or gid)."""
    if not 0 <= inner < SIZE:
        raise ValueError(f"id {inner} is outside the sandbox range 0..{SIZE - 1}")
    return BASE + inner


def shift_tree(root: Path) -> None:
    """Shift ownership of every entry under `root` (itself included) from real ids into the sandbox range.

    Entries already in the range are left alone, so a half-done shift can be resumed. Symlinks are
    changed themselves, never followed; setuid/setgid bits survive (chown clears them, so they are put back).
    """
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, None]:
            path = os.path.join(dirpath, name) if name is not None else dirpath
            st = os.lstat(path)
            uid = st.st_uid if BASE <= st.st_uid < BASE + SIZE else host_id(st.st_uid % SIZE)
            gid = st.st_gid if BASE <= st.st_gid < BASE + SIZE else host_id(st.st_gid % SIZE)
            if (uid, gid) == (st.st_uid, st.st_gid):
                continue
            os.lchown(path, uid, gid)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(st.st_mode))

BUILD_BASE = 200_000  # template builds and upload unpacking run as this range (root inside = BUILD_BASE outside)
