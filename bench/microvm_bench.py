"""microVM sandboxes: clone start and first command, VMM-only restore, host memory per idle clone,
next to a raw QEMU boot of the same kernel to its init in the same run.

    python -m bench.microvm_bench [--runs N] [--clones K] [--data-dir DIR]

Everything goes through `MicrovmRuntime` (no API server): the figures are the backend's own. The
accelerator (KVM or TCG) is probed as the server does and printed with the results; under TCG every
figure is emulation-bound and says little about a KVM host beyond the VMM-side steps (QEMU start,
device-state restore), which do not run guest code.

- raw boot: QEMU started on the guest kernel + initramfs in probe mode, until the guest's init prints
  its marker (the baseline: what a sandbox would cost without snapshots).
- VMM restore: a QEMU already running with `-incoming defer` gets the snapshot's device state
  (`migrate-incoming` until the guest runs), measured apart from the QEMU process start.
- cold clone → first command: `runtime.start()` (netns + TAP, qcow2 layer, QEMU, restore, envd
  /health, clock + entropy /init) and then `echo hi` through envd, i.e. a create that no pool served.
- memory: K idle clones side by side, each QEMU's RSS and PSS and, of its RAM mapping, the pages
  shared with other clones (the snapshot's page cache) vs. its own.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import HEADER, machine, row
from sandhive.images import guest, guest_init
from sandhive.node import envd_client, network
from sandhive.node.microvm import MicrovmRuntime, disks, qemu
from sandhive.node.runtime import SandboxSpec
from sandhive.templates import base
from sandhive.templates.layout import template_dir


async def raw_boot(assets: guest.GuestAssets, accel: str, runs: int) -> list[float]:
    """ms from QEMU's start to the guest init's first line on the console (probe mode, no devices)."""
    samples = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="sandhive-bench-boot-") as tmp:
            console = Path(tmp) / "console.log"
            argv = [qemu.binary(accel), "-M", "microvm,x-option-roms=off,isa-serial=on", "-accel", accel,
                    "-cpu", qemu.cpu_model(accel), "-smp", "1", "-m", "512M", "-nodefaults", "-no-user-config",
                    "-display", "none", "-no-reboot", "-chardev", f"file,id=c,path={console}", "-serial",
                    "chardev:c", "-kernel", str(assets.kernel), "-initrd", str(assets.initramfs),
                    "-append", qemu.kernel_cmdline(accel, "sandhive.mode=probe")]
            started = time.perf_counter()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                while guest_init.PROBE_MARKER not in (console.read_text(errors="replace") if console.exists()
                                                      else ""):
                    if proc.poll() is not None and guest_init.PROBE_MARKER not in console.read_text():
                        raise RuntimeError(f"the guest did not boot: {console.read_text()[-500:]}")
                    await asyncio.sleep(0.002)
                samples.append((time.perf_counter() - started) * 1000)
            finally:
                proc.kill()
                proc.wait()
    return samples


async def restore_only(rt: MicrovmRuntime, spec: SandboxSpec, runs: int) -> tuple[list[float], list[float]]:
    """(QEMU `-incoming defer` start ms, migrate-incoming → running ms), each on a fresh clone."""
    spawn, restore = [], []
    snap = await rt.snapshot_for(spec)
    for i in range(runs):
        sandbox_id = f"benchrestore{i}"
        directory = rt.sandboxes_dir / sandbox_id
        directory.mkdir(parents=True)
        slot = rt.slots.claim(sandbox_id)
        pid = None
        try:
            await network.create_for_vm(sandbox_id, slot, False)
            disks.overlay(directory / "disk.qcow2", snap.disk)
            machine_ = rt.machine(directory, snap, network.netns_path(sandbox_id))
            started = time.perf_counter()
            pid = await qemu.spawn(machine_)
            spawned = time.perf_counter()
            async with qemu.Monitor(machine_.qmp_socket) as monitor:
                connected = time.perf_counter()
                await monitor.restore(snap.state)
                restored = time.perf_counter()
            spawn.append((spawned - started) * 1000)
            restore.append((restored - connected) * 1000)
        finally:
            await qemu.kill(pid, directory)
            await network.destroy(sandbox_id, slot)
            rt.slots.release(slot)
            shutil.rmtree(directory, ignore_errors=True)
    return spawn, restore


async def cold_clones(rt: MicrovmRuntime, spec_for, runs: int) -> tuple[list[float], list[float]]:
    """(runtime.start ms, start + first command ms) of fresh clones, each stopped after."""
    start, first = [], []
    async with httpx.AsyncClient(trust_env=False) as http:
        for i in range(runs):
            spec = spec_for(f"benchclone{i}")
            began = time.perf_counter()
            handle = await rt.start(spec)
            try:
                started = time.perf_counter()
                code, out = await envd_client.run(http, handle.envd_url, envd_client.Command(
                    "echo hi", spec.template.default_user, spec.template.default_workdir, {}), 120)
                assert code == 0 and out == "hi\n", (code, out)
                start.append((started - began) * 1000)
                first.append((time.perf_counter() - began) * 1000)
            finally:
                await rt.stop(handle)
    return start, first


def _smaps(pid: int, ram_file: Path) -> dict[str, int]:
    totals = {"rss": 0, "pss": 0, "ram_shared": 0, "ram_private": 0}
    in_ram = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                in_ram = line.rstrip().endswith(str(ram_file))
                continue
            key, _, value = line.partition(":")
            kb = int(value.split()[0]) if value.strip().endswith("kB") else 0
            if key == "Rss":
                totals["rss"] += kb
            elif key == "Pss":
                totals["pss"] += kb
            elif in_ram and key in ("Shared_Clean", "Shared_Dirty"):
                totals["ram_shared"] += kb
            elif in_ram and key in ("Private_Clean", "Private_Dirty"):
                totals["ram_private"] += kb
    return totals


async def idle_memory(rt: MicrovmRuntime, spec_for, clones: int) -> list[dict[str, int]]:
    handles = []
    try:
        async with httpx.AsyncClient(trust_env=False) as http:
            for i in range(clones):
                spec = spec_for(f"benchidle{i}")
                handle = await rt.start(spec)
                handles.append(handle)
                await envd_client.run(http, handle.envd_url, envd_client.Command(
                    "true", spec.template.default_user, spec.template.default_workdir, {}), 120)
        await asyncio.sleep(3)  # idle
        snap = await rt.snapshot_for(spec_for("x"))
        return [_smaps(h.state["pid"], snap.ram) for h in handles]
    finally:
        for handle in handles:
            await rt.stop(handle)


def _mb(kb: float) -> str:
    return f"{kb / 1024:.1f}"


async def main_async(args: argparse.Namespace) -> None:
    root = Path(args.data_dir or tempfile.mkdtemp(prefix="sandhive-bench-microvm-", dir="/var/tmp"))
    root.chmod(0o711)
    rt = MicrovmRuntime(root)
    try:
        t0 = time.perf_counter()
        await rt.prepare()
        prepare_s = time.perf_counter() - t0
        info = await asyncio.to_thread(base.build, root, None, log=lambda _m: None)
        template = info.image(template_dir(root, info.id))

        def spec_for(sandbox_id: str) -> SandboxSpec:
            return SandboxSpec(sandbox_id, template, template.cpu_count, template.memory_mb, template.disk_mb)

        t0 = time.perf_counter()
        snap = await rt.snapshot_for(spec_for("x"))
        snapshot_s = time.perf_counter() - t0
        assert rt.inputs is not None and rt.acceleration is not None
        boot = await raw_boot(rt.inputs.assets, rt.acceleration.name, args.runs)
        spawn, restore = await restore_only(rt, spec_for("x"), args.runs)
        start, first = await cold_clones(rt, spec_for, args.runs)
        memory = await idle_memory(rt, spec_for, args.clones)
    finally:
        await rt.close()
        if not args.data_dir and not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    print(f"## microVM ({machine()})\n")
    print(f"Accelerator: **{rt.acceleration.name}** — {rt.acceleration.reason}. Guest kernel "
          f"{rt.inputs.assets.kernel_release}, {template.cpu_count} vCPU, {template.memory_mb} MiB, template "
          f"`{template.template_id}`. Prepare {prepare_s:.1f} s; template snapshot "
          f"{'(cached) ' if snapshot_s < 1 else ''}{snapshot_s:.1f} s ({snap.directory.name}).\n")
    print(HEADER)
    print(row("raw QEMU boot of the same kernel to its init (baseline)", boot))
    print(row("VMM: QEMU `-incoming defer` process start", spawn))
    print(row("VMM: restore snapshot device state → guest running", restore))
    print(row("cold clone: runtime.start (netns, qcow2, QEMU, restore, /health, /init)", start, boot))
    print(row("cold clone: create → first command (`echo hi`) done", first, boot))
    n = len(memory)
    avg = {k: sum(m[k] for m in memory) / n for k in memory[0]}
    print(f"\nHost memory of {n} idle clones of one snapshot, per clone (MB): RSS {_mb(avg['rss'])}, "
          f"PSS {_mb(avg['pss'])}; of the guest-RAM mapping: {_mb(avg['ram_shared'])} shared with other clones "
          f"(snapshot page cache), {_mb(avg['ram_private'])} its own.")
    if rt.acceleration.name == "tcg":
        print("Under TCG each QEMU also holds its translated-code buffers (tens of MB of anonymous memory) that a "
              "KVM guest does not have.")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.microvm_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clones", type=int, default=4, help="idle clones for the memory figure")
    parser.add_argument("--data-dir", type=Path, default=None, help="keep templates and snapshots here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args()
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
