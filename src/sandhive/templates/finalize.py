"""The finishing touches of a built template's tree: a login user with sudo, mount points, network files.

Runs inside a chroot of the exported tree as the root of a user namespace (see `build_sandbox.finalize`),
never as host root over the untrusted tree. Everything it needs is imported before the chroot.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import rootfs

DEFAULT_USER, DEFAULT_UID = "user", 1000


def finalize(tree: Path, user: str, workdir: str, mountpoint: str) -> str:
    """What every template needs beyond the image: a login user, the mount points the runtime uses, plain
    /etc network files, clean /dev and /tmp. Returns the default user.

    `tree` is `/` of a chroot into the exported tree, run by the root of a user namespace mapped to the
    canonical template range (`build_sandbox.finalize`): an absolute symlink in the image (a hostile
    `/etc/passwd -> /host/file`) resolves inside the tree, and nothing here runs as host root.

    A WORKDIR the Dockerfile created (root-owned, outside the system directories) is given to the default
    user, so that the user commands run as by default can write where they start (as in E2B)."""
    if user == DEFAULT_USER or not _user_exists(tree, user):
        user = DEFAULT_USER
        if not _user_exists(tree, user):
            _add_user(tree, user)
    inside = tree / workdir.lstrip("/") if workdir else None
    owner = _uid_of(tree, user)
    if inside is not None and not inside.exists() and not inside.is_symlink():
        inside.mkdir(parents=True, mode=0o755)  # Docker creates a WORKDIR; buildah only when a step uses it
    if inside is not None and inside.is_dir() and not inside.is_symlink() and owner is not None \
            and workdir.rstrip("/") not in SYSTEM_DIRS and inside.stat().st_uid == 0:
        os.chown(inside, owner, owner)
    rootfs.add_mountpoint(tree, mountpoint)
    rootfs.write_network_files(tree, "sandbox")
    for name in ("dev", "proc", "sys", "tmp"):
        (tree / name).mkdir(exist_ok=True)
    (tree / "tmp").chmod(0o1777)
    return user


SYSTEM_DIRS = ("", "/usr", "/etc", "/var", "/root", "/tmp", "/bin", "/sbin", "/lib", "/opt", "/srv", "/home",
               "/usr/local", "/usr/local/bin", "/usr/bin", "/run", "/proc", "/sys", "/dev", "/boot", "/mnt")


def _uid_of(tree: Path, user: str) -> int | None:
    if user.isdigit():
        return int(user)
    return next((int(f[2]) for f in _entries(tree / "etc/passwd") if f[0] == user and f[2].isdigit()), None)


def _user_exists(tree: Path, user: str) -> bool:
    passwd = tree / "etc/passwd"
    if user.isdigit():
        return True  # a numeric USER needs no passwd entry
    return passwd.is_file() and any(line.split(":")[0] == user for line in passwd.read_text().splitlines())


def _add_user(tree: Path, user: str) -> None:
    """`user` with uid/gid 1000 (or the next free), a home from /etc/skel, and passwordless sudo if the
    image has sudo. Written directly, so images without useradd (busybox, distroless) get one too."""
    etc = tree / "etc"
    etc.mkdir(exist_ok=True)
    passwd, group, shadow = etc / "passwd", etc / "group", etc / "shadow"
    used_uids = {int(f[2]) for f in _entries(passwd) if len(f) > 2 and f[2].isdigit()}
    used_gids = {int(f[2]) for f in _entries(group) if len(f) > 2 and f[2].isdigit()}
    uid = next(i for i in range(DEFAULT_UID, 60000) if i not in used_uids and i not in used_gids)
    shell = "/bin/bash" if (tree / "bin/bash").exists() or (tree / "usr/bin/bash").exists() else "/bin/sh"
    with open(passwd, "a") as f:
        f.write(f"{user}:x:{uid}:{uid}::/home/{user}:{shell}\n")
    with open(group, "a") as f:
        f.write(f"{user}:x:{uid}:\n")
    if shadow.exists():
        with open(shadow, "a") as f:
            f.write(f"{user}:*:19000:0:99999:7:::\n")
    home = tree / "home" / user
    if not home.exists():
        skel = tree / "etc/skel"
        if skel.is_dir():
            shutil.copytree(skel, home, symlinks=True)
        else:
            home.mkdir(parents=True)
    for dirpath, dirnames, filenames in os.walk(home):
        for name in [*dirnames, *filenames, None]:
            os.lchown(os.path.join(dirpath, name) if name else dirpath, uid, uid)
    home.chmod(0o755)
    sudoers = tree / "etc/sudoers.d"
    if sudoers.is_dir():
        entry = sudoers / user
        entry.write_text(f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n")
        entry.chmod(0o440)


def _entries(path: Path) -> list[list[str]]:
    return [line.split(":") for line in path.read_text().splitlines() if line] if path.is_file() else []
