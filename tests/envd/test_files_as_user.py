"""The files API acts as the requesting user: the kernel's permission checks apply, not envd's root.

Each test sets up root-only files with a root command, then tries them as `user` through the SDK.
"""

from __future__ import annotations

import pytest
from e2b import Sandbox
from e2b.exceptions import SandboxException


@pytest.fixture
def private(sbx: Sandbox, workdir: str) -> str:
    """A root-only directory (0700) holding a root-only file `secret` (0600)."""
    path = f"{workdir}/private"
    sbx.commands.run(f"mkdir -m 700 {path} && printf s3cret > {path}/secret && chmod 600 {path}/secret",
                     user="root")
    return path


def exists(sbx: Sandbox, path: str) -> bool:
    return sbx.commands.run(f"test -e {path} && echo yes || echo no", user="root").stdout.strip() == "yes"


def test_user_cannot_read_a_root_only_file(sbx: Sandbox, workdir: str) -> None:
    sbx.commands.run(f"printf s3cret > {workdir}/secret && chmod 600 {workdir}/secret", user="root")
    with pytest.raises(SandboxException, match="permission denied") as caught:
        sbx.files.read(f"{workdir}/secret", user="user")
    assert "s3cret" not in str(caught.value)
    assert sbx.files.read(f"{workdir}/secret", user="root") == "s3cret"


def test_user_cannot_write_into_a_root_owned_directory(sbx: Sandbox, workdir: str) -> None:
    sbx.commands.run(f"mkdir -m 755 {workdir}/rootdir", user="root")
    with pytest.raises(SandboxException, match="permission denied"):
        sbx.files.write(f"{workdir}/rootdir/x", "nope", user="user")
    with pytest.raises(SandboxException, match="permission denied"):
        sbx.files.write(f"{workdir}/rootdir/sub/x", "nope", user="user")  # the parent it would make
    assert not exists(sbx, f"{workdir}/rootdir/x") and not exists(sbx, f"{workdir}/rootdir/sub")
    assert sbx.commands.run(f"ls -A {workdir}/rootdir", user="root").stdout == ""  # no temporary left


def test_user_files_belong_to_the_user(sbx: Sandbox, workdir: str) -> None:
    info = sbx.files.write(f"{workdir}/mine/deep/file.txt", "hers", user="user")
    assert sbx.files.get_info(info.path, user="user").owner == "user"
    assert sbx.files.get_info(f"{workdir}/mine/deep", user="user").owner == "user"
    made = sbx.files.make_dir(f"{workdir}/madedir", user="user")
    assert made and sbx.files.get_info(f"{workdir}/madedir").owner == "user"
    root_file = sbx.files.write(f"{workdir}/roots.txt", "root's", user="root")
    assert sbx.files.get_info(root_file.path).owner == "root"


def test_rpc_operations_in_a_private_directory_are_denied(sbx: Sandbox, private: str) -> None:
    for attempt in (lambda: sbx.files.list(private, user="user"),
                    lambda: sbx.files.get_info(f"{private}/secret", user="user"),
                    lambda: sbx.files.make_dir(f"{private}/new", user="user"),
                    lambda: sbx.files.remove(f"{private}/secret", user="user"),
                    lambda: sbx.files.rename(f"{private}/secret", f"{private}/../stolen", user="user")):
        with pytest.raises(SandboxException, match="(?i)permission.denied"):
            attempt()
    assert exists(sbx, f"{private}/secret") and not exists(sbx, f"{private}/new")
    assert [e.name for e in sbx.files.list(private, user="root")] == ["secret"]


def test_user_cannot_watch_a_directory_it_cannot_read(sbx: Sandbox, private: str) -> None:
    with pytest.raises(SandboxException, match="(?i)permission.denied"):
        sbx.files.watch_dir(private, user="user")
    sbx.files.watch_dir(private, user="root").stop()


def test_recursive_watch_skips_unreadable_subdirectories(sbx: Sandbox, workdir: str) -> None:
    sbx.commands.run(f"mkdir -p {workdir}/w/open && mkdir -m 700 {workdir}/w/closed && chmod 777 {workdir}/w/open",
                     user="root")
    handle = sbx.files.watch_dir(f"{workdir}/w", recursive=True, user="user")
    try:
        sbx.commands.run(f"touch {workdir}/w/closed/hidden {workdir}/w/open/seen", user="root")
        names = set()
        for _ in range(20):
            names |= {e.name for e in handle.get_new_events()}
            if "open/seen" in names:
                break
            sbx.commands.run("sleep 0.1")
        assert "open/seen" in names and "closed/hidden" not in names
    finally:
        handle.stop()
