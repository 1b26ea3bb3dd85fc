"""The files API as `user`: reading /etc/shadow and writing /etc/sudoers.d or /root must fail (issue 12).

envd runs as the sandbox's root; before the fix every /files and Filesystem call ran as that root whatever
`user` it named, so `user` read /etc/shadow and wrote /etc/sudoers.d/x. Each check here is made from the
sandbox's root side with a root command: the file does not exist, or no secret came back. Root keeps root's
rights (positive control), and what `user` writes in its home belongs to `user`.

Promise: the files API performs every read, write, list, stat, move, remove and watch with the requesting
user's uid, gid and groups, so the kernel's permission checks apply (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2b import Sandbox
from e2b.exceptions import SandboxException

from .conftest import Live

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]

DENIED = "(?i)permission.denied"
# Measured before and after envd's dumpable change alike: the sentry's /proc is its own, not the host kernel's.
GVISOR_PROC = "the sentry lets `user` open environ and maps of a root process (not mem): only mem is checked"


@pytest.fixture(scope="module")
def sbx(e2b_env: None) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(timeout=300)
    try:
        yield sandbox
    finally:
        sandbox.kill()


def as_root(sbx: Sandbox, command: str) -> str:
    return sbx.commands.run(command, user="root").stdout


def exists(sbx: Sandbox, path: str) -> bool:
    return as_root(sbx, f"test -e {path} && echo yes || echo no").strip() == "yes"


def test_user_cannot_read_etc_shadow(sbx: Sandbox) -> None:
    shadow = as_root(sbx, "cat /etc/shadow")
    assert "root:" in shadow  # there is something to steal
    with pytest.raises(SandboxException, match=DENIED) as caught:
        sbx.files.read("/etc/shadow", user="user", format="bytes")
    assert "root:" not in str(caught.value)
    with pytest.raises(SandboxException, match=DENIED):
        sbx.files.get_info("/root/.bashrc", user="user")
    assert sbx.files.read("/etc/shadow", user="root") == shadow  # root keeps root's rights


@pytest.mark.parametrize("target", ["/etc/sudoers.d/x", "/root/x", "/root/newdir/x"])
def test_user_cannot_write_outside_its_rights(sbx: Sandbox, target: str) -> None:
    with pytest.raises(SandboxException, match=DENIED):
        sbx.files.write(target, "user ALL=(ALL) NOPASSWD: ALL\n", user="user")
    assert not exists(sbx, target)
    assert not exists(sbx, "/root/newdir")
    assert as_root(sbx, "ls -A /etc/sudoers.d | grep -c sandhive-upload || true").strip() == "0"


def test_user_cannot_make_move_or_remove_in_root_directories(sbx: Sandbox) -> None:
    as_root(sbx, "printf keep > /root/keep")
    with pytest.raises(SandboxException, match=DENIED):
        sbx.files.make_dir("/etc/sudoers.d/dir", user="user")
    with pytest.raises(SandboxException, match=DENIED):
        sbx.files.remove("/etc/hostname", user="user")
    with pytest.raises(SandboxException, match=DENIED):
        sbx.files.rename("/root/keep", "/home/user/keep", user="user")
    with pytest.raises(SandboxException, match=DENIED):
        sbx.files.list("/root", user="user")
    with pytest.raises(SandboxException, match=DENIED):
        sbx.files.watch_dir("/root", user="user")
    assert not exists(sbx, "/etc/sudoers.d/dir") and exists(sbx, "/etc/hostname")
    assert exists(sbx, "/root/keep") and not exists(sbx, "/home/user/keep")


def test_root_writes_where_user_cannot(sbx: Sandbox) -> None:
    sbx.files.write("/root/by-root.txt", "root's", user="root")
    assert as_root(sbx, "stat -c %U /root/by-root.txt").strip() == "root"
    sbx.files.remove("/root/by-root.txt", user="root")


def test_user_writes_in_its_home_belong_to_user(sbx: Sandbox) -> None:
    info = sbx.files.write("/home/user/made/by/user.txt", "mine", user="user")
    assert as_root(sbx, f"stat -c %U:%G {info.path} /home/user/made /home/user/made/by").split() == \
        ["user:user"] * 3
    assert sbx.files.read(info.path, user="user") == "mine"


def test_user_cannot_read_envds_memory_or_environment_after_envd_acted_as_user(live: Live, sbx: Sandbox) -> None:
    """envd sets its dumpable flag again after acting as a user (so CRIU can dump a resumed sandbox again,
    `envd/acting_user.py`): that must not let a process of `user` open envd's /proc files, which would give it
    envd's memory and environment. The kernel refuses because envd's real and saved uid are root's."""
    sbx.files.write("/home/user/acted.txt", "x", user="user")  # envd switched a thread to user and back
    assert "envd" in as_root(sbx, "tr '\\0' ' ' < /proc/1/cmdline")  # envd is the sandbox's first process

    def opens(name: str, user: str) -> bool:  # the kernel's ptrace check is made at open
        probe = f"( exec 3< /proc/1/{name} ) 2>/dev/null && echo opened || echo refused"
        return sbx.commands.run(probe, user=user).stdout.strip() == "opened"

    names = ("environ", "maps", "mem")
    if live.server.backend == "gvisor":
        names = ("mem",)
        print(f"gvisor: {GVISOR_PROC}")
    for name in names:
        assert not opens(name, "user"), name
    assert opens("maps", "root")  # positive control: the sandbox's root (envd's own uid) may
