"""Snapshots of a running `container` sandbox, and new sandboxes restored from them (E2B's snapshots and fork).

A snapshot is a directory of the node's:

    images/   CRIU's dump of the sandbox's processes (`runc checkpoint --leave-running`), read-only from then on
    upper/    a copy of the sandbox's writable layer, owned by the canonical range (`userns.BASE` + id)

Taking it: the sandbox is frozen (`runc pause`, the cgroup freezer), dumped, its writable layer copied, and
thawed: the dump and the files are of one instant, and the source keeps its id, address, connections and end
time (it stands still for the dump and the copy). CRIU finds the cgroup already frozen and leaves it so.

Restoring it into a new sandbox (any number of times, concurrently): a slot of its own (network, and with it
a host uid range), a writable layer of its own seeded from `upper/` seen through an idmapped mount into the new
range, a bundle of its own (cgroup, hostname, /etc files), and per-restore copies of the two CRIU images that
name the old range and hostname (`criu_images.retarget`); all other images are hard links to the snapshot's.
`runc restore` then brings the processes back into a fresh, empty network namespace that the node wires up,
as `checkpoint.restore` does for a sandbox's own id. The caller gives it its identity afterwards (`/init`).

What a restored sandbox shares with its snapshot is its memory as it was: the user processes' state, envd's
too. The node re-`/init`s envd (new id, token, env, clock); the kernel's entropy is the host's, which every
container reads afresh (a container's kernel is never cloned); user-space PRNGs seeded before the snapshot
repeat in each copy, as on E2B.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from . import criu_images, idmap, mounts, network, userns
from .checkpoint import CheckpointError, _criu_wrapper, _log_pipe_into
from .hostcmd import run
from .oci_runtime import OciRuntime
from .runtime import SandboxHandle, SandboxSpec, SavedSandbox
from .storage import SandboxDisk

IMAGES, UPPER = "images", "upper"
FROZEN_MARK = "snapshotting"  # in a sandbox's dir while the node holds it frozen for a snapshot
# One snapshot of a sandbox at a time: a second `runc pause` would fail and its `resume` would thaw the sandbox
# under the first one's dump and copy. Keyed by sandbox id: its lock and how many snapshots hold or await it.
_snapshotting: dict[str, tuple[asyncio.Lock, list[int]]] = {}
FORMAT = 1  # bump when the layout above changes; `restore` refuses other formats


def _copy_tree(view: Path, dest: Path) -> None:
    """`cp -a` of a tree as it looks through an idmapped view: owners, modes (setuid too), xattrs (overlay's
    whiteouts and opaque dirs), hard links, sparse files. cp never follows the tree's symlinks. Runs as host
    root but reads only: the tree is a frozen sandbox's or a snapshot's, which no sandbox can reach."""
    proc = subprocess.run(["cp", "-a", "--sparse=always", "--no-target-directory", str(view), str(dest)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise CheckpointError(f"copying the writable layer failed: {proc.stderr.strip()[-500:]}")


def _copy_shifted(runtime: OciRuntime, tree: Path, dest: Path, view: Path, old_root: int, new_root: int) -> None:
    """Copy `tree` (owned by old_root + n) to `dest` (owned by new_root + n), through an idmapped view at `view`."""
    view.mkdir()
    try:
        idmap.bind(tree, view, runtime.idmaps.get(old_root, new_root, userns.SIZE))
        try:
            _copy_tree(view, dest)
        finally:
            mounts.umount(str(view), lazy=True)
    finally:
        view.rmdir()


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


async def snapshot(runtime: OciRuntime, handle: SandboxHandle, dest: Path) -> SavedSandbox:
    """Save `handle`'s processes and files into `dest` (made here, must not exist); the sandbox runs on.

    All or nothing: the work happens in `<dest>.partial`, renamed into place at the end; on failure it is
    removed and the sandbox is thawed as it was. Snapshots of one sandbox take turns."""
    lock, users = _snapshotting.setdefault(handle.sandbox_id, (asyncio.Lock(), [0]))
    users[0] += 1
    try:
        async with lock:
            return await _snapshot(runtime, handle, dest)
    finally:
        users[0] -= 1
        if users[0] == 0:
            del _snapshotting[handle.sandbox_id]


async def _snapshot(runtime: OciRuntime, handle: SandboxHandle, dest: Path) -> SavedSandbox:
    criu = await _criu_wrapper()
    sandbox_dir = runtime.sandboxes_dir / handle.sandbox_id
    host_root = userns.sandbox_range(int(handle.state["slot"]))
    partial = dest.with_name(dest.name + ".partial")
    await asyncio.to_thread(shutil.rmtree, partial, True)
    await asyncio.to_thread(partial.mkdir, parents=True)
    started = time.monotonic()
    mark = sandbox_dir / FROZEN_MARK
    try:
        await asyncio.to_thread(mark.touch)  # a server that dies while the sandbox is frozen thaws it at start
        await run(*runtime._oci("pause", handle.sandbox_id))
        try:
            proc = await asyncio.create_subprocess_exec(
                runtime.binary, *runtime.global_args(), "--criu", str(criu), "checkpoint", "--leave-running",
                "--image-path", str(partial / IMAGES), "--work-path", str(partial / IMAGES),
                "--empty-ns", "network", handle.sandbox_id,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise CheckpointError(f"snapshot of {handle.sandbox_id} failed (see {partial / IMAGES / 'dump.log'}):"
                                      f" {out.decode(errors='replace').strip()[-500:]}")
            dumped = time.monotonic()
            await asyncio.to_thread(_copy_shifted, runtime, sandbox_dir / "rw" / "upper", partial / UPPER,
                                    partial / ".view", host_root, userns.BASE)
        finally:
            await run(*runtime._oci("resume", handle.sandbox_id), check=False)
            mark.unlink(missing_ok=True)
        frozen = time.monotonic() - started
        size = await asyncio.to_thread(_tree_bytes, partial)
        await asyncio.to_thread(os.rename, partial, dest)
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, partial, True)
        raise
    state = {"format": FORMAT, "host_root": host_root, "hostname": handle.sandbox_id, "bytes": size,
             "dump_seconds": round(dumped - started, 3), "frozen_seconds": round(frozen, 3)}
    return SavedSandbox(source_id=handle.sandbox_id, backend=runtime.name, mode="memory", directory=dest,
                        state=state)


async def thaw_interrupted(runtime: OciRuntime) -> list[str]:
    """Server start: thaw every sandbox a previous server froze for a snapshot and died before thawing (a
    snapshot never leaves its source stopped). Returns their ids."""
    thawed = []
    marks = await asyncio.to_thread(lambda: list(runtime.sandboxes_dir.glob(f"*/{FROZEN_MARK}")))
    for mark in marks:
        sandbox_id = mark.parent.name
        await run(*runtime._oci("resume", sandbox_id), check=False)
        mark.unlink(missing_ok=True)
        thawed.append(sandbox_id)
    return thawed


def link_images(source: Path, dest: Path) -> None:
    """`dest` gets every image of `source` as a hard link (a copy across file systems); logs are not taken."""
    dest.mkdir()
    for entry in source.iterdir():
        if entry.suffix not in (".img", ".json"):  # CRIU's images and runc's descriptors.json
            continue
        try:
            os.link(entry, dest / entry.name)
        except OSError:
            shutil.copy2(entry, dest / entry.name)


def _seed_disk(runtime: OciRuntime, disk: SandboxDisk, spec: SandboxSpec, host_root: int, upper: Path) -> None:
    """`SandboxDisk.create`, but with the writable layer seeded from a snapshot's `upper` (canonical range),
    shifted into the new sandbox's range before the overlay is mounted. Undone by `disk.destroy`."""
    try:
        disk.rw.mkdir(parents=True, exist_ok=True)
        disk.rootfs.mkdir(exist_ok=True)
        disk.lower.mkdir(exist_ok=True)
        idmap.bind(spec.template.rootfs, disk.lower, runtime.idmaps.get(userns.BASE, host_root, userns.SIZE))
        disk._mount_writable(spec.disk_mb)
        _copy_shifted(runtime, upper, disk.rw / "upper", disk.dir / ".seed", userns.BASE, host_root)
        (disk.rw / "work").mkdir()
        mounts.mount("overlay", str(disk.rootfs), "overlay", 0,
                     f"lowerdir={disk.lower},upperdir={disk.rw / 'upper'},workdir={disk.rw / 'work'}")
    except BaseException:
        disk.destroy()
        raise


