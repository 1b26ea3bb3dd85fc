"""Template snapshots: a template's guest booted once, envd (and the start command) ready, then frozen.

A snapshot is a directory `<data_dir>/microvm/snapshots/<template>-<key>/`:

- `ram`: the guest's RAM, a file QEMU mapped shared (`memory-backend-file,share=on`) while the guest
  booted, so the RAM is in the file when QEMU stops. Clones map it privately: every clone reads the same
  page-cache pages until it writes one (copy-on-write in the host kernel).
- `state`: the device state (CPU registers, virtio queues, timers), saved by a migration with
  `x-ignore-shared`, which leaves the shared RAM out: about 100 KB, so a restore takes milliseconds.
- `disk.qcow2`: the guest's root disk at that moment, over the template's ext4 image; each clone's
  disk is a qcow2 over this one.

The key covers everything a clone must match: template build, guest kernel/initramfs, system image,
accelerator, vCPUs, RAM, QEMU binary, the host's TSC rate (TCG) and nameservers (written at boot).
Building takes one guest boot: ~1 s under KVM, tens of seconds under TCG, hence the cache on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from ...images.guest import GuestAssets
from .. import network
from ..network import SlotAllocator
from ..runtime import ENVD_PORT, SandboxHandle, TemplateImage
from ..startup import run_start_command
from . import disks, qemu

log = logging.getLogger("sandhive.node.microvm")

LAYOUT_VERSION = 1
BOOT_DEADLINE = {"kvm": 60.0, "tcg": 600.0}  # seconds from QEMU start to envd's /health


@dataclass(frozen=True)
class Snapshot:
    directory: Path
    accel: str
    cpus: int
    memory_mb: int
    start_cmd_running: bool  # the template's start command runs in it (clones inherit it running)

    @property
    def ram(self) -> Path:
        return self.directory / "ram"

    @property
    def state(self) -> Path:
        return self.directory / "state"

    @property
    def disk(self) -> Path:
        return self.directory / "disk.qcow2"

    @classmethod
    def read(cls, directory: Path) -> Snapshot | None:
        try:
            meta = json.loads((directory / "snapshot.json").read_text())
            return cls(directory, meta["accel"], meta["cpus"], meta["memory_mb"], meta["start_cmd_running"])
        except (OSError, ValueError, KeyError):
            return None


@dataclass(frozen=True)
class Inputs:
    """What every snapshot on this node shares: the guest, the system image, the accelerator."""

    assets: GuestAssets
    system_disk: Path
    accel: str
    nameservers: tuple[str, ...]


def key(template: TemplateImage, inputs: Inputs, cpus: int, memory_mb: int, start_cmd: bool) -> str:
    binary = Path(qemu.binary(inputs.accel)).stat()
    spec = {"layout": LAYOUT_VERSION, "template": disks.template_key(template), "guest": inputs.assets.key,
            "system": inputs.system_disk.name, "accel": inputs.accel, "cpus": cpus, "memory_mb": memory_mb,
            "qemu": [binary.st_size, int(binary.st_mtime)], "tsc": qemu.host_tsc_khz() if inputs.accel == "tcg" else 0,
            "dns": list(inputs.nameservers),
            "start": [template.start_cmd, template.ready_cmd, template.default_user, template.default_workdir]
            if start_cmd and template.start_cmd else None}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class SnapshotStore:
    """Finds or builds snapshots under `<data_dir>/microvm/snapshots`, one build per key at a time."""

    def __init__(self, data_dir: Path, slots: SlotAllocator, start_cmd: bool = False) -> None:
        """`start_cmd`: run the template's start command (until its ready command passes) before the
        snapshot, so clones resume with it running. Off by default: the node's startup (startup.py)
        runs start commands in every new sandbox itself and would start a second one; turn it on together
        with the node skipping sandboxes whose handle says `start_cmd_in_snapshot`."""
        self.data_dir = data_dir
        self.root = data_dir / "microvm" / "snapshots"
        self.slots = slots
        self.start_cmd = start_cmd
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, template: TemplateImage, inputs: Inputs, cpus: int, memory_mb: int) -> Snapshot:
        name = f"{template.template_id}-{key(template, inputs, cpus, memory_mb, self.start_cmd)}"
        found = Snapshot.read(self.root / name)
        if found is not None:
            return found
        async with self._locks.setdefault(name, asyncio.Lock()):
            self.root.mkdir(parents=True, exist_ok=True)
            lock = await asyncio.to_thread(_flock, self.root / f".lock-{name}")
            try:
                found = Snapshot.read(self.root / name)
                if found is None:
                    found = await self._build(name, template, inputs, cpus, memory_mb)
            finally:
                lock.close()
            return found

    async def _build(self, name: str, template: TemplateImage, inputs: Inputs, cpus: int,
                     memory_mb: int) -> Snapshot:
        started = time.monotonic()
        log.info("microvm: snapshotting template %s (%s, %d vCPU, %d MiB): booting its guest under %s",
                 template.template_id, name, cpus, memory_mb, inputs.accel)
        await self._remove_leftovers(name)
        image = await asyncio.to_thread(disks.template_disk, template, self.data_dir)
        tmp = self.root / f".tmp-{name}-{os.getpid()}-{secrets.token_hex(3)}"
        tmp.mkdir()
        vm_id = "snap" + secrets.token_hex(6)  # its own netns and slot, like a sandbox, while it boots
        (tmp / "vm_id").write_text(vm_id)
        slot = self.slots.claim(vm_id)
        pid = None
        try:
            await network.create_for_vm(vm_id, slot, internet=True)  # a start command may fetch things
            await asyncio.to_thread(disks.overlay, tmp / "disk.qcow2", image)
            dns = ",".join(inputs.nameservers)
            machine = qemu.Machine(
                inputs.accel, cpus, memory_mb, tmp / "ram", tmp / "disk.qcow2", inputs.system_disk, tmp,
                netns=network.netns_path(vm_id), kernel=inputs.assets.kernel, initramfs=inputs.assets.initramfs,
                cmdline=qemu.kernel_cmdline(inputs.accel, f"sandhive.dns={dns}" if dns else ""))
            pid = await qemu.spawn(machine)
            url = f"http://{slot.sandbox_ip}:{ENVD_PORT}"
            await wait_healthy(url, pid, machine, BOOT_DEADLINE[inputs.accel])
            booted = time.monotonic() - started
            with_start = self.start_cmd and bool(template.start_cmd)
            if with_start:
                await _start_command(url, template)
            async with qemu.Monitor(machine.qmp_socket) as monitor:
                await monitor.save(tmp / "state")
                with contextlib.suppress(qemu.QemuError):
                    await monitor.execute("quit")
            await qemu.kill(pid, tmp)  # after `quit` it is normally gone already
            (tmp / "snapshot.json").write_text(json.dumps({
                "accel": inputs.accel, "cpus": cpus, "memory_mb": memory_mb, "template": template.template_id,
                "start_cmd_running": with_start, "boot_seconds": round(booted, 2),
                "seconds": round(time.monotonic() - started, 2)}, indent=2) + "\n")
            (tmp / "vm_id").unlink()
            final = self.root / name
            os.rename(tmp, final)
        except BaseException:
            await qemu.kill(pid, tmp)
            console_log = tmp / "console.log"
            console = console_log.read_text(errors="replace")[-2000:] if console_log.exists() else ""
            await asyncio.to_thread(shutil.rmtree, tmp, True)
            if console:
                log.warning("microvm: snapshot of %s failed; guest console:\n%s", template.template_id, console)
            raise
        finally:
            await network.destroy(vm_id, slot)
            self.slots.release(slot)
        await asyncio.to_thread(self._prune, template.template_id, final)
        log.info("microvm: snapshot of %s ready in %.1f s (guest booted to envd in %.1f s)",
                 template.template_id, time.monotonic() - started, booted)
        snapshot = Snapshot.read(final)
        assert snapshot is not None
        return snapshot

    async def _remove_leftovers(self, name: str) -> None:
        """What a build killed half-way left: its QEMU, netns, slot and directory."""
        for tmp in self.root.glob(f".tmp-{name}-*"):
            pid = qemu.read_pid(tmp / "qemu.pid")
            await qemu.kill(pid, tmp)
            with contextlib.suppress(OSError):
                vm_id = (tmp / "vm_id").read_text().strip()
                slot = self.slots.owned_by(vm_id)
                await network.destroy(vm_id, slot)
                if slot is not None:
                    self.slots.release(slot)
            await asyncio.to_thread(shutil.rmtree, tmp, True)

    def _prune(self, template_id: str, keep: Path) -> None:
        """Older snapshots of the template. Running clones keep their mappings and open files; only their
        qcow2 backing chain needs the old `disk.qcow2`, which they hold open."""
        for old in self.root.glob(f"{template_id}-*"):
            if old != keep and old.is_dir() and Snapshot.read(old) is not None and _same_shape(old, keep):
                shutil.rmtree(old, ignore_errors=True)


def _same_shape(a: Path, b: Path) -> bool:
    """Two snapshots of one template for the same vCPUs and RAM (other shapes stay: they are in use)."""
    sa, sb = Snapshot.read(a), Snapshot.read(b)
    return sa is not None and sb is not None and (sa.cpus, sa.memory_mb, sa.accel) == (sb.cpus, sb.memory_mb, sb.accel)


def _flock(path: Path):  # noqa: ANN202 — an open file holding the lock
    f = open(path, "w")  # noqa: SIM115 — closed by the caller, which releases the lock
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


async def wait_healthy(url: str, pid: int | None, machine: qemu.Machine, deadline: float) -> None:
    """Until envd answers `/health`; fails at once if QEMU exits (the console says why)."""
    end = time.monotonic() + deadline
    async with httpx.AsyncClient(trust_env=False) as http:
        while time.monotonic() < end:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/health", timeout=1.0)).status_code == 204:
                    return
            if not qemu.alive(pid, machine.directory):
                tail = machine.console.read_text(errors="replace")[-1500:] if machine.console.exists() else ""
                raise qemu.QemuError(f"the guest stopped before envd answered:\n{tail}")
            await asyncio.sleep(0.005)
    raise qemu.QemuError(f"envd in the guest did not answer within {deadline:.0f} s")


async def _start_command(url: str, template: TemplateImage) -> None:
    """The template's start command, running and ready before the snapshot (E2B snapshots it the same way)."""
    handle = SandboxHandle("snapshot", "microvm", url.split("//", 1)[1].rsplit(":", 1)[0])
    async with httpx.AsyncClient(trust_env=False, timeout=30.0) as http:
        await run_start_command(http, handle, template)
