"""A sandbox's writable layer on the host's disk: a sparse file, formatted ext4, attached to a loop device.

Why not a tmpfs: tmpfs pages are memory, charged to the sandbox's memory cgroup, so a layer as large as the
template's disk (1 GB for `base`, twice its memory) could never fill: a disk filler was OOM-killed (container)
or ended the whole sandbox (gVisor) instead of getting ENOSPC. An ext4 file system of exactly the disk size
answers ENOSPC at its size, and its pages are page cache the kernel can write back and drop, not memory the
sandbox holds. The file is sparse (a fresh 1 GB one takes ~0.7 MB), so the host's disk pays only for what
sandboxes write; it is deleted with the sandbox.

Cost (measured on these machines): truncate ~0.1 ms, `mkfs.ext4` with lazy init and no journal ~40 ms,
loop attach and mount ~10 ms — paid when a sandbox starts, so hidden by warm pools on a hit.

The loop device is configured with `LO_FLAGS_AUTOCLEAR`: the kernel detaches it by itself when its last user
(the mount) goes, so a lazily unmounted or crashed sandbox never leaves a loop device behind. No journal: the
layer lives and dies with one sandbox, so crash consistency buys nothing.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import subprocess
import time
from pathlib import Path

from . import mounts

LOOP_CONTROL = "/dev/loop-control"
LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16  # no second copy of the data in the host's page cache (ignored where unsupported)
MS_NODEV = 4
MKFS = ("mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0",
        "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard")


class _LoopInfo64(ctypes.Structure):
    _fields_ = [("lo_device", ctypes.c_uint64), ("lo_inode", ctypes.c_uint64), ("lo_rdevice", ctypes.c_uint64),
                ("lo_offset", ctypes.c_uint64), ("lo_sizelimit", ctypes.c_uint64), ("lo_number", ctypes.c_uint32),
                ("lo_encrypt_type", ctypes.c_uint32), ("lo_encrypt_key_size", ctypes.c_uint32),
                ("lo_flags", ctypes.c_uint32), ("lo_file_name", ctypes.c_uint8 * 64),
                ("lo_crypt_name", ctypes.c_uint8 * 64), ("lo_encrypt_key", ctypes.c_uint8 * 32),
                ("lo_init", ctypes.c_uint64 * 2)]


class _LoopConfig(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_uint32), ("block_size", ctypes.c_uint32), ("info", _LoopInfo64),
                ("reserved", ctypes.c_uint64 * 8)]


def make_image(image: Path, disk_mb: int) -> None:
    """A sparse file of `disk_mb` MB holding an empty ext4 file system."""
    with open(image, "wb") as f:
        f.truncate(disk_mb * 1024 * 1024)
    proc = subprocess.run([*MKFS, str(image)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise OSError(f"mkfs.ext4 {image} failed: {(proc.stderr or proc.stdout).strip()}")


def _attach(image: Path) -> tuple[int, str]:
    """A free loop device backed by `image` (auto-clearing): its open fd and path. Retries when another
    process takes the same free device first."""
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(32):
                number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
                device = f"/dev/loop{number}"
                fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
                config = _LoopConfig(fd=backing)
                config.info.lo_flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO
                try:
                    fcntl.ioctl(fd, LOOP_CONFIGURE, config)
                except OSError as exc:
                    os.close(fd)
                    if exc.errno == errno.EBUSY:
                        continue  # raced: someone configured it between GET_FREE and ours
                    raise
                return fd, device
            raise OSError(errno.EBUSY, "no free loop device after 32 tries")
        finally:
            os.close(control)
    finally:
        os.close(backing)  # the loop device holds its own reference to the file


def loop_devices_of(image: Path) -> list[str]:
    """The loop devices backed by `image` now. One left after its mount is gone means the file system still
    lives (another mount namespace holds a copy of the mount): mounting the image again would put a second
    superblock on the same blocks, reading what the first one has not written back yet."""
    target = os.path.realpath(image)
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if backing.read_text().strip() == target:
                found.append(f"/dev/{backing.parent.parent.name}")
        except OSError:
            continue  # detached meanwhile
    return found


def wait_detached(image: Path, timeout: float = 10.0) -> None:
    """Return once no loop device is backed by `image` (OSError after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while devices := loop_devices_of(image):
        if time.monotonic() > deadline:
            raise OSError(errno.EBUSY, f"{image} is still attached to {', '.join(devices)}: its file system is "
                                       "alive elsewhere (another mount namespace), so it cannot be mounted again")
        time.sleep(0.05)


def mount_image(image: Path, target: Path) -> None:
    """Mount `image` (ext4) on `target` through a loop device that goes away with the mount."""
    fd, device = _attach(image)
    try:
        mounts.mount(device, str(target), "ext4", MS_NODEV, "")
    finally:
        os.close(fd)  # unmounted (or never mounted): autoclear detaches the device now or at the unmount