async def restore(runtime: OciRuntime, saved: SavedSandbox, spec: SandboxSpec) -> SandboxHandle:
    """Start the new sandbox `spec.sandbox_id` from `saved` (only read); return once its envd answers /health.

    On failure nothing of the new sandbox remains (`runtime.stop`)."""
    if saved.state.get("format") != FORMAT:
        raise CheckpointError(f"snapshot {saved.directory} has format {saved.state.get('format')}, not {FORMAT}")
    if runtime.system_image is None:
        raise CheckpointError(f"the {runtime.name} backend was not prepared: call prepare() first")
    criu = await _criu_wrapper()
    sandbox_dir = runtime.sandboxes_dir / spec.sandbox_id
    await asyncio.to_thread(sandbox_dir.mkdir, parents=True)
    slot = runtime.slots.claim(spec.sandbox_id)
    handle = SandboxHandle(spec.sandbox_id, runtime.name, slot.sandbox_ip,
                           {"slot": slot.index, "cpu_count": spec.cpu_count, "memory_mb": spec.memory_mb})
    try:
        host_root = userns.sandbox_range(slot.index)
        disk = SandboxDisk(sandbox_dir)
        await asyncio.to_thread(_seed_disk, runtime, disk, spec, host_root, saved.directory / UPPER)
        runtime._write_bundle(spec, sandbox_dir, disk, host_root)
        images = sandbox_dir / "criu"
        await asyncio.to_thread(link_images, saved.directory / IMAGES, images)
        await asyncio.to_thread(criu_images.retarget, images, int(saved.state["host_root"]), host_root,
                                spec.sandbox_id)
        await _runc_restore(runtime, criu, sandbox_dir, images, spec.sandbox_id, saved.source_id)
        pid = int((sandbox_dir / "pid").read_text())
        await network.attach_namespace(spec.sandbox_id, pid)
        await network.create(spec.sandbox_id, slot, spec.allow_internet_access)
        await runtime._wait_healthy(handle)
        await asyncio.to_thread(shutil.rmtree, images, True)
    except BaseException:
        with contextlib.suppress(Exception):
            await runtime.stop(handle)
        raise
    return handle


