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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ...errors import NodeError
from ...images import guest, system_image
from .. import envd_client, network
from ..errors import BackendError, BackendUnavailable
from ..network import Slot, SlotAllocator
from ..runtime import PauseMode, Persistence, ResourceUsage, SandboxHandle, SandboxSpec, SavedSandbox
from . import accel, disks, qemu, saved
from .snapshot import BOOT_DEADLINE, Inputs, Snapshot, SnapshotStore, wait_healthy

log = logging.getLogger("sandhive.node.microvm")

START_DEADLINE = {"kvm": 30.0, "tcg": 120.0}  # seconds from restore to envd's /health in a clone
SAVE_DEADLINE = 300.0  # seconds to write or read a guest's RAM (all of it: a sandbox's RAM is its own)
SYNC_DEADLINE = 120.0  # seconds for the guest's `sync` before a filesystem pause
ENTROPY_BYTES = 64


class MicrovmRuntime:
    """Runs sandboxes as microVM clones of template snapshots. `prepare()` once before use.

    `token_for(sandbox_id)` is envd's access token of a sandbox (the API's; `Node.use_tokens` sets it):
    pausing, resuming and restoring talk to an envd that already holds one. None: envd is open (tests).
    """

    name = "microvm"
    persistence = Persistence(pause_modes=("memory", "filesystem"), memory_snapshots=True)

    def __init__(self, data_dir: Path, cache_dir: Path | None = None, snapshot_start_cmd: bool = False,
                 token_for: Callable[[str], str] | None = None) -> None:
        self.data_dir = Path(data_dir).absolute()  # QEMU's command line names it: is_running matches on it
        self.cache_dir = cache_dir or system_image.default_cache_dir()
        self.sandboxes_dir = self.data_dir / "microvm" / "sandboxes"
        self.slots = SlotAllocator()
        self.snapshots = SnapshotStore(self.data_dir, self.slots, start_cmd=snapshot_start_cmd)
        self.inputs: Inputs | None = None
        self.acceleration: accel.Accelerator | None = None
        self._cpu_samples: dict[str, tuple[float, float]] = {}
        self._http = httpx.AsyncClient(timeout=10.0, trust_env=False)
        self.token_for = token_for
        self._chains: dict[Path, list[Path]] = {}

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
            "start_cmd_in_snapshot": snap.start_cmd_running, "template_id": spec.template.template_id})
        try:
            _, (lower, system_disk) = await asyncio.gather(
                network.create_for_vm(spec.sandbox_id, slot, spec.allow_internet_access),
                asyncio.to_thread(self._disks_for_clone, snap, directory))
            handle.state.update(layers=[_within(p, directory) for p in lower], system_disk=str(system_disk))
            machine = self.machine(directory, snap, network.netns_path(spec.sandbox_id), lower, system_disk)
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

    def machine(self, directory: Path, snap: Snapshot, netns: str | None, lower: list[Path] | None = None,
                system_disk: Path | None = None) -> qemu.Machine:
        assert self.inputs is not None
        return qemu.Machine(snap.accel, snap.cpus, snap.memory_mb, snap.ram, directory / saved.TOP,
                            system_disk or self.inputs.system_disk, directory, netns=netns, clone=True,
                            root_backing=tuple(lower or ()))

    def _disks_for_clone(self, snap: Snapshot, directory: Path) -> tuple[list[Path], Path]:
        """A clone's top layer over hard links of its snapshot's layers (and of the system disk, where the
        cache shares the data dir's filesystem), so that a later pause or snapshot only adds links, and a
        template rebuild (which prunes its old snapshot) never pulls a disk from under a sandbox."""
        assert self.inputs is not None
        chain = self._chains.get(snap.directory)
        if chain is None:
            chain = self._chains[snap.directory] = [snap.disk, *disks.chain(snap.disk)]
        lower = []
        for i, layer in enumerate(chain):
            link = directory / saved.layer_name(i, layer)
            try:
                os.link(layer, link)
            except OSError:  # the inode's links are used up (ext4: 65000): the snapshot's own name, then
                link = layer
            lower.append(link)
        system_disk = directory / saved.SYSTEM
        try:
            os.link(self.inputs.system_disk, system_disk)
        except OSError:
            system_disk = self.inputs.system_disk
        disks.overlay_over(directory / saved.TOP, lower[0], disks.qcow2_header(snap.disk)[0])
        return lower, system_disk

    async def reseed(self, handle: SandboxHandle, token: str | None = None,
                     identity: dict[str, Any] | None = None) -> None:
        """The clone's own clock and a fresh RNG seed, before anything else runs in it.

        Every clone resumes with the snapshot's kernel RNG state and clock; envd (started with
        --set-clock in the guest) sets the clock and mixes the seed into the kernel's pool and reseeds
        its CRNG at once. The owner's /init later sets the clock again, to the hand-over time.
        `token`: what envd holds (a saved sandbox's); `identity`: /init fields a restored clone takes over
        (its id and its own token).
        """
        body = {"timestamp": datetime.now(UTC).isoformat(),
                "entropy": base64.b64encode(os.urandom(ENTROPY_BYTES)).decode(), **(identity or {})}
        await envd_client.init(self._http, handle.envd_url, body, token=token)

    # ---- persistence (issue 14; the layout is saved.py's) ----------------------------------
    def _token(self, sandbox_id: str) -> str | None:
        return self.token_for(sandbox_id) if self.token_for is not None else None

    def _lower_layers(self, handle: SandboxHandle) -> tuple[list[Path], Path]:
        """A running VM's layers under its top, and its system disk."""
        directory = self.sandboxes_dir / handle.sandbox_id
        names = handle.state.get("layers")
        lower = [directory / n for n in names] if names else disks.chain(directory / saved.TOP)
        system = handle.state.get("system_disk")
        if system:
            return lower, Path(system)
        assert self.inputs is not None, "prepare() first"
        return lower, self.inputs.system_disk

    def _running(self, handle: SandboxHandle) -> Path:
        directory = self.sandboxes_dir / handle.sandbox_id
        if not qemu.alive(self._pid(handle), directory):
            raise NodeError(409, f"sandbox {handle.sandbox_id} is not running")
        return directory

    def _shape(self, handle: SandboxHandle, directory: Path, layers: tuple[str, ...]) -> saved.Machine:
        state = handle.state
        return saved.Machine(str(state.get("accelerator") or self.accelerator), int(state["cpu_count"]),
                             int(state["memory_mb"]), int(state.get("disk_mb", 0)),
                             disks.qcow2_header(directory / saved.TOP)[0], layers)

    async def _save(self, handle: SandboxHandle, mode: PauseMode, dest: Path, keep_running: bool) -> SavedSandbox:
        """The one save behind pause and snapshot: links of the lower layers first (cheap, while the guest
        runs), then the guest stopped, its RAM streamed out ("memory"), its top layer linked (pause: QEMU
        writes no more) or copied (snapshot: it runs on), `saved.json` last. Until then any failure runs the
        guest on and removes `dest`."""
        if mode not in self.persistence.pause_modes:
            raise NodeError(400, f"unknown pause mode {mode!r}")
        directory = self._running(handle)
        os.makedirs(dest.parent, exist_ok=True)
        os.mkdir(dest, 0o700)  # must not exist (two saves into one place are the caller's bug); holds guest RAM
        try:
            lower, system_disk = self._lower_layers(handle)
            names = await asyncio.to_thread(saved.link_layers, lower, system_disk, dest)
            if mode == "filesystem":  # the guest's dirty page cache onto its disk: processes are dropped
                code, out = await envd_client.run(
                    self._http, handle.envd_url, envd_client.Command("sync", "root", "/", {}), SYNC_DEADLINE,
                    token=self._token(handle.sandbox_id))
                if code != 0:
                    raise BackendError(f"sync in sandbox {handle.sandbox_id} failed ({code}): {out}")
            async with qemu.Monitor(directory / "qmp.sock") as monitor:
                try:
                    if mode == "memory":
                        await monitor.save(dest / saved.STATE, SAVE_DEADLINE, with_ram=True)
                    else:
                        await monitor.execute("stop")  # flushes QEMU's qcow2 caches to the file
                    copy = disks.copy_sparse if keep_running else disks.link_or_copy
                    await asyncio.to_thread(copy, directory / saved.TOP, dest / saved.TOP)
                    meta = self._shape(handle, directory, names).meta(
                        mode, handle.sandbox_id, str(handle.state.get("template_id", "")))
                    await asyncio.to_thread(saved.write_meta, dest, meta)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await monitor.execute("cont")
                    raise
                if keep_running:
                    await monitor.execute("cont")
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, dest, True)
            raise
        return SavedSandbox(handle.sandbox_id, self.name, mode, dest, meta)

    async def pause(self, handle: SandboxHandle, mode: PauseMode, dest: Path) -> SavedSandbox:
        """"memory": QEMU migrates the stopped guest, RAM and all, into `dest/state`; "filesystem": the
        guest syncs its disk first. Then the VM, its network and its slot are freed (resume gets new ones)."""
        paused = await self._save(handle, mode, dest, keep_running=False)
        await self.stop(handle)
        return paused

    async def snapshot(self, handle: SandboxHandle, dest: Path) -> SavedSandbox:
        """The guest stands still for the RAM stream and its top layer's copy, then runs on."""
        return await self._save(handle, "memory", dest, keep_running=True)

    async def resume(self, saved_vm: SavedSandbox, spec: SandboxSpec) -> SandboxHandle:
        if spec.sandbox_id != saved_vm.source_id:
            raise BackendError(f"resume of {saved_vm.source_id} asked under another id {spec.sandbox_id}")
        return await self._start_saved(saved_vm, spec, new_identity=False)

    async def restore(self, saved_vm: SavedSandbox, spec: SandboxSpec) -> SandboxHandle:
        if saved_vm.mode != "memory":
            raise NodeError(409, "a filesystem-mode pause has no memory to restore from")
        return await self._start_saved(saved_vm, spec, new_identity=True)

    async def _start_saved(self, saved_vm: SavedSandbox, spec: SandboxSpec, new_identity: bool) -> SandboxHandle:
        """A VM over a new top layer on links of the saved one's: "memory" loads the RAM stream into a QEMU
        started with `-incoming defer` (same shape as saved), "filesystem" cold-boots the guest on the disk.

        A restored clone then gets its own id and access token, a new clock and fresh entropy from an /init
        authorised by the token its envd still holds (the source's). `saved_vm` is only read.
        """
        meta = saved.read_meta(saved_vm.directory, saved_vm.state)
        try:
            shape = saved.Machine.of(meta)
        except (KeyError, ValueError) as exc:
            raise BackendError(f"{saved_vm.directory} is not a saved microVM: {exc}") from exc
        if self.inputs is None:
            await self.prepare()
        assert self.inputs is not None
        memory = meta.get("mode", saved_vm.mode) == "memory"
        accel = shape.accel if memory else self.inputs.accel
        cpus, memory_mb = (shape.cpus, shape.memory_mb) if memory else (spec.cpu_count, spec.memory_mb)
        directory = self.sandboxes_dir / spec.sandbox_id
        os.makedirs(directory)
        try:
            slot = self.slots.claim(spec.sandbox_id)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        handle = SandboxHandle(spec.sandbox_id, self.name, slot.sandbox_ip, {
            "slot": slot.index, "cpu_count": cpus, "memory_mb": memory_mb, "disk_mb": shape.disk_mb,
            "accelerator": accel, "template_id": meta.get("template_id", ""), "start_cmd_in_snapshot": memory,
            "from_saved": saved_vm.source_id})
        try:
            _, lower = await asyncio.gather(
                network.create_for_vm(spec.sandbox_id, slot, spec.allow_internet_access),
                asyncio.to_thread(saved.into_sandbox, saved_vm.directory, shape, directory))
            system_disk = directory / saved.SYSTEM if memory else self.inputs.system_disk
            handle.state.update(layers=[_within(p, directory) for p in lower], system_disk=str(system_disk))
            boot: dict[str, Any] = {} if memory else {
                "kernel": self.inputs.assets.kernel, "initramfs": self.inputs.assets.initramfs,
                "cmdline": qemu.kernel_cmdline(accel, f"sandhive.dns={','.join(self.inputs.nameservers)}"
                                               if self.inputs.nameservers else "")}
            machine = qemu.Machine(accel, cpus, memory_mb, None, directory / saved.TOP, system_disk, directory,
                                   netns=network.netns_path(spec.sandbox_id), incoming=memory,
                                   root_backing=tuple(lower), **boot)
            how = "restored from a snapshot of" if new_identity else f"resumed ({meta.get('mode')}) as"
            machine.console.write_text(f"sandhive: {spec.sandbox_id} {how} {saved_vm.source_id} "
                                       f"({accel}) at {datetime.now(UTC).isoformat()}\n")
            t0 = time.monotonic()
            pid = handle.state["pid"] = await qemu.spawn(machine)
            t1 = time.monotonic()
            if memory:
                async with qemu.Monitor(machine.qmp_socket) as monitor:
                    await monitor.restore(saved_vm.directory / saved.STATE, SAVE_DEADLINE, with_ram=True)
            t2 = time.monotonic()
            await wait_healthy(handle.envd_url, pid, machine, (START_DEADLINE if memory else BOOT_DEADLINE)[accel])
            t3 = time.monotonic()
            identity = {"sandboxId": spec.sandbox_id} if new_identity else {}
            token = self._token(spec.sandbox_id)
            if new_identity and token:
                identity["accessToken"] = token
            await self.reseed(handle, token=self._token(saved_vm.source_id) if memory else None, identity=identity)
            log.info("microvm: %s from %s: QEMU %.2f s, state %.2f s, envd %.2f s, reseed %.2f s", spec.sandbox_id,
                     saved_vm.source_id, t1 - t0, t2 - t1, t3 - t2, time.monotonic() - t3)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.stop(handle)
            raise
        return handle

    async def stop_saved(self, saved_vm: SavedSandbox) -> None:
        """Nothing of a saved microVM runs: its directory is all of it (the node deletes that)."""
        return None

    async def hold_paused(self, sandbox_id: str) -> None:
        """Nothing to hold: a paused microVM gave its slot back (its resume takes any free one)."""
        return None

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
        seconds = _cpu_seconds(pid)
        return ResourceUsage(
            cpu_count=cpus, cpu_used_pct=self._cpu_percent(handle.sandbox_id, seconds, cpus),
            mem_used=_pss(pid), mem_total=int(handle.state.get("memory_mb", 0)) * 2**20, mem_cache=0,
            disk_used=disks.allocated_bytes(directory / "disk.qcow2"),
            disk_total=int(handle.state.get("disk_mb", 0)) * 2**20, cpu_seconds=seconds or 0.0)

    def _cpu_percent(self, sandbox_id: str, seconds: float | None, cpus: int) -> float:
        if seconds is None:
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


def _cpu_seconds(pid: int | None) -> float | None:
    """QEMU's user and system CPU time (the guest's vCPUs run in it), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


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


def _within(path: Path, directory: Path) -> str:
    """A layer's name in the sandbox's state: relative to its directory when it is in it (a link), else whole
    (`directory / name` gives the path back either way)."""
    return path.name if path.parent == directory else str(path)
