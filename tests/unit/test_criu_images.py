"""The protobuf rewrite of CRIU's user- and UTS-namespace images (node/criu_images.py), on hand-built images."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sandhive.node import criu_images as ci

USERNS_MAGIC = 0x55474906
UTSNS_MAGIC = 0x54473203


def _image(path: Path, magic: int, entry: bytes) -> None:
    path.write_bytes(struct.pack("<II", ci.IMG_COMMON_MAGIC, magic) + struct.pack("<I", len(entry)) + entry)


def _extent(first: int, lower: int, count: int) -> bytes:
    return ci.encode([(1, 0, first), (2, 0, lower), (3, 0, count)])


def test_retarget_moves_the_uid_and_gid_maps_and_renames_the_host(tmp_path: Path) -> None:
    userns = ci.encode([(1, 2, _extent(0, 1_000_000, 65536)), (2, 2, _extent(0, 1_000_000, 65536))])
    _image(tmp_path / "userns-11.img", USERNS_MAGIC, userns)
    _image(tmp_path / "utsns-12.img", UTSNS_MAGIC, ci.encode([(1, 2, b"iold"), (2, 2, b"(none)")]))
    shared = tmp_path / "shared.img"
    shared.write_bytes((tmp_path / "userns-11.img").read_bytes())
    (tmp_path / "userns-11.img").unlink()
    (tmp_path / "userns-11.img").hardlink_to(shared)

    ci.retarget(tmp_path, 1_000_000, 1_131_072, "inew")

    header, entries = ci.read_image(tmp_path / "userns-11.img")
    assert header == struct.pack("<II", ci.IMG_COMMON_MAGIC, USERNS_MAGIC)
    assert ci.userns_maps(entries[0]) == [(0, 1_131_072, 65536)]
    gid = [v for n, _, v in ci.decode(entries[0]) if n == 2]
    assert isinstance(gid[0], bytes) and ci.decode(gid[0])[1] == (2, 0, 1_131_072)
    _, uts = ci.read_image(tmp_path / "utsns-12.img")
    assert ci.decode(uts[0]) == [(1, 2, b"inew"), (2, 2, b"(none)")]
    # The shared image (a hard link) is untouched: each restore rewrites its own copy.
    assert ci.userns_maps(ci.read_image(shared)[1][0]) == [(0, 1_000_000, 65536)]


def test_varints_round_trip() -> None:
    for value in (0, 1, 127, 128, 300, 2**32 - 1):
        assert ci.decode(ci.encode([(3, 0, value)])) == [(3, 0, value)]


def test_truncated_images_are_refused(tmp_path: Path) -> None:
    (tmp_path / "userns-1.img").write_bytes(struct.pack("<III", ci.IMG_COMMON_MAGIC, USERNS_MAGIC, 50) + b"x")
    with pytest.raises(ci.ImageFormatError):
        ci.retarget(tmp_path, 0, 1, "x")
    with pytest.raises(ci.ImageFormatError):
        ci.retarget(tmp_path / "nowhere-dir-does-not-matter", 0, 1, "x")