async def _runc_restore(runtime: OciRuntime, criu: Path, sandbox_dir: Path, images: Path, sandbox_id: str,
                        source_id: str) -> None:
    """`runc restore --detach` of `images` as `sandbox_id` from its bundle, stdio a pipe drained into its log."""
    stdio = await asyncio.to_thread(_log_pipe_into, sandbox_dir / "envd.log")
    try:
        proc = await asyncio.create_subprocess_exec(
            runtime.binary, *runtime.global_args(), "--criu", str(criu), "restore", "--detach",
            "--bundle", str(sandbox_dir), "--pid-file", str(sandbox_dir / "pid"),
            "--image-path", str(images), "--work-path", str(images), "--empty-ns", "network", sandbox_id,
            stdin=asyncio.subprocess.DEVNULL, stdout=stdio, stderr=stdio, start_new_session=True)
        returncode = await proc.wait()
    finally:
        os.close(stdio)
    if returncode != 0:
        await asyncio.sleep(0.05)  # the drain may still be copying runc's last words into the log
        raise CheckpointError(f"restore of {source_id} into {sandbox_id} failed: "
                              f"{_log_tail(sandbox_dir / 'envd.log', 3)} | {_log_tail(images / 'restore.log')}")


def _log_tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return f"(no {path.name})"

