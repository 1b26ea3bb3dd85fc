"""The `microvm` backend: each sandbox a QEMU `microvm` guest, restored from its template's snapshot.

Start = network namespace + TAP, a qcow2 layer over the snapshot's disk, a QEMU started with
`-incoming defer` (the VMM with no guest yet), the snapshot's device state loaded into it over QMP, and
a first `/init` that gives the clone its own clock and a fresh entropy seed (two clones of one snapshot
would otherwise continue the same random stream). The guest's RAM is the snapshot's RAM file mapped
privately, so idle clones of a template share most of their memory on the host.

Isolation: a guest kernel per sandbox behind hardware virtualisation (KVM), in its own network
namespace behind the node's firewall. Where KVM does not work (these machines' /dev/kvm is PVM) the
same guests run under TCG emulation: real, slow, for development and tests. See docs/security.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from ...images import guest, system_image
from .. import envd_client, network
from ..errors import BackendUnavailable
from ..network import Slot, SlotAllocator
from ..runtime import NotPersistent, ResourceUsage, SandboxHandle, SandboxSpec
from . import accel, disks, qemu
from .snapshot import Inputs, Snapshot, SnapshotStore, wait_healthy

log = logging.getLogger("sandhive.node.microvm")

START_DEADLINE = {"kvm": 30.0, "tcg": 120.0}  # seconds from restore to envd's /health in a clone
ENTROPY_BYTES = 64


class MicrovmRuntime(NotPersistent):
    """Runs sandboxes as microVM clones of template snapshots. `prepare()` once before use."""

    name = "microvm"

    def __init__(self, data_dir: Path, cache_dir: Path | None = None, snapshot_start_cmd: bool = False) -> None:
        self.data_dir = Path(data_dir).absolute()  # QEMU's command line names it: is_running matches on it
        self.cache_dir = cache_dir or system_image.default_cache_dir()
        self.sandboxes_dir = self.data_dir / "microvm" / "sandboxes"
        self.slots = SlotAllocator()
        self.snapshots = SnapshotStore(self.data_dir, self.slots, start_cmd=snapshot_start_cmd)
        self.inputs: Inputs | None = None
        self.acceleration: accel.Accelerator | None = None
        self._cpu_samples: dict[str, tuple[float, float]] = {}
        self._http = httpx.AsyncClient(timeout=10.0, trust_env=False)

    @property
    def accelerator(self) -> str | None:
        """`kvm` or `tcg` once prepared (what /health reports)."""
        return self.acceleration.name if self.acceleration else None

    async def prepare(self) -> None:
        """Host setup: tools, firewall, system image and its disk, guest kernel, accelerator probe."""
        why = disks.require_tools()
        if why is not None:
            raise BackendUnavailable(why)
        qemu.binary("tcg")  # raises with the package to install
        self.sandboxes_dir.mkdir(parents=True, exist_ok=True)
        await network.prepare_host()
        image = await asyncio.to_thread(system_image.build, self.cache_dir, log=log.info)
        assets = await asyncio.to_thread(guest.build, self.cache_dir, log=log.info)
        system_disk = await asyncio.to_thread(disks.system_disk, image, self.cache_dir)
        self.acceleration = await accel.choose(assets)
        log.info("microvm: accelerator %s (%s)", self.acceleration.name, self.acceleration.reason)
        self.inputs = Inputs(assets, system_disk, self.acceleration.name, tuple(network.host_nameservers()))

    async def snapshot_for(self, spec: SandboxSpec) -> Snapshot:
        """The template's snapshot for the spec's vCPUs and RAM (built on first use)."""
        if self.inputs is None:
            await self.prepare()
        assert self.inputs is not None
        return await self.snapshots.get(spec.template, self.inputs, spec.cpu_count, spec.memory_mb)

    # ---- start ----------------------------------------------------------------------------
    async def start(self, spec: SandboxSpec) -> SandboxHandle:
        snap = await self.snapshot_for(spec)
        directory = self.sandboxes_dir / spec.sandbox_id
        directory.mkdir(parents=True)
        slot = self.slots.claim(spec.sandbox_id)
        handle = SandboxHandle(spec.sandbox_id, self.name, slot.sandbox_ip, {
            "slot": slot.index, "cpu_count": spec.cpu_count, "memory_mb": spec.memory_mb,
            "disk_mb": spec.template.disk_mb, "accelerator": snap.accel, "snapshot": snap.directory.name,
            "start_cmd_in_snapshot": snap.start_cmd_running})
        try:
            await asyncio.gather(network.create_for_vm(spec.sandbox_id, slot, spec.allow_internet_access),
                                 asyncio.to_thread(disks.overlay, directory / "disk.qcow2", snap.disk))
            machine = self.machine(directory, snap, network.netns_path(spec.sandbox_id))
            machine.console.write_text(f"sandhive: {spec.sandbox_id} restored from template snapshot "
                                       f"{snap.directory.name} ({snap.accel}) at {datetime.now(UTC).isoformat()}\n")
            pid = handle.state["pid"] = await qemu.spawn(machine)
            async with qemu.Monitor(machine.qmp_socket) as monitor:
                await monitor.restore(snap.state)
            await wait_healthy(handle.envd_url, pid, machine, START_DEADLINE[snap.accel])
            await self.reseed(handle)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.stop(handle)
            raise
        return handle

    def machine(self, directory: Path, snap: Snapshot, netns: str | None) -> qemu.Machine:
        assert self.inputs is not None
        return qemu.Machine(snap.accel, snap.cpus, snap.memory_mb, snap.ram, directory / "disk.qcow2",
                            self.inputs.system_disk, directory, netns=netns, clone=True)

    async def reseed(self, handle: SandboxHandle) -> None:
        """The clone's own clock and a fresh RNG seed, before anything else runs in it.

        Every clone resumes with the snapshot's kernel RNG state and clock; envd (started with
        --set-clock in the guest) sets the clock and mixes the seed into the kernel's pool and reseeds
        its CRNG at once. The owner's /init later sets the clock again, to the hand-over time.
        """
        body = {"timestamp": datetime.now(UTC).isoformat(),
                "entropy": base64.b64encode(os.urandom(ENTROPY_BYTES)).decode()}
        await envd_client.init(self._http, handle.envd_url, body)

    # ---- stop and state -------------------------------------------------------------------
    def _pid(self, handle: SandboxHandle) -> int | None:
        return handle.state.get("pid") or qemu.read_pid(self.sandboxes_dir / handle.sandbox_id / "qemu.pid")

    async def stop(self, handle: SandboxHandle) -> None:
        sandbox_id = handle.sandbox_id
        directory = self.sandboxes_dir / sandbox_id
        await qemu.kill(self._pid(handle), directory)
        slot = Slot(handle.state["slot"]) if "slot" in handle.state else self.slots.owned_by(sandbox_id)
        await network.destroy(sandbox_id, slot)
        await asyncio.to_thread(shutil.rmtree, directory, True)
        if slot is not None:
            self.slots.release(slot)
        self._cpu_samples.pop(sandbox_id, None)

    async def is_running(self, handle: SandboxHandle) -> bool:
        return qemu.alive(self._pid(handle), self.sandboxes_dir / handle.sandbox_id)

    async def running_ids(self) -> set[str]:
        """This runtime's sandboxes: a directory under its data dir (made first, removed last)."""
        if not self.sandboxes_dir.is_dir():
            return set()
        return {p.name for p in self.sandboxes_dir.iterdir() if p.is_dir()}

    async def usage(self, handle: SandboxHandle) -> ResourceUsage:
        """From the host's side: QEMU's CPU time, its proportional share of memory (shared snapshot pages
        count once across clones), and the bytes the sandbox's disk layer holds."""
        cpus = int(handle.state.get("cpu_count", 1))
        pid = self._pid(handle)
        directory = self.sandboxes_dir / handle.sandbox_id
        return ResourceUsage(
            cpu_count=cpus, cpu_used_pct=self._cpu_percent(handle.sandbox_id, pid, cpus),
            mem_used=_pss(pid), mem_total=int(handle.state.get("memory_mb", 0)) * 2**20, mem_cache=0,
            disk_used=disks.allocated_bytes(directory / "disk.qcow2"),
            disk_total=int(handle.state.get("disk_mb", 0)) * 2**20)

    def _cpu_percent(self, sandbox_id: str, pid: int | None, cpus: int) -> float:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return 0.0
        now = time.monotonic()
        before = self._cpu_samples.get(sandbox_id)
        self._cpu_samples[sandbox_id] = (now, seconds)
        if before is None or now <= before[0]:
            return 0.0
        return max(0.0, min(100.0, 100.0 * (seconds - before[1]) / (now - before[0]) / max(cpus, 1)))

    async def logs(self, handle: SandboxHandle) -> list[str]:
        path = self.sandboxes_dir / handle.sandbox_id / "console.log"
        try:
            return (await asyncio.to_thread(path.read_text, errors="replace")).splitlines()
        except OSError:
            return []

    async def close(self) -> None:
        await self._http.aclose()


def _pss(pid: int | None) -> int:
    with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


async def probe() -> str | None:
    """None when microVMs can run here with hardware virtualisation (a guest boots under KVM), else why
    not. The backend still runs without it (TCG) when asked for by name; `auto` does not pick it."""
    if shutil.which(qemu.FULL_BINARY) is None and shutil.which(qemu.SLIM_BINARY) is None:
        return "QEMU is not installed (apt-get install qemu-system-x86)"
    why = accel.kvm_unusable()
    if why is not None:
        return why
    try:
        assets = await asyncio.to_thread(guest.build, None, log=log.info)
    except Exception as exc:
        return f"the guest kernel cannot be built: {exc}"
    return await accel.kvm_probe(assets)


async def probe_any_accelerator() -> str | None:
    """None when microVMs can run here at all (KVM, or else TCG emulation), else why not."""
    if shutil.which(qemu.FULL_BINARY) is None:
        return "QEMU is not installed (apt-get install qemu-system-x86)"
    if os.geteuid() != 0:
        return "needs root (network namespaces, TAP devices, mounts)"
    return disks.require_tools()
