"""Which accelerator runs the guests: KVM if a guest kernel really boots under it, else TCG.

`/dev/kvm` existing proves little: on these machines it is PVM (a software hypervisor inside the host
VM), where the stock guest kernel stalls in emulation failures instead of booting. So the probe boots
the real guest kernel and initramfs in probe mode (`sandhive.mode=probe`: it prints a marker and powers
off) and accepts KVM only if the marker appears within a deadline. TCG needs no probe: it is QEMU
emulating the CPU, slow but always there.

The answer is kept in /run (gone at reboot) per kernel and QEMU binary, because the failing probe costs
its whole deadline. `$SANDHIVE_MICROVM_ACCEL=kvm|tcg` skips the probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ...images import guest_init
from ...images.guest import GuestAssets
from . import qemu

log = logging.getLogger("sandhive.node.microvm")

PROBE_DEADLINE = 8.0  # seconds; a KVM guest reaches its init in well under one
CACHE_DIR = Path("/run/sandhive")
ENV = "SANDHIVE_MICROVM_ACCEL"


@dataclass(frozen=True)
class Accelerator:
    name: str  # "kvm" or "tcg"
    reason: str  # why this one (the probe's outcome), for logs and /health

    @property
    def hardware(self) -> bool:
        return self.name == "kvm"


def kvm_unusable() -> str | None:
    """Why KVM cannot even be tried here (None: /dev/kvm opens read-write)."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist (no VT-x/AMD-V, or nested virtualisation is off)"
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        return f"/dev/kvm cannot be opened: {exc.strerror}"
    return None


async def boot_probe(assets: GuestAssets, deadline: float = PROBE_DEADLINE, accel: str = "kvm") -> str | None:
    """Boot the guest in probe mode under `accel`. None if it reached its init in time, else why not."""
    why = kvm_unusable() if accel == "kvm" else None
    if why is not None:
        return why
    with tempfile.TemporaryDirectory(prefix="sandhive-kvm-probe-") as tmp:
        console = Path(tmp) / "console.log"
        argv = [qemu.binary(accel), "-M", "microvm,x-option-roms=off,isa-serial=on", "-accel", accel,
                "-cpu", qemu.cpu_model(accel), "-smp", "1", "-m", "256M", "-nodefaults", "-no-user-config",
                "-display", "none", "-no-reboot", "-chardev", f"file,id=console,path={console}",
                "-serial", "chardev:console", "-kernel", str(assets.kernel), "-initrd", str(assets.initramfs),
                "-append", qemu.kernel_cmdline(accel, "sandhive.mode=probe")]
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE, start_new_session=True)

        def booted() -> bool:
            return console.exists() and guest_init.PROBE_MARKER in console.read_text(errors="replace")

        try:
            while time.monotonic() - started < deadline and proc.returncode is None and not booted():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.05)
            if booted():
                return None
            if proc.returncode is not None:
                err = (await proc.stderr.read()).decode(errors="replace").strip() if proc.stderr else ""
                return f"a {accel} guest failed to start: {err[-300:] or f'exit {proc.returncode}'}"
            return (f"a guest kernel did not boot under {accel} within {deadline:g} s"
                    + (" (/dev/kvm is not real hardware virtualisation, e.g. PVM)" if accel == "kvm" else ""))
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


def _cache_file(assets: GuestAssets) -> Path:
    binary = Path(qemu.binary("kvm"))
    st = binary.stat()
    return CACHE_DIR / f"microvm-kvm-{assets.key}-{st.st_size}-{int(st.st_mtime)}.json"


async def kvm_probe(assets: GuestAssets) -> str | None:
    """`boot_probe`, remembered until reboot (or until the kernel or QEMU changes)."""
    cache = _cache_file(assets)
    with contextlib.suppress(OSError, ValueError, KeyError):
        return json.loads(cache.read_text())["why_not"]
    why = await boot_probe(assets)
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"why_not": why}))
    return why


async def choose(assets: GuestAssets) -> Accelerator:
    forced = os.environ.get(ENV)
    if forced in ("kvm", "tcg"):
        return Accelerator(forced, f"forced by ${ENV}")
    why = await kvm_probe(assets)
    if why is None:
        return Accelerator("kvm", "a guest kernel boots under KVM")
    return Accelerator("tcg", f"KVM unusable: {why}; using TCG emulation (slow: for development and tests)")
