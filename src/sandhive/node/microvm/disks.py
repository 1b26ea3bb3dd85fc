"""A guest's disks: read-only images made once, and a copy-on-write layer per VM made in milliseconds.

- The system image (envd and its Python) as an erofs image, one per system-image version, in the cache.
- A template's rootfs as a sparse ext4 image sized for the template's disk, owners unshifted (see
  idmap.py), one per template version, next to the template data in `<data_dir>/microvm/images/`.
- Per VM, a qcow2 file whose backing file is one of those (or a template snapshot's own qcow2): it
  holds only what the guest writes, so creating one is a header write and deleting it frees it all.

The host's ext4 has no reflinks, so copying images per sandbox is not an option; qcow2 backing files
are the copy-on-write that works everywhere QEMU does.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ...images.debian import BuildError
from ..runtime import TemplateImage
from .idmap import unshifted_view

LAYOUT_VERSION = 1
INODE_RATIO = 8192  # bytes per inode: Debian trees hold many small files
MIN_FREE_MB = 64


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(argv[:3])} ... failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")


@contextmanager
def _locked(directory: Path, name: str) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f".lock-{name}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def system_disk(system_image: Path, cache_dir: Path) -> Path:
    """The erofs image of a system image directory (built once; the directory's name is its version)."""
    root = cache_dir / "microvm"
    image = root / f"system-{system_image.name}.erofs"
    if image.exists():
        return image
    with _locked(root, "system"):
        if not image.exists():
            tmp = image.with_name(f".tmp-{image.name}-{os.getpid()}")
            # Fixed time and UUID: the same system image gives the same bytes.
            _run(["mkfs.erofs", "--quiet", "--all-root", "-T0", "-U", "00000000-0000-0000-0000-000000000000",
                  str(tmp), str(system_image)])
            os.rename(tmp, image)
        for old in root.glob("system-*.erofs"):  # running VMs keep their open file; new ones use this one
            if old != image:
                old.unlink(missing_ok=True)
    return image


def template_key(template: TemplateImage) -> str:
    """Identifies one build of a template: its template.json (rewritten by every build) or, without one,
    the rootfs directory's identity; plus the disk size, which the image is made with."""
    meta = template.rootfs.parent / "template.json"
    try:
        identity = meta.read_bytes()
    except OSError:
        st = template.rootfs.stat()
        identity = f"{st.st_ino}-{st.st_mtime_ns}".encode()
    h = hashlib.sha256(identity + f"|{template.disk_mb}|{LAYOUT_VERSION}".encode())
    return h.hexdigest()[:16]


def _tree_bytes(tree: Path) -> int:
    out = subprocess.run(["du", "-s", "--block-size=1", "-x", str(tree)], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out else 0


def template_disk(template: TemplateImage, data_dir: Path) -> Path:
    """The template's rootfs as an ext4 image with `disk_mb` free (built once per template version).

    Sparse: only the files take space. No journal: a sandbox's disk does not outlive its VM, and every
    journal write would land in the copy-on-write layer.
    """
    root = data_dir / "microvm" / "images"
    image = root / f"{template.template_id}-{template_key(template)}.ext4"
    if image.exists():
        return image
    with _locked(root, template.template_id):
        if image.exists():
            return image
        for leftover in root.glob(f".tmp-{template.template_id}-*"):
            leftover.unlink(missing_ok=True)
        tmp = root / f".tmp-{image.name}-{os.getpid()}"
        size_mb = _tree_bytes(template.rootfs) * 11 // 10 // 2**20 + max(template.disk_mb, MIN_FREE_MB)
        try:
            with open(tmp, "wb") as f:
                f.truncate(size_mb * 2**20)
            with unshifted_view(template.rootfs) as view:
                _run(["mkfs.ext4", "-q", "-F", "-L", "sandhive-root", "-O", "^has_journal", "-m", "0",
                      "-i", str(INODE_RATIO), "-E", "root_owner=0:0", "-d", str(view), str(tmp)])
            os.rename(tmp, image)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        for old in root.glob(f"{template.template_id}-*.ext4"):  # an older build of this template
            if old != image:
                old.unlink(missing_ok=True)
    return image


def overlay(path: Path, backing: Path) -> None:
    """A qcow2 at `path` holding nothing yet, reading through to `backing` (raw or qcow2)."""
    fmt = "qcow2" if backing.suffix == ".qcow2" else "raw"
    _run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", "-b", str(backing), "-F", fmt,
          str(path)])


def overlay_over(path: Path, backing: Path, size: int) -> None:
    """A qcow2 at `path` over the qcow2 `backing`, without opening it (`-u`): its own backing chain is named
    on QEMU's command line (qemu.Machine.root_backing), not by the paths in its header."""
    _run(["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-o", "cluster_size=65536", "-b", str(backing),
          "-F", "qcow2", str(path), str(size)])


def qcow2_header(path: Path) -> tuple[int, Path | None]:
    """A qcow2 file's virtual size and the backing path its header names (None: it has none)."""
    with open(path, "rb") as f:
        head = f.read(32)
        magic, _version, offset, length, size = struct.unpack(">4sIQI4xQ", head)
        if magic != b"QFI\xfb":
            raise BuildError(f"{path} is not a qcow2 image")
        if not offset:
            return size, None
        f.seek(offset)
        name = f.read(length).decode()
    backing = Path(name)
    return size, backing if backing.is_absolute() else path.parent / backing


def chain(top: Path) -> list[Path]:
    """The layers under a qcow2 `top`, top-down, as its headers name them (the last one is raw)."""
    layers: list[Path] = []
    current = top
    while current.suffix == ".qcow2":
        _, backing = qcow2_header(current)
        if backing is None:
            break
        layers.append(backing)
        current = backing
        if len(layers) > 64:
            raise BuildError(f"the backing chain of {top} does not end")
    return layers


def link_or_copy(src: Path, dest: Path) -> None:
    """`dest` as another name of the read-only `src` (a copy across filesystems)."""
    try:
        os.link(src, dest)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EMLINK):  # another filesystem, or the inode's links are used up
            raise
        copy_sparse(src, dest)


def copy_sparse(src: Path, dest: Path) -> None:
    """A copy that keeps the holes of a sparse image (no reflinks on the host's ext4)."""
    _run(["cp", "--sparse=always", "--", str(src), str(dest)])


def allocated_bytes(path: Path) -> int:
    """Bytes a (sparse) file takes on the host's disk."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


def require_tools() -> str | None:
    """Why disks cannot be made here (None: the tools are installed)."""
    for tool, package in (("qemu-img", "qemu-utils"), ("mkfs.erofs", "erofs-utils"), ("mkfs.ext4", "e2fsprogs")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: apt-get install {package}"
    return None
