"""envd started from the system image inside a busybox-only rootfs: no Python, no glibc, no bash.

This is what the system image is for: envd runs in any template rootfs through the image's own loader
and libraries, and the commands it starts see only the rootfs. The rootfs gets what a container runtime
would give it (a private mount and PID namespace, the image bind-mounted read-only, /proc, a minimal
/dev); envd is driven by the released e2b SDK.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import Sandbox
from e2b.sandbox.commands.command_handle import CommandExitException

from sandhive.images import system_image
from tests.helpers import free_port, stop_process_group, wait_for_health

pytestmark = pytest.mark.sysimage

BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: one static binary
USER_UID = 1000

# Runs as PID 1 of a new PID namespace in a private mount namespace, so every mount below and every
# process envd starts vanish when unshare's child is killed.
LAUNCH = r"""
set -e
image=$1 rootfs=$2 mountpoint=$3
shift 3
mount -o bind,ro,nosuid,nodev "$image" "$rootfs$mountpoint"
mount -t proc -o nosuid,nodev,noexec proc "$rootfs/proc"
mount -t tmpfs -o nosuid,mode=0755 tmpfs "$rootfs/dev"
mknod -m 666 "$rootfs/dev/null" c 1 3
mknod -m 666 "$rootfs/dev/zero" c 1 5
mknod -m 666 "$rootfs/dev/random" c 1 8
mknod -m 666 "$rootfs/dev/urandom" c 1 9
mknod -m 666 "$rootfs/dev/tty" c 5 0
mkdir "$rootfs/dev/pts"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$rootfs/dev/pts"
ln -s pts/ptmx "$rootfs/dev/ptmx"
exec chroot "$rootfs" "$@"
"""


@pytest.fixture(scope="session")
def image() -> Path:
    """The system image for the current source tree, built once (the Debian layer is cached)."""
    for tool in ("mmdebstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install mmdebstrap util-linux coreutils)")
    if os.geteuid() != 0:
        pytest.skip("building and mounting the system image needs root")
    return system_image.build(log=lambda line: print(line, flush=True))


def make_busybox_rootfs(root: Path) -> Path:
    """A rootfs holding nothing but a static busybox and its applet links, like `busybox --install -s`."""
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "proc", "dev", "home/user",
              system_image.MOUNTPOINT.lstrip("/")):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    os.chown(root / "home/user", USER_UID, USER_UID)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True).stdout
    for applet in applets.split():
        if applet not in ("bin/busybox", "linuxrc"):
            (root / applet).symlink_to("/bin/busybox")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                     f"user:x:{USER_UID}:{USER_UID}:user:/home/user:/bin/sh\n")
    (root / "etc/group").write_text(f"root:x:0:\nuser:x:{USER_UID}:\n")
    return root


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    if not BUSYBOX.is_file():
        pytest.skip("needs a static /bin/busybox (apt-get install busybox-static)")
    root = make_busybox_rootfs(tmp_path / "rootfs")
    pythons = [p for p in root.rglob("*") if p.name.startswith("python") or p.name.startswith("ld-linux")]
    assert pythons == [], "the busybox rootfs must hold no python and no dynamic loader"
    return root


def start_envd_in_chroot(image: Path, rootfs: Path, argv: list[str], env: dict[str, str], url: str,
                         log_path: Path) -> subprocess.Popen:
    """Run `argv` (envd's command from the image) chrooted into `rootfs` with the image mounted, in its own
    mount and pid namespaces, output to `log_path`; return once `url` answers /health (fail with the log
    otherwise). The caller stops the process group."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--kill-child", "sh", "-c", LAUNCH, "sh",
             str(image), str(rootfs), system_image.MOUNTPOINT, *argv],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for_health(url, proc)
    except (RuntimeError, TimeoutError) as exc:
        stop_process_group(proc)
        pytest.fail(f"envd did not become healthy: {exc}\n--- envd output ---\n{log_path.read_text()}")
    return proc


@pytest.fixture
def envd_url(image: Path, rootfs: Path, tmp_path: Path) -> Iterator[str]:
    """envd from the image, chrooted into `rootfs`, on a free loopback port; everything gone afterwards."""
    port = free_port()
    argv, env = system_image.envd_command(system_image.MOUNTPOINT, port, host="127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    proc = start_envd_in_chroot(image, rootfs, argv, env, url, tmp_path / "envd.log")
    try:
        print(f"envd in the busybox chroot: /health answered 204 after {time.monotonic() - started:.2f}s")
        yield url
    finally:
        stop_process_group(proc)
        _assert_nothing_left(rootfs)


def _assert_nothing_left(rootfs: Path) -> None:
    """No process still has the rootfs as its root, and no mount under it is visible on the host."""
    deadline = time.monotonic() + 5
    while (leftovers := _processes_rooted_at(rootfs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in leftovers:  # ours: they run in the rootfs this test made
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with open("/proc/mounts") as mounts:
        leaked = [line for line in mounts if str(rootfs) in line]
    assert leftovers == [] and leaked == [], f"left behind: processes {leftovers}, mounts {leaked}"


def _processes_rooted_at(root: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "root") == str(root):
                    pids.append(int(entry.name))
    return pids


def test_envd_runs_commands_in_a_busybox_rootfs(envd_url: str) -> None:
    sbx = Sandbox.create(debug=True, sandbox_url=envd_url)

    result = sbx.commands.run("echo hi")
    assert (result.stdout, result.exit_code) == ("hi\n", 0)
    # envd's Python resolves users from the rootfs's /etc/passwd.
    assert sbx.commands.run("id -u; echo $HOME", user="user").stdout == f"{USER_UID}\n/home/user\n"

    # User processes see the rootfs, not envd's runtime: no python, no loader settings, no PYTHON* vars.
    assert sbx.commands.run("which python3 || echo none").stdout == "none\n"
    env = sbx.commands.run("env").stdout.splitlines()
    assert [v for v in env if v.startswith(("PYTHON", "LD_"))] == []

    # The image is mounted read-only, even for root.
    with pytest.raises(CommandExitException) as denied:
        sbx.commands.run(f"touch {system_image.MOUNTPOINT}/x", user="root")
    assert "Read-only file system" in denied.value.stderr


def test_image_is_position_independent_and_inert(image: Path) -> None:
    """Absolute symlinks would resolve against the sandbox's rootfs; device nodes have no place in it."""
    for dirpath, dirnames, filenames in os.walk(image):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                assert not os.readlink(path).startswith("/"), path
            assert not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)), path
            if path.relative_to(image).parts[0] in ("usr", "opt"):
                assert mode & 0o004, f"{path} is not world-readable: the sandbox user runs the image's bash"


def test_fallback_shell_matches_the_image_layout() -> None:
    """envd finds the image's bash on its own (it imports nothing from sandhive.images)."""
    from sandhive.envd.system_shell import system_bash_argv

    assert system_bash_argv("/.sandhive") == system_image.system_bash_command("/.sandhive")
