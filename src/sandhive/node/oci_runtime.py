"""What the OCI backends share: one bundle per sandbox, run by an OCI runtime CLI (runc, crun or runsc).

A sandbox is a directory under `<data-dir>/sandboxes/<id>` (made first, removed last) holding its
`config.json`, its overlay root on a size-capped tmpfs and its log; a network namespace with a slot of
its own; and a container in the runtime's state root. The backends differ only in the binary, the
global flags they pass it and how they adapt the bundle (see `container.py` and `gvisor.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import BinaryIO

import httpx

from ..images import system_image
from . import container_shells, network, oci, userns, volumes
from .admission import HostBusy
from .cgroups import CgroupReader
from .errors import BackendError, BackendUnavailable
from .hostcmd import run
from .idmap import IdmapNamespaces
from .network import Slot, SlotAllocator
from .runtime import ENVD_PORT, NotPersistent, ResourceUsage, SandboxHandle, SandboxSpec
from .storage import SandboxDisk

log = logging.getLogger("sandhive.node.oci")

START_DEADLINE = 60.0  # seconds for envd to answer /health in a new sandbox
LIVENESS_INTERVAL = 0.5  # seconds between liveness checks of a sandbox whose envd is starting
SYSTEM_IMAGE_MOUNT = "/.sandhive"
ENVD_OOM_SCORE_ADJ = -998


def _ensure_traversable(data_dir: Path, directory: Path) -> None:
    """A sandbox's root is a mount under `directory`; the sandbox's unprivileged host uid must be able to
    walk down to it. Our own directories are opened up (x only); anything above must already be."""
    data_dir.chmod(0o711)
    directory.chmod(0o711)
    for parent in data_dir.resolve().parents:
        if not parent.stat().st_mode & 0o001:
            raise BackendUnavailable(f"{parent} is not traversable by other users (mode o+x), so sandboxes cannot "
                               f"reach their root filesystem under {directory}; choose a --data-dir elsewhere "
                               f"or chmod o+x {parent}")
        if parent == Path("/"):
            break


def log_pipe(out: BinaryIO) -> int:
    """The write end of a pipe whose reader appends to the open log `out`: a sandbox's stdio.

    The reader (`cat`, in its own session) ends by itself when the last writer (envd and its children) does, so
    nothing needs stopping; it holds no sandbox resource. The caller closes the returned fd once handed on.
    """
    read_end, write_end = os.pipe()
    try:
        subprocess.Popen(["cat"], stdin=read_end, stdout=out, stderr=out, start_new_session=True)
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    return write_end


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _in_sandbox_cgroup(pid: int, sandbox_id: str) -> bool:
    """Is `pid` a process of the sandbox (in its cgroup `/sandhive/<id>`, as the bundle's cgroupsPath names it)?"""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return any(line.rstrip("\n").endswith(f"/sandhive/{sandbox_id}") for line in f)
    except OSError:
        return False


def _low_oom_score() -> None:
    """Runs in the OCI runtime's child before exec: envd inherits a low OOM score and outlives its
    sandbox's OOM kills (a user namespace cannot lower its own score, and the host cannot lower it
    afterwards). envd also raises the score of the processes it starts, which needs no privilege."""
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write(str(ENVD_OOM_SCORE_ADJ))  # needs CAP_SYS_RESOURCE, which some hosts (nested VMs) withhold


class OciRuntime(NotPersistent):
    """Runs sandboxes as OCI bundles with `binary`. Subclasses name themselves and may adapt `global_args`
    and `bundle`; `prepare()` once before use."""

    name = "oci"
    binary = "runc"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.sandboxes_dir = self.data_dir / "sandboxes"
        self.runtime_root = self.data_dir / Path(self.binary).name
        self.slots = SlotAllocator()
        self.cgroups = CgroupReader()
        self.system_image: Path | None = None
        self.idmaps = IdmapNamespaces()  # template range → each sandbox range, kept across the sandboxes of a slot
        self._http = httpx.AsyncClient(timeout=2.0, trust_env=False)

    async def prepare(self) -> None:
        """Host setup: the runtime binary, forwarding and firewall, the system image."""
        if shutil.which(self.binary) is None:
            raise BackendUnavailable(f"{self.binary} is not installed: apt-get install {Path(self.binary).name}")
        self.sandboxes_dir.mkdir(parents=True, exist_ok=True)
        self.runtime_root.mkdir(parents=True, exist_ok=True)
        _ensure_traversable(self.data_dir, self.sandboxes_dir)
        await network.prepare_host()
        self.system_image = await asyncio.to_thread(system_image.build)

    # The OCI runtime makes the sandbox's network namespace inside its user namespace (`runc create`), the
    # node names it and wires the veth in, then `start` runs envd: the sandbox then owns its namespace and
    # mounts a sysfs of its own. False: the node makes the namespace first and the bundle joins it.
    runtime_makes_netns = True

    def global_args(self) -> list[str]:
        """Flags before the runtime's subcommand (its state root, and for runsc its platform and network)."""
        return ["--root", str(self.runtime_root)]

    def _oci(self, *args: str) -> list[str]:
        return [self.binary, *self.global_args(), *args]

    def bundle(self, config: dict, spec: SandboxSpec, disk: SandboxDisk) -> dict:
        """The backend's adaptation of the shared bundle (`oci.bundle_config`); the container backend's is none."""
        return config

    # ---- start ----------------------------------------------------------------------------
    async def start(self, spec: SandboxSpec) -> SandboxHandle:
        return await self._start(spec)

    async def _start(self, spec: SandboxSpec, shell: bool = False) -> SandboxHandle:
        """`shell`: no template; the root is a tmpfs of mount points (`container_shells.py`)."""
        if self.system_image is None:
            raise BackendError(f"the {self.name} backend was not prepared: call prepare() first")
        sandbox_dir = self.sandboxes_dir / spec.sandbox_id
        sandbox_dir.mkdir(parents=True)
        slot = self.slots.claim(spec.sandbox_id)
        handle = SandboxHandle(spec.sandbox_id, self.name, slot.sandbox_ip,
                               {"slot": slot.index, "cpu_count": spec.cpu_count, "memory_mb": spec.memory_mb})
        try:
            if not self.runtime_makes_netns:
                await network.create(spec.sandbox_id, slot, spec.allow_internet_access)
            host_root = userns.sandbox_range(slot.index)
            disk = SandboxDisk(sandbox_dir)
            if shell:
                await asyncio.to_thread(container_shells.mount_shell_root, disk.rootfs, host_root)
                volume_mounts: list[dict] = []
            else:
                await asyncio.to_thread(self._create_disk, disk, spec, host_root)
                volume_mounts = await asyncio.to_thread(
                    volumes.attach, sandbox_dir, spec.volumes, self.idmaps.get(userns.BASE, host_root, userns.SIZE))
            self._write_bundle(spec, sandbox_dir, disk, host_root, volume_mounts)
            with await asyncio.to_thread(open, sandbox_dir / "envd.log", "ab") as out:
                if self.runtime_makes_netns:
                    await self._run_detached(spec.sandbox_id, sandbox_dir, out, "create")
                    pid = int((sandbox_dir / "pid").read_text())
                    await network.attach_namespace(spec.sandbox_id, pid)
                    await network.create(spec.sandbox_id, slot, spec.allow_internet_access)
                    await run(*self._oci("start", spec.sandbox_id))
                else:
                    await self._run_detached(spec.sandbox_id, sandbox_dir, out, "run")
            await self._wait_healthy(handle)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.stop(handle)
            raise
        return handle

    def _create_disk(self, disk: SandboxDisk, spec: SandboxSpec, host_root: int) -> None:
        """The sandbox's root: its template seen through an idmapped mount into its own range (`storage.py`)."""
        disk.create(spec.template.rootfs, spec.disk_mb, host_root, self.idmaps.get(userns.BASE, host_root, userns.SIZE))

    def _write_bundle(self, spec: SandboxSpec, sandbox_dir: Path, disk: SandboxDisk, host_root: int,
                      volume_mounts: list[dict] | None = None) -> None:
        etc = sandbox_dir / "etc"
        etc.mkdir()
        servers = network.host_nameservers()
        (etc / "resolv.conf").write_text("".join(f"nameserver {s}\n" for s in servers) or "")
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost\n169.254.0.21\t{spec.sandbox_id}\n")
        (etc / "hostname").write_text(spec.sandbox_id + "\n")
        argv, env = system_image.envd_command(SYSTEM_IMAGE_MOUNT, ENVD_PORT)
        config = oci.bundle_config(
            sandbox_id=spec.sandbox_id, rootfs=str(disk.rootfs),
            netns=None if self.runtime_makes_netns else network.netns_path(spec.sandbox_id),
            hostname=spec.sandbox_id, argv=argv, env=env, system_image=str(self.system_image),
            etc_files={f"/etc/{name}": str(etc / name) for name in ("resolv.conf", "hosts", "hostname")},
            cpu_count=spec.cpu_count, memory_mb=spec.memory_mb, host_root=host_root)
        config["mounts"].extend(volume_mounts or ())  # after the system's own, so none can cover them
        (sandbox_dir / "config.json").write_text(json.dumps(self.bundle(config, spec, disk)))

    async def _run_detached(self, sandbox_id: str, bundle: Path, out, command: str) -> None:
        """`run --detach` (or `create`) hands its own stdio to the container: a pipe drained into the sandbox's
        log file (`log_pipe`), because CRIU can dump and restore a pipe but not an fd on a host file the
        sandbox's mount namespace cannot see (docs/persistence.md). The runtime's own errors land there too."""
        detach = ["--detach"] if command == "run" else []
        stdio = log_pipe(out)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._oci(command, *detach, "--bundle", str(bundle), "--pid-file", str(bundle / "pid"), sandbox_id),
                stdin=asyncio.subprocess.DEVNULL, stdout=stdio, stderr=stdio, preexec_fn=_low_oom_score,
                # Its own session: signals to the server's process group or terminal never reach sandboxes.
                start_new_session=True)
        finally:
            os.close(stdio)
        if await proc.wait() != 0:
            await asyncio.sleep(0.05)  # the drain may still be copying the runtime's last words into the log
            tail = (bundle / "envd.log").read_text(errors="replace").strip().splitlines()[-5:]
            raise BackendError(f"{Path(self.binary).name} could not start sandbox {sandbox_id}: {' '.join(tail)}")

    async def _wait_healthy(self, handle: SandboxHandle) -> None:
        deadline = time.monotonic() + START_DEADLINE
        checked = time.monotonic()
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await self._http.get(f"{handle.envd_url}/health", timeout=1.0)).status_code == 204:
                    return
            # `is_running` is a runtime subprocess (`runc state`): asked every 10 ms it took CPU from envd's own
            # start (~15 % of a start; 3× the wall time of 12 starts at once), so only twice a second.
            if time.monotonic() - checked > LIVENESS_INTERVAL:
                checked = time.monotonic()
                if not await self.is_running(handle):
                    logs = "\n".join((await self.logs(handle))[-20:])
                    raise BackendError(f"sandbox {handle.sandbox_id} stopped while starting envd:\n{logs}")
            await asyncio.sleep(0.01)
        # Still running but silent: envd comes from the system image, not the template, so this is a host too
        # busy to start it in time, and the caller should try again (a 503), not an internal failure.
        raise HostBusy(f"The host is too busy: sandbox {handle.sandbox_id} did not start within "
                       f"{START_DEADLINE:.0f} s. Try again shortly.")

    # ---- stop and state -------------------------------------------------------------------
    async def stop(self, handle: SandboxHandle) -> None:
        sandbox_id = handle.sandbox_id
        await run(*self._oci("kill", sandbox_id, "KILL"), check=False)
        await self._delete(sandbox_id)
        slot = Slot(handle.state["slot"]) if "slot" in handle.state else self.slots.owned_by(sandbox_id)
        await network.destroy(sandbox_id, slot)
        await asyncio.to_thread(SandboxDisk(self.sandboxes_dir / sandbox_id).destroy)
        self.cgroups.remove_leftovers(sandbox_id)
        self.cgroups.forget(sandbox_id)
        if slot is not None:
            self.slots.release(slot)

    async def _delete(self, sandbox_id: str) -> None:
        await run(*self._oci("delete", "--force", sandbox_id), check=False)

    async def _state(self, sandbox_id: str) -> str | None:
        out = await run(*self._oci("state", sandbox_id), check=False)
        with contextlib.suppress(ValueError):
            return json.loads(out).get("status")
        return None

    async def is_running(self, handle: SandboxHandle) -> bool:
        return await self._state(handle.sandbox_id) == "running"

    async def wait_exit(self, handle: SandboxHandle) -> str:
        """Return once the sandbox's first process has ended (envd under runc; the sentry under runsc, which
        ends with envd), saying how. A pidfd of the PID the runtime wrote at start: the kernel makes it
        readable at the exit, so a watch costs one fd and no polling."""
        pid_file = self.sandboxes_dir / handle.sandbox_id / "pid"
        try:
            pid = int(pid_file.read_text().strip())
            fd = os.pidfd_open(pid)
        except (OSError, ValueError):
            return "its first process is gone"
        try:
            # The PID was read from a file: make sure it is still the sandbox's (not a reused PID) before waiting.
            # Held by the pidfd, the PID cannot be reused now; the sandbox's own process sits in its cgroup.
            # (Not `runc state`: under load it answered "not running" for live sandboxes now and then.)
            if not _in_sandbox_cgroup(pid, handle.sandbox_id):
                return f"its first process (pid {pid}) is gone"
            loop = asyncio.get_running_loop()
            ended: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _wake, ended)
            try:
                await ended
            finally:
                loop.remove_reader(fd)
        finally:
            os.close(fd)
        return f"its first process (pid {pid}) exited"

    async def running_ids(self) -> set[str]:
        """This runtime's sandboxes: a directory in its data dir (made first, removed last) or a container
        in its state root. Network namespaces are host-wide and may belong to another server: not counted."""
        ids = {p.name for p in self.sandboxes_dir.iterdir()} if self.sandboxes_dir.is_dir() else set()
        out = await run(*self._oci("list", "--format", "json"), check=False)
        with contextlib.suppress(ValueError):
            ids |= {c["id"] for c in json.loads(out) or []}
        return ids

    async def usage(self, handle: SandboxHandle) -> ResourceUsage:
        cpus = int(handle.state.get("cpu_count", 1))
        used, limit, cache = self.cgroups.memory(handle.sandbox_id)
        limit = limit or int(handle.state.get("memory_mb", 0)) * 1024 * 1024
        disk_used, disk_total = await asyncio.to_thread(SandboxDisk(self.sandboxes_dir / handle.sandbox_id).usage)
        return ResourceUsage(cpu_count=cpus, cpu_used_pct=self.cgroups.cpu_percent(handle.sandbox_id, cpus),
                             mem_used=used, mem_total=limit, mem_cache=cache, disk_used=disk_used,
                             disk_total=disk_total, cpu_seconds=self.cgroups.cpu_nanoseconds(handle.sandbox_id) / 1e9)

    def memory_in_use(self, sandbox_id: str) -> int | None:
        """Bytes the sandbox really holds (its cgroup's working set), for admission by real use (admission.py);
        None while it has no cgroup. Synchronous: two small cgroupfs reads."""
        return self.cgroups.working_set(sandbox_id)

    async def logs(self, handle: SandboxHandle) -> list[str]:
        path = self.sandboxes_dir / handle.sandbox_id / "envd.log"
        try:
            return (await asyncio.to_thread(path.read_text, errors="replace")).splitlines()
        except OSError:
            return []

    async def close(self) -> None:
        await self._http.aclose()
        self.idmaps.close()
