"""One QEMU `microvm` process: its command line, its start (daemonized, in a network namespace), QMP.

The same function builds the command line for a template's boot and for its clones, so the devices
(and their order, which migration relies on) are the same. A clone differs only in that its RAM maps
the snapshot's RAM file privately (`share=off`: pages are the file's, shared with every other clone,
until the guest writes them) and in `-incoming defer`: QEMU starts with no guest, and the node then
restores the template's device state into it over QMP (`migrate-incoming`). With `x-ignore-shared` the
saved state holds no RAM at all, which is why a restore takes milliseconds.

QEMU daemonizes in its own session with a pidfile, so it outlives a restart of the server, which then
finds it again by the pidfile in the sandbox's directory and drives it through the QMP socket beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from .. import network
from ..errors import BackendError

SLIM_BINARY = "qemu-system-x86_64-microvm"  # Debian's KVM-only build for the microvm machine
FULL_BINARY = "qemu-system-x86_64"  # has TCG as well
MIGRATION_BANDWIDTH = 64 * 2**30  # bytes/s: no cap
KERNEL_CMDLINE = "console=ttyS0 quiet panic=-1 pci=off 8250.nr_uarts=1 i8042.noaux"


class QemuError(BackendError):
    """QEMU refused to start, or a QMP command failed."""


def host_tsc_khz() -> int | None:
    """The host's TSC rate, which is the guest's under TCG (QEMU reads the host's TSC for RDTSC).

    A TCG guest cannot calibrate its TSC reliably: it measures it against the emulated PIT, and on a
    busy host the vCPU thread is descheduled mid-measurement, the kernel gives up on the TSC and boot
    stalls. Telling it the rate (`tsc_early_khz=`) skips the calibration.
    """
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read(8192)
    except OSError:
        return None
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    mhz = next((line.split(":")[1] for line in info.splitlines() if line.startswith("cpu MHz")), None)
    if mhz is None or "constant_tsc" not in flags.split():
        return None
    return round(float(mhz) * 1000)


def kernel_cmdline(accel: str, extra: str = "") -> str:
    """The guest kernel's command line for an accelerator."""
    cmdline = KERNEL_CMDLINE
    khz = host_tsc_khz() if accel == "tcg" else None
    if khz:
        cmdline += f" tsc=reliable tsc_early_khz={khz}"
    return f"{cmdline} {extra}".strip()


def cpu_model(accel: str) -> str:
    # Plain `-cpu host` aborts on hosts whose KVM cannot set IA32_ARCH_CAPABILITIES (seen under PVM).
    return "host,-arch-capabilities" if accel == "kvm" else "max"


def binary(accel: str) -> str:
    """The QEMU binary for an accelerator: the slim microvm build when it can (KVM), else the full one."""
    for name in ((SLIM_BINARY, FULL_BINARY) if accel == "kvm" else (FULL_BINARY,)):
        path = shutil.which(name)
        if path:
            return path
    raise QemuError(f"{FULL_BINARY} is not installed: apt-get install qemu-system-x86")


@dataclass(frozen=True)
class Machine:
    """Everything that must be equal between a template's boot and its clones, plus the per-VM files."""

    accel: str  # "kvm" or "tcg"
    cpus: int
    memory_mb: int
    ram_file: Path | None  # None: anonymous RAM (a VM whose RAM comes whole from a saved stream, or a cold boot)
    root_disk: Path  # qcow2: this VM's copy-on-write layer
    system_disk: Path  # erofs: the system image, read-only
    directory: Path  # console.log, qmp.sock, qemu.pid
    netns: str | None = None  # path of the network namespace holding the TAP (None: no NIC, e.g. the probe)
    kernel: Path | None = None  # vmlinux + initramfs + cmdline for a boot; None for a restore
    initramfs: Path | None = None
    cmdline: str = ""
    clone: bool = False  # map ram_file privately and wait for `migrate-incoming`
    # The root disk's lower layers, top-down (the last one raw unless it ends in .qcow2), named on the command
    # line so that the qcow2 headers' backing paths do not matter: a saved sandbox's directory holds its own
    # hard links of every layer and can be moved. Empty: the headers' paths.
    root_backing: tuple[Path, ...] = ()
    incoming: bool = False  # wait for `migrate-incoming` (as a clone does) with anonymous RAM

    @property
    def console(self) -> Path:
        return self.directory / "console.log"

    @property
    def qmp_socket(self) -> Path:
        return self.directory / "qmp.sock"

    @property
    def pidfile(self) -> Path:
        return self.directory / "qemu.pid"


def command(m: Machine) -> list[str]:
    accel = "kvm" if m.accel == "kvm" else "tcg,thread=multi"
    cpu = cpu_model(m.accel)
    argv = [
        binary(m.accel), "-name", "sandhive-vm,process=sandhive-vm",
        "-M", "microvm,x-option-roms=off,rtc=on,isa-serial=on,memory-backend=ram", "-accel", accel,
        "-cpu", cpu, "-smp", str(m.cpus), "-m", f"{m.memory_mb}M",
        "-object", ram_backend(m),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-chardev", f"file,id=console,path={m.console},append=on", "-serial", "chardev:console",
        "-qmp", f"unix:{m.qmp_socket},server=on,wait=off",
        "-daemonize", "-pidfile", str(m.pidfile),
        # QEMU's seccomp filter: no obsolete system calls, no scheduler/affinity changes. Spawning stays
        # allowed (migration to and from files runs `cat`), and so do set*id (`-daemonize` needs them).
        "-sandbox", "on,obsolete=deny,resourcecontrol=deny",
        "-drive", root_drive(m),
        "-device", "virtio-blk-device,drive=root,serial=sandhive-root",
        "-drive", f"if=none,id=system,file={m.system_disk},format=raw,readonly=on",
        "-device", "virtio-blk-device,drive=system,serial=sandhive-system",
    ]
    if m.netns is not None:
        argv += ["-netdev", f"tap,id=net,ifname={network.VM_TAP},script=no,downscript=no,vhost=off",
                 "-device", f"virtio-net-device,netdev=net,mac={network.VM_GUEST_MAC}"]
    if m.kernel is not None:
        argv += ["-kernel", str(m.kernel), "-append", m.cmdline]
        if m.initramfs is not None:
            argv += ["-initrd", str(m.initramfs)]
    if m.clone or m.incoming:
        argv += ["-incoming", "defer"]
    return argv


def ram_backend(m: Machine) -> str:
    """A template boot's RAM is its file, shared (the snapshot is that file); a clone maps the file privately.
    A VM loading a whole saved RAM stream has plain anonymous RAM: its untouched pages cost nothing."""
    if m.ram_file is None:
        return f"memory-backend-ram,id=ram,size={m.memory_mb}M"
    return (f"memory-backend-file,id=ram,size={m.memory_mb}M,mem-path={m.ram_file},"
            f"share={'off' if m.clone else 'on'}")


def root_drive(m: Machine) -> str:
    if not m.root_backing:
        return f"if=none,id=root,file={m.root_disk},format=qcow2,cache=unsafe,discard=unmap"
    drive, prefix = f"if=none,id=root,driver=qcow2,file.filename={m.root_disk}", "backing."
    for layer in m.root_backing:
        fmt = "qcow2" if layer.suffix == ".qcow2" else "raw"
        drive += f",{prefix}driver={fmt},{prefix}file.filename={layer}"
        prefix += "backing."
    return drive + ",cache=unsafe,discard=unmap"


async def spawn(m: Machine) -> int:
    """Start QEMU; return its pid once it is initialised (QMP listening). Raises QemuError with its words."""
    argv = command(m)
    if m.netns is not None:  # the TAP lives in the sandbox's namespace: QEMU must open it from there
        argv = ["nsenter", f"--net={m.netns}", "--", *argv]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True)  # signals to the server's process group never reach a VM
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise QemuError(f"QEMU did not start ({proc.returncode}): {(err or out).decode(errors='replace').strip()}")
    pid = read_pid(m.pidfile)
    if pid is None:
        raise QemuError(f"QEMU started but wrote no pidfile {m.pidfile}")
    return pid


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int | None, directory: Path) -> bool:
    """Whether `pid` is still the QEMU of the VM in `directory` (not a recycled pid)."""
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and str(directory).encode() + b"/" in cmdline


