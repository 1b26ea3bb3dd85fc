"""Pause and resume of a `container` sandbox (issue 14): "memory" through CRIU, "filesystem" by a cold boot.

Both modes keep the sandbox's id, network slot, bundle and writable layer (its ext4 disk stays mounted on the
host) while it is paused, and give back its processes, memory and network namespace: a paused sandbox costs
disk, not RAM. `resume` brings it back into the same id, slot and disk.

A host reboot takes what lives under /run and in the kernel: the slot's claim (/run/sandhive/net-slots), the
disk's host mounts (overlay, template view, ext4 layer) and its volume views. `resume` then claims the slot
again, or another one if a different sandbox took it meanwhile (new address and uid range: the upper dir is
re-owned, the bundle's mapping and the dump's user namespace retargeted, as a snapshot restore does), and mounts
the disk and the volumes (`spec.volumes`) again before the restore or cold boot. docs/persistence.md ("after a
host reboot"); test: tests/persistence/test_reboot.py.

- "memory": the sandbox's TCP connections are reset first (`ss -K` in its namespace). CRIU then dumps no
  established connection (the toolchain's `tcp-close` would bring them back closed), and every peer on the
  host (the edge proxy's and the node's keep-alive pools) gets an RST now, so no pooled connection is reused
  into a restored sandbox that no longer knows it. Then `checkpoint.checkpoint` (runc + CRIU, `--empty-ns
  network`) and, on resume, `checkpoint.restore`.
- "filesystem": the processes are killed and the runtime's container deleted; resume runs envd again on the
  kept bundle and disk, as a start does, and the node then runs the template's start command and `/init`.

Crash safety: the record of a pause (`saved.json` in the pause directory) is written, by rename, only after
the dump completed, and a flock on the directory's lock file keeps two pauses or resumes of one sandbox
apart. A crash before the record leaves the sandbox running (a failed dump leaves it as it was) or, if the
dump had finished, its images without a record, which the API then finds by its directory (`read_record`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import NodeError
from . import checkpoint, criu_images, network, userns, volumes
from .container_snapshot import link_images
from .errors import BackendError
from .hostcmd import run
from .network import Slot
from .oci_runtime import OciRuntime
from .runtime import PauseMode, SandboxHandle, SandboxSpec, SavedSandbox
from .saved import read_record, write_record
from .storage import SandboxDisk

log = logging.getLogger("sandhive.node.container_pause")
PAUSED_SLOT = "paused-slot"  # in the sandbox's directory: the slot it paused on, held again at start (`hold`)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive flock beside `directory` (`<directory>.lock`), held for one pause or resume; a second one
    at the same time (another server on the same data dir) is refused rather than waited for."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory.parent / f"{directory.name}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NodeError(409, "The sandbox is being paused or resumed already; retry in a moment") from None
        yield
    finally:
        os.close(fd)


async def reset_connections(sandbox_id: str) -> None:
    """Abort every TCP connection in the sandbox's network namespace (RST to each peer); listeners stay."""
    await run("ip", "netns", "exec", network.netns_name(sandbox_id), "ss", "-K", "-t", "-n", check=False)


async def pause(runtime: OciRuntime, handle: SandboxHandle, mode: PauseMode, dest: Path) -> SavedSandbox:
    if mode not in ("memory", "filesystem"):
        raise BackendError(f"unknown pause mode {mode!r}")
    with _locked(dest):
        if await asyncio.to_thread(dest.exists):
            raise BackendError(f"pause directory {dest} exists already")
        state: dict[str, Any] = {"slot": handle.state["slot"], "cpu_count": handle.state.get("cpu_count"),
                                 "memory_mb": handle.state.get("memory_mb"), "address": handle.address}
        saved = SavedSandbox(handle.sandbox_id, runtime.name, mode, dest, state)
        try:
            if mode == "memory":
                await reset_connections(handle.sandbox_id)
                image = await checkpoint.checkpoint(runtime, handle, dest)
                state["dump_seconds"] = round(image.seconds, 3)
            else:
                await asyncio.to_thread(dest.mkdir, parents=True)
                await run(*runtime._oci("kill", handle.sandbox_id, "KILL"), check=False)
                await runtime._delete(handle.sandbox_id)
                await network.destroy(handle.sandbox_id, Slot(handle.state["slot"]))
            slot_file = runtime.sandboxes_dir / handle.sandbox_id / PAUSED_SLOT
            await asyncio.to_thread(slot_file.write_text, str(handle.state["slot"]))
            await asyncio.to_thread(write_record, saved)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, dest, True)
            raise
    return saved


