"""Volumes on the node: one ext4 image file per volume, loop-mounted once on the host, bound into sandboxes.

Why an image and not a directory: its size is its quota (a filler gets ENOSPC at the volume's size, never the
host's disk full), hard links cannot reach host files (another file system), and deleting it is one unlink.
The file is sparse, so the host pays only for what is written. It has a journal, unlike a sandbox's
throw-away writable layer (`scratch.py`): a volume outlives its sandboxes and must survive a crash.

Ownership: like template trees, a volume stores its files in the canonical range (`userns.BASE` + id). Each
sandbox sees it through an idmapped bind mount into its own range (`idmap.py`), so a file the sandbox's user
(uid 1000 inside) writes is stored as BASE+1000: the sandbox user's inside any sandbox, and no host user that
matters outside. The host mount is `nosuid,nodev` and its directory is root's alone (0700), so a setuid file
planted in a volume means nothing on the host.

The host mount lives at `<data_dir>/volumes/<id>/fs`, made on first use and kept (one ext4 mount per image:
mounting it twice would corrupt it); each sandbox binds it at `<sandbox_dir>/volumes/<n>`, which
`detach_all` unmounts before anything deletes the sandbox's directory — a recursive delete through a
still-mounted view would delete the volume's files.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

from ..errors import NodeError
from . import idmap, mounts, scratch, userns
from .runtime import VolumeMount

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")  # no dots, no slashes: nothing a path could abuse
ID = re.compile(r"^[a-z0-9]{8,64}$")
DEFAULT_UID = 1000  # the SDK's default sandbox user ("user"): owner of a volume's root and of uploaded files
MS_NOSUID, MS_NODEV = 2, 4
# Mount points a volume may not take: the sandbox's own machinery, and file system roots the kernel serves.
RESERVED = ("proc", "sys", "dev", ".sandhive")
RESERVED_FILES = ("/etc", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")
MAX_PATH = 1024
MKFS = ("mkfs.ext4", "-q", "-F", "-m", "0", "-E",
        f"lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner={userns.BASE + DEFAULT_UID}:"
        f"{userns.BASE + DEFAULT_UID}")


def check_name(name: str) -> None:
    if not NAME.match(name or ""):
        raise NodeError(400, "invalid volume name: use 1-63 letters, digits, '-' or '_', starting with a letter or "
                             "digit")


def check_mount_path(path: str) -> str:
    """The mount point, as given if it is a plain absolute path (no '.', '..' or empty parts) that is not the
    root nor one of the sandbox's own mounts; else 400."""
    parts = path.split("/") if isinstance(path, str) else []
    if (not path.startswith("/") or len(path) > MAX_PATH or path == "/" or "\0" in path
            or any(p in ("", ".", "..") for p in parts[1:]) or parts[1] in RESERVED or path in RESERVED_FILES):
        raise NodeError(400, f"invalid volume mount path {path!r}: give an absolute path such as /mnt/data, not "
                             "/, /proc, /sys, /dev or a path with '.' or '..' parts")
    return path


