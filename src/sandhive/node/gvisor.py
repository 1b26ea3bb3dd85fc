"""The `gvisor` backend: the container backend's OCI bundles run by gVisor's `runsc`.

The sandbox's system calls are served by gVisor's user-space kernel (the sentry), not the host's, so a
host kernel bug is no longer one system call away. Everything else — the network namespace and slot,
the overlay root on a size-capped tmpfs, the host cgroup limits, envd from the system image — is the
container backend's (`oci_runtime.py`); the bundle differences are in `oci.for_gvisor`.

Platform (how the sentry traps the sandbox's system calls): probed at `prepare()` with `runsc do
/bin/true` — systrap where it works (bookworm-backports' runsc), else ptrace (bookworm's own 2022
build). kvm is never probed: on hosts whose /dev/kvm is not real hardware virtualisation (these
machines' PVM) it hangs instead of failing. $SANDHIVE_GVISOR_PLATFORM forces a platform.

Networking: runsc's own netstack (`--network=sandbox`) refuses to start on these kernels ("cannot run
with network enabled in root network namespace": its check misfires). With `--network=host` runsc
starts its sandbox inside the network namespace the bundle names — the sandbox's own, made by the node
— and the sentry uses host sockets there. What that costs is in docs/security.md.

Persistence (pause frozen in place, or with its filesystem only) is `gvisor_pause.py`; docs/persistence.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from . import oci
from .errors import BackendUnavailable
from .gvisor_pause import FreezePause
from .hostcmd import run
from .runtime import SandboxHandle, SandboxSpec
from .storage import SandboxDisk

log = logging.getLogger("sandhive.node.gvisor")

PR_SET_CHILD_SUBREAPER = 36
PLATFORMS = ("systrap", "ptrace")  # strongest-and-fastest first; kvm deliberately absent (see above)
PROBE_TIMEOUT = 20.0


class PlatformProbe:
    """The outcome of trying `runsc do /bin/true` on each platform: the first that works, and why others did not."""

    def __init__(self, platform: str | None, seconds: float, failures: dict[str, str]) -> None:
        self.platform, self.seconds, self.failures = platform, seconds, failures

    def why_not(self) -> str:
        return "; ".join(f"{p}: {why}" for p, why in self.failures.items()) or "no platform tried"


async def probe_platform(binary: str = "runsc", platforms: tuple[str, ...] = PLATFORMS) -> PlatformProbe:
    """Run `runsc --platform=P do /bin/true` (no network, a throw-away state root) for each P in order."""
    failures: dict[str, str] = {}
    for platform in platforms:
        with tempfile.TemporaryDirectory(prefix="sandhive-runsc-probe-") as root:
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                binary, "--root", root, f"--platform={platform}", "--network=none", "do", "/bin/true",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True)
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), PROBE_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)  # runsc's own session: its sandbox and gofer go with it
                await proc.wait()
                failures[platform] = f"no answer within {PROBE_TIMEOUT:.0f}s"
                continue
            if proc.returncode == 0:
                return PlatformProbe(platform, time.monotonic() - started, failures)
            lines = out.decode(errors="replace").strip().splitlines()
            failures[platform] = f"exit {proc.returncode}: {lines[-1] if lines else 'no output'}"
    return PlatformProbe(None, 0.0, failures)


async def runsc_version(binary: str = "runsc") -> str:
    proc = await asyncio.create_subprocess_exec(binary, "--version", stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate()
    first = out.decode(errors="replace").splitlines()[:1]
    return first[0].removeprefix("runsc version ").strip() if first else "unknown"


def become_subreaper() -> bool:
    """Orphans of this process's descendants come to it instead of PID 1.

    `runsc run --detach` exits once its sandbox (sentry) and gofer run, so they are orphans; when one ends,
    `runsc delete` waits until the zombie is gone. A PID 1 that reaps late (this host's) or never (a server
    that is PID 1 in a container) makes every stop wait seconds, or forever. As their subreaper, the node
    reaps them itself (`reap_orphans`). If the server exits, they go to PID 1 as before and keep running."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def reap_orphans() -> int:
    """Reap the zombies runsc left to this process: its sentry, gofer and systrap stubs, all re-executions of
    runsc named `exe`. Never a child asyncio waits for (those are `runsc`, `ip`, `nft`, ...). Returns how many."""
    me, reaped = os.getpid(), 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if comm == "exe" and rest[0] == "Z" and int(rest[1]) == me:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry.name), os.WNOHANG)
                reaped += 1
    return reaped


class GVisorRuntime(FreezePause):
    """Runs sandboxes with runsc. `prepare()` once: it also picks the platform."""

    name = "gvisor"
    binary = "runsc"
    runtime_makes_netns = False  # runsc's host networking runs in the node's namespace; its sysfs is its own

    def __init__(self, data_dir: Path, platform: str | None = None, files_on_disk: bool | None = None) -> None:
        if files_on_disk is None:
            files_on_disk = os.environ.get("SANDHIVE_GVISOR_FILES_ON_DISK", "") == "1"
        super().__init__(data_dir, files_on_disk)
        self.platform = platform or os.environ.get("SANDHIVE_GVISOR_PLATFORM") or None
        self.version: str | None = None

    async def prepare(self) -> None:
        if shutil.which(self.binary) is None:
            raise BackendUnavailable("runsc (gVisor) is not installed: make debian-packages (it comes from "
                               "bookworm-backports, or bookworm's own older build)")
        self.version = await runsc_version(self.binary)
        if self.platform is None:
            probe = await probe_platform(self.binary)
            if probe.platform is None:
                raise BackendUnavailable(f"runsc {self.version} runs on no platform here ({probe.why_not()})")
            self.platform = probe.platform
            log.info("gvisor: runsc %s on platform %s (`runsc do /bin/true` %.2f s)%s", self.version,
                     self.platform, probe.seconds, f"; not {probe.why_not()}" if probe.failures else "")
        if not become_subreaper():
            log.warning("gvisor: cannot become the child subreaper; stopping a sandbox waits for PID 1 to reap it")
        await super().prepare()

    def global_args(self) -> list[str]:
        # Files on disk (--overlay2=none): the sandbox's writes go through the gofer to its writable layer on the
        # host, where a pause keeps them; under runsc's default root overlay they live in the sentry (gvisor_pause.py).
        overlay = ["--overlay2=none"] if self.files_on_disk else []
        return [*super().global_args(), f"--platform={self.platform or PLATFORMS[-1]}", "--network=host", *overlay]

    async def _delete(self, sandbox_id: str) -> None:
        """`runsc delete` waits for its killed sandbox to be reaped: reap while it waits."""
        delete = asyncio.ensure_future(run(*self._oci("delete", "--force", sandbox_id), check=False))
        while not delete.done():
            await asyncio.to_thread(reap_orphans)
            await asyncio.wait({delete}, timeout=0.02)
        await delete
        await asyncio.to_thread(reap_orphans)

    async def is_running(self, handle: SandboxHandle) -> bool:
        # A sandbox that ended by itself (e.g. out of memory) leaves its sentry as a zombie of ours, which runsc
        # still counts as running: reap first, then ask.
        await asyncio.to_thread(reap_orphans)
        return await super().is_running(handle)

    def bundle(self, config: dict, spec: SandboxSpec, disk: SandboxDisk) -> dict:
        disk.keep_tmp_on_disk(spec.template.rootfs)  # else runsc puts an in-memory tmpfs there
        return oci.for_gvisor(config)
