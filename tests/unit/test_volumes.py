"""Volume rules without a server: names, mount paths, paths inside a volume, the backends that mount volumes,
and the content API's file work on a plain directory (openat2 needs no mount)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from sandhive.api.settings import Settings
from sandhive.api.volumes import VolumeService
from sandhive.errors import NodeError, UserError
from sandhive.node.volume_files import VolumeFiles, parts_of
from sandhive.node.volumes import check_mount_path, check_name


@pytest.mark.parametrize("name", ["data", "my-vol_2", "A" * 63])
def test_plain_names_pass(name: str) -> None:
    check_name(name)


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".", "..", ".hidden", "-x", "a b", "x" * 64, "a\0b", "é"])
def test_other_names_are_refused(name: str) -> None:
    with pytest.raises(NodeError) as refused:
        check_name(name)
    assert refused.value.status == 400


@pytest.mark.parametrize("path", ["/mnt/data", "/home/user/work", "/data"])
def test_plain_mount_paths_pass(path: str) -> None:
    assert check_mount_path(path) == path


@pytest.mark.parametrize("path", ["", "data", "/", "/proc", "/sys/fs", "/dev/x", "/.sandhive", "/etc",
                                  "/etc/resolv.conf", "/a/../b", "/a/./b", "/a//b", "/a\0"])
def test_other_mount_paths_are_refused(path: str) -> None:
    with pytest.raises(NodeError):
        check_mount_path(path)


def test_paths_inside_a_volume() -> None:
    assert parts_of("/") == [] and parts_of("") == []
    assert parts_of("/a//b/./c") == ["a", "b", "c"]
    for bad in ("..", "/a/../b", "a/..", "a\0b"):
        with pytest.raises(NodeError):
            parts_of(bad)


@pytest.mark.parametrize("backend", ["microvm", "none"])
def test_backends_without_volume_mounts_answer_400(tmp_path: Path, backend: str) -> None:
    service = VolumeService(Settings(data_dir=tmp_path), store=None)  # type: ignore[arg-type]  # never reached
    with pytest.raises(UserError) as refused:
        asyncio.run(service.mounts_for("team", backend, [{"name": "v", "path": "/mnt/v"}]))
    assert refused.value.status == 400
    assert refused.value.message == f"volumes are not supported by the {backend} backend"
    assert asyncio.run(service.mounts_for("team", backend, [])) == ()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to the canonical range needs root")
def test_files_stay_beneath_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "fs", tmp_path / "outside"
    root.mkdir()
    outside.write_text("secret")
    (root / "abs").symlink_to(outside)
    (root / "rel").symlink_to("../outside")
    (root / "up").symlink_to("..")
    files = VolumeFiles(str(root))
    for path in ("abs", "rel", "up/outside"):
        with pytest.raises(NodeError) as refused:
            files.open_read(path)
        assert refused.value.status == 400
    with pytest.raises(NodeError):
        files.write("abs", iter([b"x"]), None, None, None, False)
    with pytest.raises(NodeError):
        files.write("up/outside", iter([b"x"]), None, None, None, False)
    assert outside.read_text() == "secret"
    entry = files.write("d/e/f.txt", iter([b"hi"]), None, None, 0o4755, True)
    assert (entry.path, entry.size, entry.uid, entry.mode) == ("/d/e/f.txt", 2, 1000, 0o755)  # no setuid
    assert [e.path for e in files.list_dir("/", 3)] == ["/abs", "/d", "/d/e", "/d/e/f.txt", "/rel", "/up"]
    files.remove("up")
    assert tmp_path.exists() and outside.exists()
