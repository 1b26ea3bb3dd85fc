"""A sandbox's root filesystem: the template's read-only rootfs under a private writable layer.

The writable layer is an ext4 file system of exactly the sandbox's disk size in a sparse file on the
host's disk (`scratch.py`), so a disk filler gets ENOSPC at its quota, its writes do not count as the
sandbox's memory, and the layer vanishes with the sandbox. The merged tree is an overlay mount that the
OCI runtime uses as the root.

The lower layer is the template tree (stored in the canonical range `userns.BASE`) seen through an idmapped
bind mount that shifts it into the sandbox's own uid range (`idmap.py`): the kernel refuses to idmap an
overlay itself, so the lower layer is idmapped and the overlay stacked on it. Files copied up into the
writable layer keep the owners the sandbox sees, so they are owned by its range on the host too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import idmap, mounts, scratch, userns, volumes

TMP_PLACEHOLDER = ".sandhive"  # keeps /tmp non-empty under gVisor (see keep_tmp_on_disk)


class SandboxDisk:
    """Paths of one sandbox's filesystem under its state directory."""

    def __init__(self, sandbox_dir: Path) -> None:
        self.dir = sandbox_dir
        self.rw = sandbox_dir / "rw"  # the writable layer's file system: upper/ and work/
        self.image = sandbox_dir / "disk.ext4"  # its backing file (sparse)
        self.rootfs = sandbox_dir / "rootfs"  # the overlay mount point
        self.lower = sandbox_dir / "lower"  # the template, idmapped into the sandbox's range

    def create(self, template: Path, disk_mb: int, host_root: int = userns.BASE, idmap_fd: int | None = None) -> None:
        """Mount the idmapped template, the writable layer and the overlay. `host_root` is the host uid (and gid) of the
        sandbox's root; `idmap_fd` a user namespace mapping the template's range onto the sandbox's (without
        it, the template is the lower layer as stored, for a sandbox of the canonical range).
        Undone by `destroy`, which `create` calls itself on failure."""
        try:
            self.rw.mkdir(parents=True, exist_ok=True)
            self.rootfs.mkdir(exist_ok=True)
            lower = template
            if idmap_fd is not None:
                self.lower.mkdir(exist_ok=True)
                idmap.bind(template, self.lower, idmap_fd)
                lower = self.lower
            self._mount_writable(disk_mb)
            upper, work = self.rw / "upper", self.rw / "work"
            upper.mkdir()
            work.mkdir()
            # The merged root takes the upper dir's owner: sandbox root, like the template's own root.
            os.chown(upper, host_root, host_root)
            os.chmod(upper, 0o755)
            mounts.mount("overlay", str(self.rootfs), "overlay", 0,
                         f"lowerdir={lower},upperdir={upper},workdir={work}")
        except BaseException:
            self.destroy()
            raise

    def is_mounted(self) -> bool:
        """Whether the sandbox's root is mounted on the host (not after a host reboot)."""
        return mounts.is_mounted(str(self.rootfs))

    def remount(self, template: Path, host_root: int, idmap_fd: int) -> None:
        """Mount a kept disk again after a host reboot took its mounts: the template idmapped into `host_root`'s
        range, the writable layer from `disk.ext4`, its upper dir re-owned into that range (`userns.rehome`: the
        sandbox may come back on another slot), a fresh overlay work dir, the overlay.
        Never deletes anything of the layer: on failure the mounts are undone (`unmount`) and the disk is kept."""
        try:
            self.rootfs.mkdir(exist_ok=True)
            self.lower.mkdir(exist_ok=True)
            idmap.bind(template, self.lower, idmap_fd)
            scratch.wait_detached(self.image)  # never a second superblock on a layer that is still mounted
            scratch.mount_image(self.image, self.rw)
            self.rw.chmod(0o700)
            upper, work = self.rw / "upper", self.rw / "work"
            if not upper.is_dir():
                raise OSError(f"the kept layer {self.image} has no upper directory")
            userns.rehome(upper, host_root)  # always walked: a re-owning cut short by a crash is finished here
            shutil.rmtree(work, ignore_errors=True)  # the overlay's scratch space: nothing in it is kept
            work.mkdir()
            mounts.mount("overlay", str(self.rootfs), "overlay", 0,
                         f"lowerdir={self.lower},upperdir={upper},workdir={work}")
        except BaseException:
            self.unmount()
            raise

    def unmount(self) -> None:
        """Undo the host mounts of the root (overlay, template view, writable layer) and the volume views, keeping
        every file."""
        volumes.detach_all(self.dir)
        for target in (self.rootfs, self.lower, self.rw):
            try:
                mounts.umount(str(target))
            except OSError:
                mounts.umount(str(target), lazy=True)

    def _mount_writable(self, disk_mb: int) -> None:
        """The writable layer's backing, mounted at `rw` (see scratch.py for why not a tmpfs)."""
        scratch.make_image(self.image, disk_mb)
        scratch.mount_image(self.image, self.rw)
        self.rw.chmod(0o700)

    def keep_tmp_on_disk(self, lower: Path) -> None:
        """Make the sandbox's /tmp non-empty, so that runsc (gVisor) leaves it on the root — on this disk, where
        a filler gets ENOSPC — instead of mounting its own in-memory tmpfs over an empty /tmp. The copy-up keeps
        the template's /tmp mode (1777) and owner, as the sandbox's range maps it (relative to the upper dir,
        which belongs to the sandbox's root); the placeholder is an empty hidden file of that owner."""
        template_tmp = lower / "tmp"
        if not template_tmp.is_dir() or next(template_tmp.iterdir(), None) is not None:
            return  # no /tmp, or one with files: runsc leaves either alone
        st, root = template_tmp.stat(), (self.rw / "upper").stat()
        uid, gid = root.st_uid + st.st_uid - userns.BASE, root.st_gid + st.st_gid - userns.BASE
        tmp = self.rw / "upper" / "tmp"
        tmp.mkdir(exist_ok=True)
        os.chown(tmp, uid, gid)
        os.chmod(tmp, st.st_mode & 0o7777)
        (tmp / TMP_PLACEHOLDER).touch()
        os.chown(tmp / TMP_PLACEHOLDER, uid, gid)

    def usage(self) -> tuple[int, int]:
        """(used, total) bytes of the writable layer: total is the disk size the sandbox was given, used all of it
        the sandbox can no longer write (its files and the file system's own few per cent)."""
        st = os.statvfs(self.rw)
        try:
            total = self.image.stat().st_size
        except FileNotFoundError:  # a tmpfs layer (a sandbox started before the ext4 layer)
            total = st.f_blocks * st.f_frsize
        return max(0, total - st.f_bavail * st.f_frsize), total

    def destroy(self) -> None:
        """Unmount and remove everything; safe to call at any stage and more than once."""
        # Volume views first: deleting the directory through a still-mounted one would delete the volume's files.
        volumes.detach_all(self.dir)
        for target in (self.rootfs, self.lower, self.rw):
            if target.exists():
                try:
                    mounts.umount(str(target))
                except OSError:
                    mounts.umount(str(target), lazy=True)  # something still holds it: detach now
        shutil.rmtree(self.dir, ignore_errors=True)