async def resume(runtime: OciRuntime, saved: SavedSandbox, spec: SandboxSpec) -> SandboxHandle:
    if spec.sandbox_id != saved.source_id:
        raise BackendError(f"a pause of {saved.source_id} resumes under its own id, not {spec.sandbox_id}")
    with _locked(saved.directory):
        if read_record(saved.directory) is None:
            raise BackendError(f"no pause of {saved.source_id} is recorded in {saved.directory}")
        # After a host reboot the slot's claim under /run is gone (and another sandbox may hold the slot now),
        # as are the disk's host mounts: both are taken again here, and this attempt's own undone on failure.
        slot, claimed = runtime.slots.reclaim(spec.sandbox_id, int(saved.state["slot"]))
        handle = SandboxHandle(spec.sandbox_id, runtime.name, slot.sandbox_ip,
                               {"slot": slot.index, "cpu_count": spec.cpu_count, "memory_mb": spec.memory_mb})
        disk = SandboxDisk(runtime.sandboxes_dir / spec.sandbox_id)
        mounted = False
        try:
            moved = slot.index != int(saved.state["slot"])
            if moved or not await asyncio.to_thread(disk.is_mounted):
                await asyncio.to_thread(disk.unmount)  # a view into the old slot's range must not stay
                await asyncio.to_thread(_remount, runtime, disk, spec, slot)
                mounted = True
            if saved.mode == "memory":
                image = await asyncio.to_thread(_images_for, runtime, saved, slot)
                await checkpoint.restore(runtime, handle, image, spec.allow_internet_access)
                if image.directory != saved.directory:
                    await asyncio.to_thread(shutil.rmtree, image.directory, True)
            else:
                await _cold_boot(runtime, handle, spec)
            await runtime._wait_healthy(handle)
        except BaseException:
            # Back to paused: nothing of this attempt runs; the images and the disk's files are untouched.
            await run(*runtime._oci("kill", spec.sandbox_id, "KILL"), check=False)
            await runtime._delete(spec.sandbox_id)
            await network.destroy(spec.sandbox_id, slot)
            if mounted:
                await asyncio.to_thread(disk.unmount)
            if claimed:
                runtime.slots.release(slot)
            raise
    return handle


def _remount(runtime: OciRuntime, disk: SandboxDisk, spec: SandboxSpec, slot: Slot) -> None:
    """The host side of a kept sandbox that a host reboot took away, rebuilt for `slot` (perhaps not the slot
    it paused on): its disk and its volumes' views (`spec.volumes`) mounted again in the slot's uid range, and
    the bundle's user namespace mapping pointed at that range. runc's state, the cgroup and the network
    namespace need nothing here: a pause already removed them (`runc checkpoint`/`delete`, `network.destroy`),
    and a restore or `create` makes them again."""
    host_root = userns.sandbox_range(slot.index)
    idmap_fd = runtime.idmaps.get(userns.BASE, host_root, userns.SIZE)
    disk.remount(spec.template.rootfs, host_root, idmap_fd)
    try:
        config_path = disk.dir / "config.json"
        config = json.loads(config_path.read_text())
        volumes.reattach(disk.dir, spec.volumes, config["mounts"], idmap_fd)
        mapping = [{"containerID": 0, "hostID": host_root, "size": userns.SIZE}]
        if config["linux"].get("uidMappings") != mapping or config["linux"].get("gidMappings") != mapping:
            config["linux"]["uidMappings"] = config["linux"]["gidMappings"] = mapping
            tmp = config_path.with_name(".config.json.tmp")
            tmp.write_text(json.dumps(config))
            os.replace(tmp, config_path)
    except BaseException:
        disk.unmount()
        raise


