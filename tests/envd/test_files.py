"""files.* through the released e2b SDK: read, write, list, stat, make_dir, rename, remove, signed URLs."""

from __future__ import annotations

import gzip
import io

import httpx
import pytest
from e2b import FileType, Sandbox
from e2b.exceptions import InvalidArgumentException, NotFoundException
from e2b.sandbox.filesystem.filesystem import WriteEntry


def test_write_and_read_text_and_bytes(sbx: Sandbox, workdir: str) -> None:
    info = sbx.files.write(f"{workdir}/a/b/hello.txt", "This is inside the sandbox.")
    assert info.path == f"{workdir}/a/b/hello.txt" and info.name == "hello.txt"
    assert sbx.files.read(f"{workdir}/a/b/hello.txt") == "This is inside the sandbox."
    blob = bytes(range(256)) * 1000
    sbx.files.write(f"{workdir}/blob.bin", blob)
    assert sbx.files.read(f"{workdir}/blob.bin", format="bytes") == blob
    assert b"".join(sbx.files.read(f"{workdir}/blob.bin", format="stream")) == blob


def test_gzip_and_octet_stream_uploads(sbx: Sandbox, workdir: str) -> None:
    payload = b"compress me " * 10000
    sbx.files.write(f"{workdir}/z.bin", payload, gzip=True)
    assert sbx.files.read(f"{workdir}/z.bin", format="bytes", gzip=True) == payload
    sbx.files.write(f"{workdir}/stream.bin", io.BytesIO(payload))  # file-like → octet-stream
    assert sbx.files.read(f"{workdir}/stream.bin", format="bytes") == payload


def test_write_many_files(sbx: Sandbox, workdir: str) -> None:
    entries = [WriteEntry(path=f"{workdir}/many/f{i}.txt", data=f"file {i}") for i in range(20)]
    written = sbx.files.write_files(entries)
    assert sorted(w.path for w in written) == sorted(e["path"] for e in entries)
    assert sbx.files.read(f"{workdir}/many/f13.txt") == "file 13"


def test_relative_paths_are_in_the_users_home(sbx: Sandbox) -> None:
    sbx.files.write("relative.txt", "home", user="user")
    assert sbx.files.read("/home/user/relative.txt") == "home"
    info = sbx.files.get_info("/home/user/relative.txt")
    assert (info.owner, info.group) == ("user", "user")


def test_metadata_roundtrip(sbx: Sandbox, workdir: str) -> None:
    sbx.files.write(f"{workdir}/meta.txt", "x", metadata={"Owner": "agent-7"})
    assert sbx.files.get_info(f"{workdir}/meta.txt").metadata == {"owner": "agent-7"}


def test_list_with_depth_exists_get_info(sbx: Sandbox, workdir: str) -> None:
    sbx.files.write(f"{workdir}/d1/d2/deep.txt", "deep")
    sbx.files.write(f"{workdir}/top.txt", "top!")
    sbx.commands.run(f"ln -s {workdir}/top.txt {workdir}/link")
    names1 = sorted(e.name for e in sbx.files.list(workdir))
    assert names1 == ["d1", "link", "top.txt"]
    names3 = sorted(e.path for e in sbx.files.list(workdir, depth=3))
    assert f"{workdir}/d1/d2/deep.txt" in names3 and f"{workdir}/d1/d2" in names3
    top = sbx.files.get_info(f"{workdir}/top.txt")
    assert (top.type, top.size, top.permissions[0], top.owner) == (FileType.FILE, 4, "-", "root")
    link = sbx.files.get_info(f"{workdir}/link")
    assert link.symlink_target == f"{workdir}/top.txt"
    assert sbx.files.get_info(f"{workdir}/d1").type == FileType.DIR
    assert sbx.files.exists(f"{workdir}/top.txt") and not sbx.files.exists(f"{workdir}/nope")


def test_make_dir_rename_remove(sbx: Sandbox, workdir: str) -> None:
    assert sbx.files.make_dir(f"{workdir}/new/nested") is True
    assert sbx.files.make_dir(f"{workdir}/new/nested") is False  # already exists
    sbx.files.write(f"{workdir}/new/nested/f.txt", "f")
    moved = sbx.files.rename(f"{workdir}/new", f"{workdir}/renamed")
    assert moved.path == f"{workdir}/renamed"
    assert sbx.files.read(f"{workdir}/renamed/nested/f.txt") == "f"
    sbx.files.remove(f"{workdir}/renamed")
    assert not sbx.files.exists(f"{workdir}/renamed")
    sbx.files.remove(f"{workdir}/renamed")  # like rm -rf: a missing path is removed already


def test_read_errors(sbx: Sandbox, workdir: str) -> None:
    with pytest.raises(NotFoundException):
        sbx.files.read(f"{workdir}/missing.txt")
    with pytest.raises(InvalidArgumentException, match="directory"):
        sbx.files.read(workdir)
    with pytest.raises(NotFoundException):
        sbx.files.list(f"{workdir}/missing-dir")


def test_gzip_download_is_compressed_on_the_wire(envd, workdir: str, sbx: Sandbox) -> None:
    sbx.files.write(f"{workdir}/g.txt", "a" * 100000)
    r = httpx.get(f"{envd.url}/files", params={"path": f"{workdir}/g.txt"}, headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and len(r.content) == 100000  # httpx decodes
    raw = httpx.get(f"{envd.url}/files", params={"path": f"{workdir}/g.txt"},
                    headers={"Accept-Encoding": "gzip"}).read()
    assert len(raw) == 100000
    with httpx.stream("GET", f"{envd.url}/files", params={"path": f"{workdir}/g.txt"},
                      headers={"Accept-Encoding": "gzip"}) as s:
        wire = b"".join(s.iter_raw())
    assert len(wire) < 1000 and gzip.decompress(wire) == b"a" * 100000
    bad = httpx.get(f"{envd.url}/files", params={"path": f"{workdir}/g.txt"},
                    headers={"Accept-Encoding": "br, identity;q=0"})
    assert bad.status_code == 406
