"""Attack 2 of issue 12: a crafted tar PUT to the template-files URL must not write outside the upload.

Through the real API (`sandhive serve --backend none`): register a template with a key, ask
`GET /templates/{id}/files/{hash}` for the signed URL, PUT the tar there, then look at the host.

The PATH_MAX tar is the CVE-2025-4517 shape (CPython gh-135034): directories with long names reached through
one-letter symlinks, so that a link's real path exceeds PATH_MAX. `os.path.realpath` then stops resolving
and tarfile's `data` filter believes a link chain stays inside while the kernel follows it out. Run as root
(main's unpacking), that wrote a root-owned file at the target below.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import tarfile
from pathlib import Path

import httpx
import pytest

from sandhive.templates.uploads import FILES_DIR
from tests.api.rig import Server, module_server

STEPS = "abcdefghijklmnop"
PATH_MAX = 4096


server = module_server("uptar")


@pytest.fixture(scope="module")
def api_key(server: Server) -> str:
    return server.key("uptar")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A host directory outside the data dir, where an escaping upload would write."""
    path = tmp_path / "outside"
    path.mkdir()
    return path


def _tar(add: callable) -> bytes:  # type: ignore[valid-type]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(tar)
    return buf.getvalue()


def _entry(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "",
           data: bytes = b"") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, len(data)
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    tar.addfile(info, io.BytesIO(data) if data else None)


def path_max_tar(dest_len: int, target: Path, payload: bytes) -> bytes:
    """The CVE-2025-4517 tar for a destination path of `dest_len` characters, writing `target/pwned`."""
    # Each one-letter link points at a long directory; 16 of them nest to just under PATH_MAX from the
    # destination, so the final link's real path (one more long name) is past it.
    comp_len = (PATH_MAX - 2 - dest_len) // len(STEPS) - 1
    comp = "d" * comp_len

    def add(tar: tarfile.TarFile) -> None:
        path = ""
        for step in STEPS:
            _entry(tar, os.path.join(path, comp), tarfile.DIRTYPE)
            _entry(tar, os.path.join(path, step), tarfile.SYMTYPE, comp)
            path = os.path.join(path, comp)
        linkpath = os.path.join(*STEPS, "l" * 254)
        _entry(tar, linkpath, tarfile.SYMTYPE, os.path.join(*[".."] * len(STEPS)))
        # realpath sees `linkpath` as a plain directory (it cannot lstat it), the kernel as the destination:
        # the same number of '..' is "back inside" for the filter and "above /" for the kernel.
        escape = linkpath + "/.." * (len(STEPS) + 1) + str(target)  # the destination must be < 17 deep
        _entry(tar, "escape", tarfile.SYMTYPE, escape)
        _entry(tar, "escape/pwned", data=payload)

    return _tar(add)


def _signed_url(server: Server, api_key: str, name: str, files_hash: str) -> str:
    with server.client(api_key) as c:
        r = c.post("/v3/templates", json={"name": name})
        assert r.status_code == 202, r.text
        template_id = r.json()["templateID"]
        r = c.get(f"/templates/{template_id}/files/{files_hash}")
        assert r.status_code == 201 and r.json()["present"] is False, r.text
        return r.json()["url"]


def _put(url: str, body: bytes) -> httpx.Response:
    return httpx.put(url, content=body, trust_env=False, timeout=60)


def _unpacked(server: Server, api_key: str, files_hash: str) -> Path:
    return server.data_dir / FILES_DIR / str(server.store.authenticate(api_key)) / files_hash


def test_path_max_bypass_writes_nothing_outside(server: Server, api_key: str, outside: Path) -> None:
    files_hash = hashlib.sha256(secrets.token_bytes(8)).hexdigest()
    url = _signed_url(server, api_key, "pathmax-tpl", files_hash)
    team = server.store.authenticate(api_key)
    # Where main unpacked it: <data>/template-files/<team>/.tmp-<hash>-<8 hex>
    dest_len = len(str(server.data_dir / FILES_DIR / str(team) / f".tmp-{files_hash}-{'0' * 8}"))
    payload = b"written by an upload\n"
    response = _put(url, path_max_tar(dest_len, outside, payload))
    target = outside / "pwned"
    assert not target.exists(), f"the upload wrote {target} on the host (owner uid {target.stat().st_uid})"
    assert not list(outside.iterdir())
    assert response.status_code in (204, 400), response.text


@pytest.mark.parametrize("member", ["../../../../escape-dotdot.txt", "/tmp/escape-abs.txt",
                                    "a/../../../escape-mid.txt"])
def test_dotdot_and_absolute_members_write_nothing_outside(server: Server, api_key: str, member: str) -> None:
    files_hash = hashlib.sha256(member.encode() + secrets.token_bytes(4)).hexdigest()
    url = _signed_url(server, api_key, "dotdot-tpl", files_hash)
    name = os.path.basename(member)
    before = Path("/tmp", name).exists()
    response = _put(url, _tar(lambda tar: (_entry(tar, "ok.txt", data=b"ok"), _entry(tar, member, data=b"evil"))))
    assert response.status_code == 400 and member in response.json()["message"], response.text
    assert not list(server.data_dir.parent.rglob(name))
    assert Path("/tmp", name).exists() == before
    assert not _unpacked(server, api_key, files_hash).exists()  # all or nothing


def test_absolute_symlink_is_kept_as_a_link_and_never_followed(server: Server, api_key: str, outside: Path) -> None:
    files_hash = hashlib.sha256(secrets.token_bytes(8)).hexdigest()
    url = _signed_url(server, api_key, "abslink-tpl", files_hash)
    response = _put(url, _tar(lambda tar: (_entry(tar, "hostname", tarfile.SYMTYPE, "/etc/hostname"),
                                           _entry(tar, "app.py", data=b"print(1)\n"))))
    assert response.status_code == 204, response.text
    unpacked = _unpacked(server, api_key, files_hash)
    assert (unpacked / "hostname").is_symlink() and os.readlink(unpacked / "hostname") == "/etc/hostname"
    assert (unpacked / "app.py").read_bytes() == b"print(1)\n"
    owner = (unpacked / "app.py").stat()
    assert owner.st_uid != 0 and owner.st_gid != 0, "unpacked files must not be owned by host root"

    # Writing through an absolute link to a host directory lands inside the upload, or nowhere.
    files_hash = hashlib.sha256(secrets.token_bytes(8)).hexdigest()
    url = _signed_url(server, api_key, "abslink-tpl", files_hash)
    _put(url, _tar(lambda tar: (_entry(tar, "out", tarfile.SYMTYPE, str(outside)),
                                _entry(tar, "out/pwned", data=b"evil"))))
    assert not (outside / "pwned").exists()