class VolumeImages:
    """The node's volumes: `<data_dir>/volumes/<id>/volume.ext4`, mounted at `.../fs` while in use."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "volumes"
        self._lock = threading.Lock()

    def _dir(self, volume_id: str) -> Path:
        if not ID.match(volume_id):
            raise ValueError(f"bad volume id {volume_id!r}")
        return self.root / volume_id

    def create(self, volume_id: str, size_mb: int) -> None:
        """A new empty volume of `size_mb` (a sparse ext4 image whose root belongs to the sandbox user)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        directory = self._dir(volume_id)
        directory.mkdir(mode=0o700)
        try:
            image = directory / "volume.ext4"
            with open(image, "wb") as f:
                f.truncate(size_mb * 1024 * 1024)
            proc = subprocess.run([*MKFS, str(image)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise OSError(f"mkfs.ext4 {image} failed: {(proc.stderr or proc.stdout).strip()}")
            fs = self.mounted(volume_id)
            (fs / "lost+found").rmdir()  # mkfs makes it owned by host root: a sandbox would see "nobody"
        except BaseException:
            self.delete(volume_id)
            raise

    def mounted(self, volume_id: str) -> Path:
        """The volume's file system on the host (mounted now if it was not: at first use after a host reboot)."""
        directory = self._dir(volume_id)
        fs = directory / "fs"
        with self._lock:
            if not mounts.is_mounted(str(fs)):
                image = directory / "volume.ext4"
                if not image.is_file():
                    raise NodeError(404, f"volume {volume_id} has no image on this node")
                fs.mkdir(mode=0o700, exist_ok=True)
                scratch.wait_detached(image)  # never a second superblock on an image whose old one lives on
                _mount_image(image, fs)
        return fs

    def usage(self, volume_id: str) -> tuple[int, int]:
        """(used, total) bytes."""
        st = os.statvfs(self.mounted(volume_id))
        return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize

    def in_use(self, volume_id: str) -> bool:
        """Whether a sandbox on this node has the volume bound (the store may not know yet: a create under way)."""
        fs = self._dir(volume_id) / "fs"
        with self._lock:
            return bool(_other_mounts_of(fs))

    def delete(self, volume_id: str) -> None:
        """Unmount and remove the volume; safe on a missing one. The caller made sure no sandbox mounts it."""
        directory = self._dir(volume_id)
        fs = directory / "fs"
        with self._lock:
            if _other_mounts_of(fs):
                raise NodeError(409, f"volume {volume_id} is still mounted into a sandbox on this node")
            try:
                mounts.umount(str(fs))
            except OSError:
                mounts.umount(str(fs), lazy=True)
            if mounts.is_mounted(str(fs)):
                raise OSError(f"volume {volume_id} is still mounted at {fs}")
            shutil.rmtree(directory, ignore_errors=True)


def _other_mounts_of(fs: Path) -> list[str]:
    """Mount points, other than `fs` itself, of the file system mounted at `fs` (sandboxes' views of it).

    The host mount must outlive every view: unmounted while one lives, the next mount of the image would make a
    second superblock on the same blocks, and two superblocks on one ext4 corrupt it."""
    target = os.path.realpath(fs)
    with open("/proc/self/mountinfo") as f:
        rows = [line.split() for line in f]
    device = next((r[2] for r in rows if r[4] == target), None)
    return [] if device is None else [r[4] for r in rows if r[2] == device and r[4] != target]


def _mount_image(image: Path, target: Path) -> None:
    fd, device = scratch._attach(image)
    try:
        mounts.mount(device, str(target), "ext4", MS_NOSUID | MS_NODEV, "")
    finally:
        os.close(fd)


# ---- per sandbox ---------------------------------------------------------------------------------------------

def views_dir(sandbox_dir: Path) -> Path:
    return sandbox_dir / "volumes"


def attach(sandbox_dir: Path, volumes: Sequence[VolumeMount], idmap_fd: int) -> list[dict]:
    """Bind each volume, idmapped into the sandbox's range, under the sandbox's directory; return the OCI mounts
    that show them at their paths. Undone by `detach_all`."""
    if not volumes:
        return []
    base = views_dir(sandbox_dir)
    base.mkdir(mode=0o711, exist_ok=True)
    oci_mounts = []
    for n, volume in enumerate(volumes):
        view = base / str(n)
        view.mkdir(mode=0o711)
        idmap.bind(volume.source, view, idmap_fd, readonly=False, nosuid=True)
        oci_mounts.append({"destination": volume.path, "type": "none", "source": str(view),
                           "options": ["rbind", "rw", "nosuid", "nodev"]})
    return oci_mounts


def reattach(sandbox_dir: Path, volumes: Sequence[VolumeMount], bundle_mounts: Sequence[dict], idmap_fd: int) -> None:
    """After a host reboot took a kept sandbox's views: bind each volume again, idmapped through `idmap_fd`, on the
    view its bundle shows at the volume's path (the bundle outlives the reboot; the order of `volumes` need not
    be the one of the create). A view whose volume is not in `volumes` is an error, not an empty directory where
    the sandbox's data was. Views still mounted are left as they are. Undone by `detach_all`."""
    base = views_dir(sandbox_dir)
    by_path = {v.path: v for v in volumes}
    for mount in bundle_mounts:
        view = Path(str(mount.get("source", "")))
        if view.parent != base:
            continue
        volume = by_path.get(str(mount.get("destination")))
        if volume is None:
            raise OSError(f"no volume was given for {mount.get('destination')}, which the sandbox mounts")
        if mounts.is_mounted(str(view)):
            continue
        base.mkdir(mode=0o711, exist_ok=True)
        view.mkdir(mode=0o711, exist_ok=True)
        idmap.bind(volume.source, view, idmap_fd, readonly=False, nosuid=True)


def detach_all(sandbox_dir: Path) -> None:
    """Unmount every volume view of a sandbox (lazily if busy), so its directory can be deleted safely."""
    base = views_dir(sandbox_dir)
    if not base.is_dir():
        return
    for view in base.iterdir():
        try:
            mounts.umount(str(view))
        except OSError:
            mounts.umount(str(view), lazy=True)
        if mounts.is_mounted(str(view)):
            raise OSError(f"{view} is still mounted")
        with contextlib.suppress(OSError):
            view.rmdir()