async def kill(pid: int | None, directory: Path, timeout: float = 5.0) -> None:
    """SIGKILL the VM's QEMU (its guest has nothing to save) and wait until it is gone."""
    if not alive(pid, directory):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while alive(pid, directory) and time.monotonic() < deadline:  # noqa: ASYNC110 — another process's end, in /proc
        await asyncio.sleep(0.005)


class Monitor:
    """A QMP session with one QEMU."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.client = QMPClient("sandhive")

    async def __aenter__(self) -> Monitor:
        try:
            await self.client.connect(str(self.socket))
        except Exception as exc:
            raise QemuError(f"cannot reach QEMU's monitor at {self.socket}: {exc}") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.client.disconnect()

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        try:
            return await self.client.execute(command, arguments)
        except Exception as exc:
            raise QemuError(f"QMP {command} failed: {exc}") from exc

    async def _ignore_shared(self, on: bool) -> None:
        """Both ends must agree: the stream's layout differs with the capability."""
        await self.execute("migrate-set-capabilities",
                           {"capabilities": [{"capability": "x-ignore-shared", "state": on}]})

    async def save(self, state_file: Path, timeout: float = 120.0, with_ram: bool = False) -> None:
        """Stop the guest and write its device state; its RAM too `with_ram` (a clone's private RAM: a
        pause or a snapshot of a sandbox), else not (a template's RAM is the shared RAM file itself).

        The guest stays stopped (`cont` runs it on: QEMU takes its disks back from the finished migration).
        """
        await self.execute("stop")
        await self._ignore_shared(not with_ram)
        # The default bandwidth cap (32 MiB/s) is for live migration over a network; this is a stopped
        # guest written to a local file.
        await self.execute("migrate-set-parameters", {"max-bandwidth": MIGRATION_BANDWIDTH})
        await self.execute("migrate", {"uri": f"exec:cat > '{state_file}'"})
        await self._wait_migration(timeout)

    async def restore(self, state_file: Path, timeout: float = 60.0, with_ram: bool = False) -> None:
        """Load a saved state (`with_ram`: one that carries the RAM) into this `-incoming defer` QEMU and run
        the guest.

        States are saved stopped, so the clone arrives paused and needs a `cont`.
        """
        await self._ignore_shared(not with_ram)
        await self.execute("migrate-incoming", {"uri": f"exec:cat '{state_file}'"})
        await self._wait_migration(timeout, poll=0.001)
        await self.execute("cont")

    async def _wait_migration(self, timeout: float, poll: float = 0.01) -> None:
        deadline = time.monotonic() + timeout
        while True:
            info = await self.execute("query-migrate")
            status = info.get("status")
            if status == "completed":
                return
            if status in ("failed", "cancelled") or time.monotonic() > deadline:
                raise QemuError(f"migration {status or 'timed out'}: {info.get('error-desc', '')}")
            await asyncio.sleep(poll)
