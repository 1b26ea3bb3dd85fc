"""Steps that turn a freshly bootstrapped Debian tree into a sandbox template rootfs.

Each step is what a container image gets from its Dockerfile or its runtime: a login user with sudo,
apt that works inside the sandbox, pip that installs like the official `python` image's, and the
files a container runtime bind-mounts over (`/etc/resolv.conf`, `/etc/hosts`, `/etc/hostname`) present
as plain files. They run as host root on the tree before its ownership is shifted (see `userns`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from ..images.debian import BuildError, run

HOSTS = """\
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
127.0.1.1\t{hostname}
"""


def add_user(rootfs: Path, name: str, uid: int, shell: str = "/bin/bash") -> None:
    """A login user with a home from /etc/skel and a group of its own (same id), via the tree's useradd."""
    run(["chroot", str(rootfs), "useradd", "--uid", str(uid), "--user-group", "--create-home",
         "--home-dir", f"/home/{name}", "--shell", shell, name])
    (rootfs / "home" / name).chmod(0o755)


def allow_sudo(rootfs: Path, user: str) -> None:
    """Passwordless sudo for `user`, as E2B's templates have it; checked with the tree's visudo."""
    path = rootfs / "etc/sudoers.d" / user
    path.write_text(f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n")
    path.chmod(0o440)
    run(["chroot", str(rootfs), "visudo", "--check", "--quiet", "--file", f"/etc/sudoers.d/{user}"])


def write_network_files(rootfs: Path, hostname: str) -> None:
    """Plain `/etc/hosts`, `/etc/hostname` and an empty `/etc/resolv.conf`.

    mmdebstrap copies the build host's resolv.conf and hostname; neither belongs in a template. The
    runtime bind-mounts the sandbox's own over all three, which needs them to exist as regular files.
    """
    etc = rootfs / "etc"
    for name, text in (("hosts", HOSTS.format(hostname=hostname)), ("hostname", f"{hostname}\n"),
                       ("resolv.conf", "")):
        path = etc / name
        if path.is_symlink() or path.exists():
            path.unlink()
        path.write_text(text)
        path.chmod(0o644)


def write_apt_sources(rootfs: Path, sources: list[str]) -> None:
    """The build's apt sources (the host's mirror) as the sandbox's, with the keyrings they name.

    So `apt-get update && apt-get install` inside a sandbox fetches from the same mirror as the build.
    A keyring the host has but the tree lacks (a local mirror's own key) is copied in.
    """
    (rootfs / "etc/apt/sources.list").write_text("".join(f"{line}\n" for line in sources))
    for keyring in sorted({m for line in sources for m in re.findall(r"signed-by=([^\s\]]+)", line)}):
        inside = rootfs / keyring.lstrip("/")
        if not inside.exists():
            if not Path(keyring).is_file():
                raise BuildError(f"apt source keyring {keyring} is neither in the template nor on the host")
            inside.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(keyring, inside)
            inside.chmod(0o644)


def allow_pip_install(rootfs: Path) -> list[Path]:
    """Remove Debian's PEP 668 marker, so `pip install` works outside a venv as in the official image."""
    markers = sorted((rootfs / "usr/lib").glob("python3*/EXTERNALLY-MANAGED"))
    for marker in markers:
        marker.unlink()
    return markers


def clear_transient(rootfs: Path) -> None:
    """Empty what the runtime provides or what only the build needed: device nodes (the runtime mounts
    its own /dev), apt's downloaded .debs (hard links into the shared apt cache, which must never be
    chowned by the ownership shift) and package lists (stale within days: `apt-get update` first)."""
    for transient in ("dev", "tmp", "var/tmp", "var/cache/apt/archives", "var/lib/apt/lists"):
        path = rootfs / transient
        if path.exists():
            shutil.rmtree(path)
    (rootfs / "dev").mkdir(mode=0o755)
    for sticky in ("tmp", "var/tmp"):
        (rootfs / sticky).mkdir(mode=0o1777)
        (rootfs / sticky).chmod(0o1777)  # mkdir's mode is masked by the umask
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, mode=0o700)
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, mode=0o700)
    for cached in (rootfs / "var/cache/apt").glob("*.bin"):
        cached.unlink()


def add_mountpoint(rootfs: Path, path: str) -> None:
    """An empty directory where the runtime mounts something (the system image), so that a read-only
    rootfs (a microVM's disk image) needs no change to take the mount."""
    (rootfs / path.lstrip("/")).mkdir(mode=0o755, exist_ok=True)


def smoke_test(rootfs: Path, script: str) -> None:
    """Run `script` with the tree's /bin/sh in a chroot with its own /proc (private mount and PID
    namespaces: the mount and every process vanish with it), so a broken template fails its build
    rather than the first sandbox."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/tmp/smoke",
           "LANG": "C.UTF-8", "npm_config_logs_max": "0"}
    argv = ["unshare", "--mount", "--pid", "--fork", "--kill-child", f"--mount-proc={rootfs}/proc",
            "chroot", str(rootfs), "/bin/sh", "-euc", script]
    result = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    shutil.rmtree(rootfs / "tmp/smoke", ignore_errors=True)
    if result.returncode != 0:
        raise BuildError(f"the template's smoke test failed (exit status {result.returncode}):\n{result.stdout}")
