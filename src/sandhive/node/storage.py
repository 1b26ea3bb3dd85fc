"""A sandbox's root filesystem: the template's read-only rootfs under a private writable layer.

The writable layer is a tmpfs capped at the sandbox's disk size, so a disk filler stops at its quota
and the layer vanishes with the sandbox; its pages count against the sandbox's memory cgroup (they are
charged to the writer). The merged tree is an overlay mount that the OCI runtime uses as the root.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import mounts, userns


class SandboxDisk:
    """Paths of one sandbox's filesystem under its state directory."""

    def __init__(self, sandbox_dir: Path) -> None:
        self.dir = sandbox_dir
        self.rw = sandbox_dir / "rw"  # tmpfs: upper/ and work/
        self.rootfs = sandbox_dir / "rootfs"  # the overlay mount point

    def create(self, lower: Path, disk_mb: int) -> None:
        """Mount tmpfs + overlay. Undone by `destroy`, which `create` calls itself on failure."""
        try:
            self.rw.mkdir(parents=True, exist_ok=True)
            self.rootfs.mkdir(exist_ok=True)
            mounts.mount("tmpfs", str(self.rw), "tmpfs", 0, f"size={disk_mb}m,mode=0700")
            upper, work = self.rw / "upper", self.rw / "work"
            upper.mkdir()
            work.mkdir()
            # The merged root takes the upper dir's owner: sandbox root, like the template's own root.
            os.chown(upper, userns.BASE, userns.BASE)
            os.chmod(upper, 0o755)
            mounts.mount("overlay", str(self.rootfs), "overlay", 0,
                         f"lowerdir={lower},upperdir={upper},workdir={work}")
        except BaseException:
            self.destroy()
            raise

    def usage(self) -> tuple[int, int]:
        """(used, total) bytes of the writable layer."""
        st = os.statvfs(self.rw)
        total = st.f_blocks * st.f_frsize
        return total - st.f_bfree * st.f_frsize, total

    def destroy(self) -> None:
        """Unmount and remove everything; safe to call at any stage and more than once."""
        for target in (self.rootfs, self.rw):
            if target.exists():
                try:
                    mounts.umount(str(target))
                except OSError:
                    mounts.umount(str(target), lazy=True)  # something still holds it: detach now
        shutil.rmtree(self.dir, ignore_errors=True)
