"""Warm shells (issue 14, docs/persistence.md "template-agnostic warm shells"): a pool miss without envd's start.

A shell is a container sandbox started from no template: its slot, network namespace, cgroup, user namespace
(the slot's uid range), seccomp filter and envd, healthy, on a root that is a 1 MiB tmpfs holding only mount
points (`start_shell`). Only envd, trusted code, has run in it, and the node has told it nothing but the CA bundle
(`Node._fill_shell`).

`fill_shell` makes a shell a sandbox of a template, once: the template's root is built on the host as a cold
start builds it (`SandboxDisk.create`: the idmapped template, the ext4 writable layer, the overlay, at the same
path a cold start uses), its mount points made where the template lacks them, and a clone of it
(`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`) handed to a helper thread with filesystem attributes of its own
(`unshare(CLONE_FS)`), which ends with the switch. The helper joins the shell's mount namespace (host root holds
CAP_SYS_ADMIN over the shell's user namespace; envd holds none) and there: attaches the clone, moves `/proc`,
`/dev`, `/sys` (each with the masked and read-only paths runc mounted under it), the system image at `/.sandhive`
and the `/etc` binds into it, `pivot_root`s (which moves the root and working directory of every process whose were
the old root: envd's) and detaches the old root. The result is
the mount table a cold start has (tests/node/test_shells.py compares the two). Then the request's cgroup
limits and the bundle's `config.json` (which a pause or restore reads) are the request's.

What a shell cannot serve falls back to a cold start (`fits`): a template with a start command (it must run
before the hand-over, which is what a shell skips), a sandbox with volumes, one without internet (a shell's
firewall is made with internet), and a template whose mount points are not plain directories or files.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from . import idmap, mounts, oci, userns
from .errors import BackendError
from .runtime import SandboxHandle, SandboxSpec, ShellUnfit
from .storage import SandboxDisk

if TYPE_CHECKING:
    from .oci_runtime import OciRuntime

_libc = ctypes.CDLL(None, use_errno=True)
SYS_PIVOT_ROOT = 155
CLONE_NEWNS = 0x00020000
CLONE_FS = 0x00000200
MS_MOVE = 0x2000

SHELL_ROOT_SIZE = "1m"
NEXT_ROOT = "/.next-root"  # in the shell's root: where the template's root is attached before the pivot
MOUNT_DIRS = ("proc", "dev", "sys", ".sandhive")
ETC_FILES = ("resolv.conf", "hosts", "hostname")
# What a shell's runtime mounted that the template's root takes over, each with the mounts below it.
MOVED = ("/proc", "/dev", "/sys", "/.sandhive", *(f"/etc/{name}" for name in ETC_FILES))


def fits(spec: SandboxSpec) -> str | None:
    """None when a shell can serve `spec`, else why not (logged with the cold start it gets instead)."""
    template = spec.template
    if template.start_cmd or template.ready_cmd:
        return "its template has a start command, which must run before the hand-over"
    if spec.volumes:
        return "it mounts volumes"
    if not spec.allow_internet_access:
        return "it has no internet access (shells are made with it)"
    return None


def mount_shell_root(rootfs: Path, host_root: int) -> None:
    """The shell's root on the host: a tmpfs of mount points owned by the sandbox's root."""
    rootfs.mkdir(exist_ok=True)
    mounts.mount("tmpfs", str(rootfs), "tmpfs", 0,
                 f"size={SHELL_ROOT_SIZE},mode=755,uid={host_root},gid={host_root}")
    for name in (*MOUNT_DIRS, "etc", NEXT_ROOT.lstrip("/")):
        (rootfs / name).mkdir()
        os.chown(rootfs / name, host_root, host_root)
    for name in ETC_FILES:
        (rootfs / "etc" / name).touch()
        os.chown(rootfs / "etc" / name, host_root, host_root)


def _mount_points(root: Path, host_root: int) -> None:
    """Make the mount points a cold start's runc would make (as the sandbox's root), refusing symlinks: nothing has
    run in this root yet, so what `lstat` sees is what the mounts land on."""
    def check(path: Path, want_dir: bool) -> bool:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            return False
        if (stat.S_ISDIR(mode) if want_dir else stat.S_ISREG(mode)):
            return True
        kind = "directory" if want_dir else "file"
        raise ShellUnfit(f"its template's {path.relative_to(root)} is not a plain {kind}")

    for name in (*MOUNT_DIRS, "etc"):
        if not check(root / name, True):
            (root / name).mkdir(mode=0o755)
            os.chown(root / name, host_root, host_root)
    for name in ETC_FILES:
        path = root / "etc" / name
        if not check(path, False):
            path.touch(mode=0o644)
            os.chown(path, host_root, host_root)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _switch(envd_pid: int, tree_fd: int) -> None:
    """In a task of its own (`_switch_in_thread`): join the shell's mount namespace and make the tree its root.
    Only system calls from here on: this task then resolves every path in the sandbox's mount namespace."""
    ns = os.open(f"/proc/{envd_pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(ns, CLONE_NEWNS), "setns into the shell's mount namespace")
    finally:
        os.close(ns)
    os.chdir("/")  # setns put this process at the namespace's root
    _check(idmap._syscall(idmap.SYS_MOVE_MOUNT, tree_fd, b"", idmap.AT_FDCWD, NEXT_ROOT.encode(),
                          idmap.MOVE_MOUNT_F_EMPTY_PATH), f"attaching the template's root at {NEXT_ROOT}")
    for path in MOVED:
        _check(_libc.mount(path.encode(), (NEXT_ROOT + path).encode(), None, ctypes.c_ulong(MS_MOVE), None),
               f"moving {path} into the template's root")
    os.chdir(NEXT_ROOT)
    # pivot_root(".", "."): the new root goes to "/", the old one is stacked on it and detached at once.
    _check(idmap._syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", ctypes.c_int(mounts.MNT_DETACH)), "detaching the shell's old root")


def _switch_in_thread(envd_pid: int, tree_fd: int) -> None:
    """Run `_switch` in a thread of its own that first unshares its filesystem attributes (root, cwd: `setns` into a
    mount namespace refuses a task sharing them) and ends with the switch, so the mount namespace it joined goes
    with it. Not a fork: copying the server's page tables cost ~10 ms per switch."""
    failure: list[BaseException] = []

    def work() -> None:
        try:
            _check(_libc.unshare(CLONE_FS), "unshare(CLONE_FS)")
            _switch(envd_pid, tree_fd)
        except BaseException as exc:  # noqa: BLE001 — handed to the caller
            failure.append(exc)

    thread = threading.Thread(target=work, name="sandhive-shell-switch", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise BackendError(f"switching a shell's root failed: {failure[0]}")


def build_root(sandbox_dir: Path, spec: SandboxSpec, host_root: int, idmap_fd: int) -> SandboxDisk:
    """On the host: the shell's tmpfs root off its path, the template's root there as a cold start mounts it."""
    disk = SandboxDisk(sandbox_dir)
    mounts.umount(str(disk.rootfs), lazy=True)  # the shell's root lives on inside the shell's mount namespace
    disk.create(spec.template.rootfs, spec.disk_mb, host_root, idmap_fd)
    try:
        _mount_points(disk.rootfs, host_root)
    except BaseException:
        disk.unmount()
        raise
    return disk


def switch_root(sandbox_dir: Path, disk: SandboxDisk) -> None:
    """Make the template's root (mounted at `disk.rootfs` on the host) the root of the shell's mount namespace."""
    envd_pid = int((sandbox_dir / "pid").read_text())
    tree_fd = idmap._syscall(idmap.SYS_OPEN_TREE, idmap.AT_FDCWD, str(disk.rootfs).encode(),
                             idmap.OPEN_TREE_CLONE | idmap.OPEN_TREE_CLOEXEC | idmap.AT_RECURSIVE)
    if tree_fd < 0:
        err = ctypes.get_errno()
        raise BackendError(f"open_tree of {disk.rootfs}: {os.strerror(err)}")
    try:
        _switch_in_thread(envd_pid, tree_fd)
    finally:
        os.close(tree_fd)


def rewrite_limits(sandbox_dir: Path, handle: SandboxHandle, spec: SandboxSpec) -> None:
    """The request's memory and CPU limits, in the live cgroup and in the bundle (a pause or restore reads it)."""
    memory = spec.memory_mb * 1024 * 1024
    config_path = sandbox_dir / "config.json"
    config = json.loads(config_path.read_text())
    resources = config["linux"]["resources"]
    resources["memory"] = {"limit": memory, "swap": memory}
    quota = spec.cpu_count * oci.CPU_PERIOD_US
    resources["cpu"] = {"quota": quota, "period": oci.CPU_PERIOD_US}
    config_path.write_text(json.dumps(config))
    cgroup = Path("/sys/fs/cgroup")
    if (cgroup / "cgroup.controllers").exists():  # cgroup v2, as runc translates the bundle there
        own = cgroup / "sandhive" / spec.sandbox_id
        (own / "memory.max").write_text(str(memory))
        if (own / "memory.swap.max").exists():
            (own / "memory.swap.max").write_text("0")  # memory+swap = memory: no swap, as the bundle says
        (own / "cpu.max").write_text(f"{quota} {oci.CPU_PERIOD_US}")
    else:
        memory_dir = cgroup / "memory" / "sandhive" / spec.sandbox_id
        old = int((memory_dir / "memory.limit_in_bytes").read_text())
        files = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
        # memsw never below the memory limit: raise it first when growing, lower it last when shrinking.
        for name in (reversed(files) if memory > old else files):
            if (memory_dir / name).exists():
                (memory_dir / name).write_text(str(memory))
        cpu_dir = cgroup / "cpu" / "sandhive" / spec.sandbox_id
        (cpu_dir / "cpu.cfs_period_us").write_text(str(oci.CPU_PERIOD_US))
        (cpu_dir / "cpu.cfs_quota_us").write_text(str(quota))
    handle.state.update(cpu_count=spec.cpu_count, memory_mb=spec.memory_mb)


async def fill(runtime: OciRuntime, shell: SandboxHandle, spec: SandboxSpec) -> SandboxHandle:
    """Make the shell `shell` the sandbox `spec` (same id). On failure the caller stops the shell."""
    if spec.sandbox_id != shell.sandbox_id:
        raise BackendError(f"shell {shell.sandbox_id} asked to become {spec.sandbox_id}")
    sandbox_dir = runtime.sandboxes_dir / spec.sandbox_id
    host_root = userns.sandbox_range(int(shell.state["slot"]))
    idmap_fd = runtime.idmaps.get(userns.BASE, host_root, userns.SIZE)
    disk = await asyncio.to_thread(build_root, sandbox_dir, spec, host_root, idmap_fd)
    await asyncio.to_thread(switch_root, sandbox_dir, disk)
    await asyncio.to_thread(rewrite_limits, sandbox_dir, shell, spec)
    return shell
