"""A sandbox's root filesystem: the template's read-only rootfs under a private writable layer.

The writable layer is a tmpfs capped at the sandbox's disk size, so a disk filler stops at its quota
and the layer vanishes with the sandbox; its pages count against the sandbox's memory cgroup (they are
charged to the writer). The merged tree is an overlay mount that the OCI runtime uses as the root.

The lower layer is the template tree (stored in the canonical range `userns.BASE`) seen through an idmapped
bind mount that shifts it into the sandbox's own uid range (`idmap.py`): the kernel refuses to idmap an
overlay itself, so the lower layer is idmapped and the overlay stacked on it. Files copied up into the
writable layer keep the owners the sandbox sees, so they are owned by its range on the host too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import idmap, mounts, userns


class SandboxDisk:
    """Paths of one sandbox's filesystem under its state directory."""

    def __init__(self, sandbox_dir: Path) -> None:
        self.dir = sandbox_dir
        self.rw = sandbox_dir / "rw"  # tmpfs: upper/ and work/
        self.rootfs = sandbox_dir / "rootfs"  # the overlay mount point
        self.lower = sandbox_dir / "lower"  # the template, idmapped into the sandbox's range

    def create(self, template: Path, disk_mb: int, host_root: int = userns.BASE, idmap_fd: int | None = None) -> None:
        """Mount the idmapped template, tmpfs and overlay. `host_root` is the host uid (and gid) of the
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
            mounts.mount("tmpfs", str(self.rw), "tmpfs", 0, f"size={disk_mb}m,mode=0700")
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

    def usage(self) -> tuple[int, int]:
        """(used, total) bytes of the writable layer."""
        st = os.statvfs(self.rw)
        total = st.f_blocks * st.f_frsize
        return total - st.f_bfree * st.f_frsize, total

    def destroy(self) -> None:
        """Unmount and remove everything; safe to call at any stage and more than once."""
        for target in (self.rootfs, self.lower, self.rw):
            if target.exists():
                try:
                    mounts.umount(str(target))
                except OSError:
                    mounts.umount(str(target), lazy=True)  # something still holds it: detach now
        shutil.rmtree(self.dir, ignore_errors=True)
