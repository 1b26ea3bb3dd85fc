"""The guest kernel and initramfs (images/guest.py), the unshifted rootfs view, and the boot probe."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest

from sandhive.images import guest, guest_init
from sandhive.node.microvm import accel, idmap

pytestmark = [pytest.mark.microvm, pytest.mark.timeout(600)]
XEN_ELFNOTE_PHYS32_ENTRY = 18  # the PVH entry point QEMU's microvm machine jumps to


@pytest.fixture(scope="module")
def assets(microvm_root: Path) -> guest.GuestAssets:
    return guest.build(log=print)


def elf_notes(image: bytes) -> list[tuple[str, int]]:
    """(name, type) of every note in the ELF's PT_NOTE segments."""
    assert image[:4] == b"\x7fELF" and image[4] == 2, "not a 64-bit ELF"
    phoff, = struct.unpack_from("<Q", image, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", image, 0x36)
    notes = []
    for i in range(phnum):
        p_type, _flags, offset, _vaddr, _paddr, filesz = struct.unpack_from("<IIQQQQ", image, phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        at = offset
        while at < offset + filesz:
            namesz, descsz, n_type = struct.unpack_from("<III", image, at)
            name = image[at + 12:at + 12 + namesz].rstrip(b"\0").decode()
            notes.append((name, n_type))
            at += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return notes


def cpio_entries(archive: bytes) -> dict[str, bytes]:
    entries, at = {}, 0
    while True:
        assert archive[at:at + 6] == b"070701"
        fields = [int(archive[at + 6 + 8 * i:at + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name = archive[at + 110:at + 110 + namesize - 1].decode()
        at = (at + 110 + namesize + 3) // 4 * 4
        if name == "TRAILER!!!":
            return entries
        entries[name] = archive[at:at + filesize]
        at = (at + filesize + 3) // 4 * 4


def test_kernel_is_a_pvh_elf(assets: guest.GuestAssets) -> None:
    notes = elf_notes(assets.kernel.read_bytes())
    assert ("Xen", XEN_ELFNOTE_PHYS32_ENTRY) in notes


def test_initramfs_loads_virtio_in_dependency_order(assets: guest.GuestAssets) -> None:
    entries = cpio_entries(assets.initramfs.read_bytes())
    init = entries["init"].decode()
    assert init.startswith("#!/bin/busybox sh")
    order = init.split("for m in ", 1)[1].split(";", 1)[0].split()
    for earlier, later in (("virtio_ring", "virtio"), ("virtio", "virtio_mmio"), ("virtio_mmio", "virtio_blk"),
                           ("virtio", "virtio_net"), ("libcrc32c", "erofs")):
        assert order.index(earlier) < order.index(later), order
    assert all(f"lib/modules/{m}.ko" in entries for m in order)
    assert entries["bin/busybox"][:4] == b"\x7fELF" and "bin/switch_root" in entries
    assert "--set-clock" in init and "sandhive.envd" in init


def test_build_is_reproducible_from_debian_packages(assets: guest.GuestAssets, tmp_path: Path) -> None:
    """A fresh build (own download of the .debs, own extraction) gives the same bytes as the cached one."""
    again = guest.build(tmp_path, force=True, log=print)
    for a, b in ((assets.kernel, again.kernel), (assets.initramfs, again.initramfs)):
        assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest(), a.name
    assert again.key == assets.key


def test_unshifted_view_shows_real_owners_read_only(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "home/user").mkdir(parents=True)
    os.chown(tree, 100_000, 100_000)
    os.chown(tree / "home/user", 101_000, 101_000)
    with idmap.unshifted_view(tree) as view:
        assert (os.stat(view).st_uid, os.stat(view / "home/user").st_uid) == (0, 1000)
        assert os.stat(view / "home/user").st_gid == 1000
        with pytest.raises(OSError):
            (view / "new").write_text("x")
        mounted = str(view)
    with open("/proc/self/mounts") as f:
        assert mounted not in f.read()


async def test_boot_probe_sees_a_guest_reach_its_init(assets: guest.GuestAssets) -> None:
    """The probe that decides KVM, run under TCG (which always boots): it sees the guest's marker."""
    assert guest_init.PROBE_MARKER
    assert await accel.boot_probe(assets, deadline=240, accel="tcg") is None


def test_kvm_choice_is_explained() -> None:
    why = accel.kvm_unusable()
    assert why is None or "/dev/kvm" in why