def _images_for(runtime: OciRuntime, saved: SavedSandbox, slot: Slot) -> checkpoint.Checkpoint:
    """The dump to restore into `slot`: the pause's own images when the sandbox is back on the slot it paused
    on; else per-resume copies whose user namespace names the new slot's range (`criu_images.retarget`; the
    pause directory is only read, so a failed resume can be tried again)."""
    old_root = userns.sandbox_range(int(saved.state["slot"]))
    new_root = userns.sandbox_range(slot.index)
    if old_root == new_root:
        return checkpoint.Checkpoint(saved.source_id, saved.directory, 0.0)
    images = runtime.sandboxes_dir / saved.source_id / "criu"
    shutil.rmtree(images, ignore_errors=True)
    link_images(saved.directory, images)
    criu_images.retarget(images, old_root, new_root, saved.source_id)
    return checkpoint.Checkpoint(saved.source_id, images, 0.0)


async def _cold_boot(runtime: OciRuntime, handle: SandboxHandle, spec: SandboxSpec) -> None:
    """envd again on the kept bundle and disk: `create`, the network wired in, `start` (as `OciRuntime.start`)."""
    sandbox_dir = runtime.sandboxes_dir / spec.sandbox_id
    with await asyncio.to_thread(open, sandbox_dir / "envd.log", "ab") as out:
        await runtime._run_detached(spec.sandbox_id, sandbox_dir, out, "create")
    pid = int((sandbox_dir / "pid").read_text())
    await network.attach_namespace(spec.sandbox_id, pid)
    await network.create(spec.sandbox_id, Slot(handle.state["slot"]), spec.allow_internet_access)
    await run(*runtime._oci("start", spec.sandbox_id))


async def hold(runtime: OciRuntime, sandbox_id: str) -> None:
    """At server start (`Runtime.hold_paused`): the slot the paused sandbox left on (`PAUSED_SLOT` in its
    directory), claimed for it again if a host reboot freed it.

    A paused sandbox keeps its slot while the host runs; a reboot empties /run and its claim with it, and the
    first sandbox to start — a warm pool's or warm shell's, filled as soon as the server is up, long before
    anyone resumes — would take the slot, so the sandbox would come back at another address for no reason but
    ordering. The claim is therefore taken again here, by the node's reconcile, before pools and shells start:
    the slot stays the paused sandbox's as long as nobody else has it. If another sandbox took it meanwhile
    (another server on the host), nothing is claimed and `resume` finds a new one (`SlotAllocator.reclaim`).
    This holds nothing a paused sandbox did not hold before the reboot. The alternatives were worse: a resume
    that never depends on its slot would re-own the layer and retarget the dump after every reboot, and pools
    and shells kept off the slots of saved sandboxes need those slots known at start, which is this step."""
    try:
        index = int(await asyncio.to_thread((runtime.sandboxes_dir / sandbox_id / PAUSED_SLOT).read_text))
    except (OSError, ValueError):
        return  # not a container pause of this node (or one from before this file): resume reclaims then
    if not await asyncio.to_thread(runtime.slots.hold, sandbox_id, index):
        log.info("paused sandbox %s: its slot %d was taken meanwhile; it resumes on another", sandbox_id, index)


async def stop_saved(runtime: OciRuntime, saved: SavedSandbox) -> None:
    """Free the paused sandbox's disk, bundle, cgroup and slot (its pause directory is the node's to delete).
    The slot only if it is still the sandbox's: after a host reboot another sandbox may hold it (and its veth)."""
    state: dict[str, Any] = {}
    if "slot" in saved.state and runtime.slots.owns(saved.source_id, Slot(int(saved.state["slot"]))):
        state = {"slot": int(saved.state["slot"])}
    handle = SandboxHandle(saved.source_id, runtime.name, str(saved.state.get("address", "")), state)
    await runtime.stop(handle)
