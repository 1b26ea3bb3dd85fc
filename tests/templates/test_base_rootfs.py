"""What is inside the base template's rootfs, checked by running it (chroot and a user namespace)."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

from sandhive.images.apt_sources import host_sources
from sandhive.images.system_image import SUITES
from sandhive.node import userns

from .conftest import FILES_DIR, BuiltBase, run_in_rootfs


def test_tools_run_as_root_in_a_chroot(base_built: BuiltBase) -> None:
    result = run_in_rootfs(base_built, """set -e
        python3 -c 'import ssl, sqlite3; print("python", ssl.OPENSSL_VERSION)'
        echo node "$(node --version)"
        echo npm "$(npm --version)" "$(npm config get prefix)"
        git --version
        curl --version | head -n 1
        echo "uid of user: $(id -u user) gid: $(id -g user)"
        getent passwd user
        ps -p 1 -o comm=
        ip -V
        less --version | head -n 1
        python3 -c 'import locale; locale.setlocale(locale.LC_ALL, ""); print("locale", locale.getlocale())'
    """)
    out = result.stdout
    assert result.returncode == 0, out
    assert "python OpenSSL 3" in out
    assert "node v18." in out
    assert "npm 10." in out and "/usr/local" in out
    assert "git version 2." in out
    assert "curl 7." in out
    assert "uid of user: 1000 gid: 1000" in out
    assert "user:x:1000:1000::/home/user:/bin/bash" in out
    assert "locale ('en_US', 'UTF-8')" in out or "locale ('C', 'UTF-8')" in out


def test_ownership_is_shifted_into_the_sandbox_range(base_built: BuiltBase) -> None:
    root = base_built.rootfs
    assert os.lstat(root).st_uid == userns.BASE
    assert os.stat(root / "etc/passwd").st_uid == userns.BASE
    assert os.stat(root / "etc/passwd").st_gid == userns.BASE
    assert os.stat(root / "home/user").st_uid == userns.BASE + 1000
    assert os.stat(root / "home/user").st_gid == userns.BASE + 1000
    sudo = os.stat(root / "usr/bin/sudo")
    assert sudo.st_uid == userns.BASE and sudo.st_mode & stat.S_ISUID, "sudo must stay setuid root after the shift"
    outside = [p for p in (root / "etc", root / "usr/bin", root / "home") for p in p.rglob("*")
               if not userns.BASE <= os.lstat(p).st_uid < userns.BASE + userns.SIZE]
    assert outside == []


def test_sudo_and_home_as_user_in_the_sandbox_uid_range(base_built: BuiltBase) -> None:
    """In a user namespace mapping 0..65535 to 100000.., as a sandbox runs: user is 1000, owns its
    home, and sudo (setuid root inside) works without a password."""
    result = run_in_rootfs(base_built, """set -e
        echo "id: $(id -u):$(id -g) $(id -un)"
        echo "sudo: $(sudo -n id -u)"
        sudo -n true
        touch ~/written && echo "home: $(stat -c %u:%g ~/written) $(pwd)"
        python3 -m venv /tmp/venv && /tmp/venv/bin/python -c 'import sys; print("venv", sys.prefix)'
        node -e 'const fs = require("fs"); fs.writeFileSync("/tmp/n", "ok");
                 console.log("node", fs.readFileSync("/tmp/n", "utf8"))'
    """, userns=True, user=1000, env={"HOME": "/home/user"})
    out = result.stdout
    assert result.returncode == 0, out
    assert "id: 1000:1000 user" in out
    assert "sudo: 0" in out
    assert "home: 1000:1000 /home/user" in out
    assert "venv /tmp/venv" in out
    assert "node ok" in out
    assert "unable to resolve host" not in out, "/etc/hosts must name the hostname"


def test_pip_install_is_not_refused(base_built: BuiltBase, tmp_path: Path) -> None:
    """No PEP 668 marker: root's `pip install` (a local wheel, no index) works outside a venv, without
    PIP_BREAK_SYSTEM_PACKAGES, as in the official python image."""
    root = base_built.rootfs
    assert list((root / "usr/lib").glob("python3*/EXTERNALLY-MANAGED")) == []
    wheel = _tiny_wheel(tmp_path)
    result = run_in_rootfs(base_built, f"""set -e
        env -u PIP_BREAK_SYSTEM_PACKAGES pip install --no-index --no-cache-dir {FILES_DIR}/{wheel.name}
        python3 -c 'import sandhive_tiny; print("imported", sandhive_tiny.VALUE)'
    """, userns=True, user=0, files={wheel.name: wheel.read_bytes()})
    assert result.returncode == 0, result.stdout
    assert "imported 42" in result.stdout
    assert "externally-managed" not in result.stdout.lower()


def test_apt_sources_and_etc_files(base_built: BuiltBase) -> None:
    root = base_built.rootfs
    expected = [line for lines in host_sources(SUITES).values() for line in lines]
    assert (root / "etc/apt/sources.list").read_text().splitlines() == expected
    for line in expected:
        if "signed-by=" in line:
            keyring = line.split("signed-by=", 1)[1].split("]", 1)[0]
            assert (root / keyring.lstrip("/")).is_file()
    resolv = root / "etc/resolv.conf"
    assert not resolv.is_symlink() and resolv.is_file() and resolv.stat().st_size == 0
    assert "localhost" in (root / "etc/hosts").read_text()
    assert (root / "etc/hostname").read_text().strip()
    assert (root / "etc/sudoers.d/user").stat().st_mode & 0o777 == 0o440
    assert list((root / "var/cache/apt/archives").glob("*.deb")) == []
    assert not any((root / "usr/share/doc").glob("*/changelog*"))
    assert not (root / "usr/share/man/man1").exists() or not any((root / "usr/share/man/man1").iterdir())
    assert list((root / "dev").iterdir()) == []


@pytest.mark.parametrize("uid", [0, 1000])
def test_login_shell_starts_no_process(base_built: BuiltBase, uid: int) -> None:
    """`bash -l -c` (every SDK command) runs no program of its own: each costs ~20 ms in gVisor.

    In the fresh PID namespace run_in_rootfs gives, PIDs are handed out in order, so the first
    process the command starts gets the login shell's PID + 1 only if /etc/profile and ~/.profile
    started none. The login PATH is still the one Debian's /etc/profile picks for the uid."""
    home = "/root" if uid == 0 else "/home/user"
    result = run_in_rootfs(base_built, """set -e
        bash -l -c 'echo "login $$ $PATH"; sh -c "echo child \\$\\$"; :'
    """, userns=True, user=uid, env={"HOME": home})
    assert result.returncode == 0, result.stdout
    login, child = result.stdout.split("\n")[:2]
    assert child.split()[0] == "child" and login.split()[0] == "login", result.stdout
    assert int(child.split()[1]) == int(login.split()[1]) + 1, f"the login profile started a process: {result.stdout}"
    expected_path = ("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" if uid == 0
                     else "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games")
    assert login.split()[2] == expected_path, result.stdout


def _tiny_wheel(directory: Path) -> Path:
    """A pure-Python wheel made by hand, so the pip check needs no index and no network."""
    name, version = "sandhive_tiny", "1.0"
    dist_info = f"{name}-{version}.dist-info"
    path = directory / f"{name}-{version}-py3-none-any.whl"
    files = {
        f"{name}/__init__.py": "VALUE = 42\n",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{f},,\n" for f in files) + f"{dist_info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as zf:
        for f, text in files.items():
            zf.writestr(f, text)
        zf.writestr(f"{dist_info}/RECORD", record)
    return path
