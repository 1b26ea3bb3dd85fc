"""Host uid/gid ranges: the canonical range template trees are stored in, and one range per sandbox.

Template rootfs trees are stored shifted into the canonical range: a file owned by uid 1000 in the image
is owned by host uid BASE+1000. Every sandbox runs in a user namespace of its own range instead
(`sandbox_range`, derived from its network slot), so root inside a sandbox is an unprivileged host uid that
no other sandbox shares: a process that escapes one sandbox's namespaces cannot signal, ptrace or write the
files of another, nor the template trees themselves. The sandbox sees its template through an idmapped
mount (`idmap.py`) that shows BASE+n as its own range's +n.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

BASE = 100_000
SIZE = 65_536
BUILD_BASE = 200_000  # template builds and upload unpacking run as this range (SIZE ids), never as host root
# Per-sandbox ranges start here, one SIZE-wide range per network slot, far above BASE and the build range.
SANDBOX_RANGES_START = 1_000_000


def sandbox_range(slot_index: int) -> int:
    """The first host uid (and gid) of the range of the sandbox holding network slot `slot_index`.

    Allocated and freed with the slot (a slot file per sandbox, host-wide), so no two live sandboxes share a
    range, and a restarted server finds a sandbox's range again from its slot."""
    if slot_index < 0:
        raise ValueError(f"slot {slot_index} is negative")
    start = SANDBOX_RANGES_START + slot_index * SIZE
    if start + SIZE > 2**32 - 1:  # (uid_t)-1 is "no uid"
        raise ValueError(f"slot {slot_index} has no uid range below 2^32")
    return start


def range_of(host_uid: int) -> int | None:
    """The first host uid of the per-sandbox range holding `host_uid`, or None for an id outside every
    sandbox range (host users, the canonical and build ranges). Ranges are SIZE-aligned from
    SANDBOX_RANGES_START, so an owner alone says whose range it is in."""
    if host_uid < SANDBOX_RANGES_START or host_uid >= 2**32 - 1:
        return None
    return host_uid - (host_uid - SANDBOX_RANGES_START) % SIZE


def rehome(root: Path, host_root: int) -> int:
    """Re-own every entry under `root` (itself included) whose uid or gid lies in any sandbox range into the
    same offset of the range starting at `host_root`; return how many entries changed.

    For a sandbox's kept writable layer that comes back on another slot (a resume after a host reboot), and so
    another range. The old range is not needed: an entry's own id names it (`range_of`), which also makes an
    interrupted re-owning safe to run again. Ids outside the sandbox ranges are left alone; links are changed,
    never followed; setuid/setgid bits, which chown clears, are put back. Only for a tree no sandbox is running
    on (nothing can swap a path under the walk)."""
    if range_of(host_root) != host_root:
        raise ValueError(f"{host_root} does not start a sandbox range")

    def moved(i: int) -> int:
        start = range_of(i)
        return i if start is None else host_root + i - start

    changed = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, None]:
            path = os.path.join(dirpath, name) if name is not None else dirpath
            st = os.lstat(path)
            uid, gid = moved(st.st_uid), moved(st.st_gid)
            if (uid, gid) == (st.st_uid, st.st_gid):
                continue
            os.lchown(path, uid, gid)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(st.st_mode))
            changed += 1
    return changed


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
