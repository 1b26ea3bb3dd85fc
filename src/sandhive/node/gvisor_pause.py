"""Pause and resume for the `gvisor` backend (issue 14): frozen in place after its files are made durable.

runsc cannot checkpoint a sandbox that uses host networking (`--network=host`, the network mode the node runs
gVisor with); its own netstack could checkpoint here but refuses — and kills the sandbox — while any TCP
connection is open or in TIME_WAIT (docs/persistence.md). So memory cannot be written to a file. What gVisor
can do is stop every task of its kernel where it is (`runsc pause`): no CPU, memory resident. That outlives a
server restart, not a host reboot; so before freezing, a pause makes the sandbox's files durable, and if the
frozen sandbox is gone at resume (host reboot, killed) `resume` cold-boots those files instead (the handle says
`COLD_BOOTED`, and the node prepares and inits the new envd as on create).

Where the sandbox's files live decides how they are kept (`files_on_disk`, `$SANDHIVE_GVISOR_FILES_ON_DISK=1`):

- By default runsc wraps the root in its own overlay (`--overlay2=root:self`): the sandbox's writes live in the
  sentry, where the host cannot read them. They are read out through the sandbox itself (`gvisor_files.save`,
  `runsc exec` of a small program as the sandbox's root) into `dest/files.tar`: its changes to the template,
  and the template paths it deleted. A cold boot starts a fresh sandbox of the template under the same id and
  unpacks them inside it (`gvisor_files.load`); the host never unpacks them.
- With files on disk (`--overlay2=none`), the writes go through the gofer into the sandbox's writable layer on
  the host (what the container backend has), at the cost of file metadata (gVisor's gofer has no xattrs, so
  `files.write(metadata=...)` fails) and of watchers under `/` needing `allow_network_mounts` (the root shows as
  9p). The layer is flushed (syncfs) and its image (`disk.ext4`) hard-linked into `dest` (copied across file
  systems) once the sandbox is frozen; a cold boot mounts it again, re-owned into the new slot's uid range.

Both modes offer "memory" (frozen in place, as above) and "filesystem" (the files kept the same way, then the
sandbox stopped: `resume` is the cold boot). `snapshot`/`restore` (memory into a new sandbox) are the 409 of
`runtime.not_supported`.

Crash safety, as on the container backend: the pause's record (`saved.json`, `node/saved.py`) is written last,
so a server that dies after a pause finished but before the store recorded it finds the pause at start
(`Pauses.recover`) and keeps it paused, never loses it.

A cold boot may come up on another network slot, hence another host uid range (`userns.sandbox_range`): a kept
layer's upper dir is then re-owned into the new range (`userns.rehome`) before it is mounted (the sandbox is not
running while that happens, so nothing can swap a path under the walk; links are never followed); a tar is
unpacked inside the sandbox, whose own ids gVisor maps into the new range.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import NodeError
from . import gvisor_files, userns
from .errors import BackendError
from .hostcmd import run
from .oci_runtime import OciRuntime
from .runtime import COLD_BOOTED, PauseMode, Persistence, SandboxHandle, SandboxSpec, SavedSandbox
from .saved import write_record
from .storage import SandboxDisk

IMAGE = "disk.ext4"  # the kept writable layer inside a saved sandbox's directory (files on disk)
FILES = "files.tar"  # the sandbox's changes to its template, read out through the sandbox (gvisor_files.py)
_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(path: Path) -> None:
    """Flush the file system holding `path` (the sandbox's writable layer) down to its backing image."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs {path} failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def link_or_copy(src: Path, dst: Path) -> None:
    """`dst` becomes `src`'s image: a hard link (instant, no space), or a sparse copy across file systems."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        proc = subprocess.run(["cp", "--sparse=always", str(src), str(dst)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise OSError(f"copying {src} to {dst} failed: {proc.stderr.strip()}") from exc


def mount_kept(disk: SandboxDisk, template: Path, image: Path, host_root: int, idmap_fd: int) -> None:
    """`SandboxDisk.create` for a cold boot of a kept layer: the sandbox's root is `template` (idmapped into
    `host_root`'s range) under the writable layer in `image`, re-owned into that range if it was another's.
    Undone by `disk.destroy()`, called here on failure (`image` itself is only linked, never removed)."""
    try:
        disk.rw.mkdir(parents=True, exist_ok=True)
        link_or_copy(image, disk.image)
        disk.remount(template, host_root, idmap_fd)
    except OSError as exc:
        disk.destroy()
        raise BackendError(f"booting the kept layer {image} failed: {exc}") from exc
    except BaseException:
        disk.destroy()
        raise


@dataclass(frozen=True)
class _Kept:
    image: Path


class FreezePause(OciRuntime):
    """The persistence half of the gvisor backend (see the module's docstring); mixed into `GVisorRuntime`."""

    def __init__(self, data_dir: Path, files_on_disk: bool = False) -> None:
        super().__init__(data_dir)
        self.files_on_disk = files_on_disk
        self.persistence = Persistence(pause_modes=("memory", "filesystem"), memory_snapshots=False)
        self._kept: dict[str, _Kept] = {}  # sandbox id → the layer its next `start` boots from

    # ---- pause ----------------------------------------------------------------------------
    async def pause(self, handle: SandboxHandle, mode: PauseMode, dest: Path) -> SavedSandbox:
        sandbox_id = handle.sandbox_id
        if mode not in ("memory", "filesystem"):
            raise NodeError(400, f"unknown pause mode {mode!r}: choose memory or filesystem")
        status = await self._state(sandbox_id)
        if status != "running":
            raise NodeError(409, f"sandbox {sandbox_id} is {status or 'gone'}: only a running sandbox can be paused")
        disk = SandboxDisk(self.sandboxes_dir / sandbox_id)
        slot = int(handle.state["slot"])
        if not self.files_on_disk:  # read out through the sandbox itself, while it still runs (gvisor_files.py)
            await asyncio.to_thread(dest.mkdir, parents=True)
            try:
                limit = gvisor_files.cap((await asyncio.to_thread(disk.image.stat)).st_size)
                seconds = await gvisor_files.save(self._exec_argv(sandbox_id), disk.dir,
                                                  userns.sandbox_range(slot), dest / FILES, limit)
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, dest, True)
                raise
        await run(*self._oci("pause", sandbox_id))
        try:
            await asyncio.to_thread(dest.mkdir, parents=True, exist_ok=True)
            try:
                if self.files_on_disk:
                    await asyncio.to_thread(syncfs, disk.rw)
                    await asyncio.to_thread(link_or_copy, disk.image, dest / IMAGE)
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, dest, True)
                raise
        except BaseException:
            await run(*self._oci("resume", sandbox_id), check=False)  # all or nothing: it runs on as before
            await asyncio.to_thread(shutil.rmtree, dest, True)
            raise
        state = {"frozen": mode == "memory", "files_kept": True, "files": IMAGE if self.files_on_disk else FILES,
                 "address": handle.address, "handle": dict(handle.state), "host_root": userns.sandbox_range(slot)}
        if not self.files_on_disk:
            state["files_seconds"] = round(seconds, 3)
        saved = SavedSandbox(sandbox_id, self.name, mode, dest, state)
        if mode == "filesystem":
            await self.stop(handle)  # the image in `dest` is a link of its own: the sandbox's removal leaves it
        # Last, as on the container backend: a server that dies after this but before the store heard of the
        # pause finds it whole by this record at start (`Pauses.recover`) instead of losing the sandbox.
        await asyncio.to_thread(write_record, saved)
        return saved

    # ---- resume ---------------------------------------------------------------------------
    async def resume(self, saved: SavedSandbox, spec: SandboxSpec) -> SandboxHandle:
        if spec.sandbox_id != saved.source_id:
            raise BackendError(f"resume of {saved.source_id} asked for as {spec.sandbox_id}")
        if saved.state.get("frozen"):
            handle = SandboxHandle(saved.source_id, self.name, saved.state["address"], dict(saved.state["handle"]))
            status = await self._state(saved.source_id)
            if status == "paused":
                await run(*self._oci("resume", saved.source_id))
                await self._wait_healthy(handle)
                return handle
            if status == "running":
                return handle
            # The frozen sandbox is gone (host reboot, or killed): free what is left of it, then cold-boot.
            await self.stop(handle)
        return await self._cold_boot(saved, spec)

    async def _cold_boot(self, saved: SavedSandbox, spec: SandboxSpec) -> SandboxHandle:
        """A fresh sandbox under the same id with the kept files: envd new, so the node prepares and inits it
        (`COLD_BOOTED` in the handle's state for a "memory" pause whose frozen sandbox was gone)."""
        if not saved.state.get("files_kept"):
            raise NodeError(404, f"paused sandbox {saved.source_id} is gone: it was frozen in place on the gvisor "
                                 "backend, which kept its memory and files only while the host ran")
        if saved.state.get("files") == FILES:
            handle = await self.start(spec)  # the template as on create, then the sandbox's changes to it
            try:
                await gvisor_files.load(self._exec_argv(spec.sandbox_id), saved.directory / FILES)
            except BaseException:
                await self.stop(handle)
                raise
            handle.state[COLD_BOOTED] = True
            return handle
        image = saved.directory / IMAGE
        if not image.is_file():
            raise BackendError(f"the paused sandbox {saved.source_id} has no kept layer at {image}")
        self._kept[spec.sandbox_id] = _Kept(image)
        try:
            handle = await self.start(spec)
        finally:
            self._kept.pop(spec.sandbox_id, None)
        handle.state[COLD_BOOTED] = True
        return handle

    def _exec_argv(self, sandbox_id: str) -> list[str]:
        """`runsc exec` as the sandbox's root: the program's argv follows."""
        return self._oci("exec", "--user", "0:0", "--cwd", "/", sandbox_id)

    def _create_disk(self, disk: SandboxDisk, spec: SandboxSpec, host_root: int) -> None:
        kept = self._kept.get(spec.sandbox_id)
        if kept is None:
            return super()._create_disk(disk, spec, host_root)
        idmap_fd = self.idmaps.get(userns.BASE, host_root, userns.SIZE)
        mount_kept(disk, spec.template.rootfs, kept.image, host_root, idmap_fd)

    # ---- the rest -------------------------------------------------------------------------
    async def stop_saved(self, saved: SavedSandbox) -> None:
        """A frozen sandbox still holds its processes, memory, slot and mounts: free them (unless it was
        resumed meanwhile). A filesystem pause holds nothing but its directory."""
        if not saved.state.get("frozen"):
            return
        if await self._state(saved.source_id) == "running":
            return
        handle = SandboxHandle(saved.source_id, self.name, saved.state["address"], dict(saved.state["handle"]))
        await self.stop(handle)
