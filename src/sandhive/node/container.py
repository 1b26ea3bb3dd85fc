"""The `container` backend: one OCI bundle per sandbox, run by runc (or crun) in a user namespace.

Isolation: a user namespace (root inside is the first host uid of the sandbox's own range), pid/mount/ipc/
uts/cgroup namespaces, its own network namespace (made by runc inside the user namespace, so the sandbox has a
sysfs of its own) behind the node's firewall, Docker's default capabilities less CAP_NET_RAW, Docker's seccomp
allowlist without io_uring, and cgroup limits. It shares the host kernel: the tier for trusted code and CI. See
docs/security.md. Everything but the binary lives in `oci_runtime.py`, shared with the gvisor backend.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import container_pause, container_shells, container_snapshot
from .oci_runtime import ENVD_OOM_SCORE_ADJ, START_DEADLINE, SYSTEM_IMAGE_MOUNT, OciRuntime
from .runtime import PauseMode, Persistence, SandboxHandle, SandboxSpec, SavedSandbox

__all__ = ["ENVD_OOM_SCORE_ADJ", "START_DEADLINE", "SYSTEM_IMAGE_MOUNT", "ContainerRuntime"]


class ContainerRuntime(OciRuntime):
    """Runs sandboxes as OCI containers with runc (or `oci_runtime` / $SANDHIVE_OCI_RUNTIME). `prepare()` once."""

    name = "container"
    # Pause with memory through CRIU (the node toolchain's), or of the files alone (container_pause.py);
    # snapshots and restores into new sandboxes (container_snapshot.py).
    persistence = Persistence(pause_modes=("memory", "filesystem"), memory_snapshots=True)

    def __init__(self, data_dir: Path, oci_runtime: str | None = None) -> None:
        self.binary = oci_runtime or os.environ.get("SANDHIVE_OCI_RUNTIME") or "runc"
        super().__init__(data_dir)

    @property
    def oci_runtime(self) -> str:
        return self.binary

    # ---- persistence (issue 14): container_pause.py --------------------------------------------------
    async def pause(self, handle: SandboxHandle, mode: PauseMode, dest: Path) -> SavedSandbox:
        return await container_pause.pause(self, handle, mode, dest)

    async def resume(self, saved: SavedSandbox, spec: SandboxSpec) -> SandboxHandle:
        return await container_pause.resume(self, saved, spec)

    async def stop_saved(self, saved: SavedSandbox) -> None:
        await container_pause.stop_saved(self, saved)

    async def hold_paused(self, sandbox_id: str) -> None:
        await container_pause.hold(self, sandbox_id)

    # ---- snapshots (container_snapshot.py): CRIU dump of a frozen sandbox + its writable layer -------------
    async def prepare(self) -> None:
        await super().prepare()
        await container_snapshot.thaw_interrupted(self)  # a snapshot a dead server left frozen

    async def snapshot(self, handle: SandboxHandle, dest: Path) -> SavedSandbox:
        return await container_snapshot.snapshot(self, handle, dest)

    async def restore(self, saved: SavedSandbox, spec: SandboxSpec) -> SandboxHandle:
        return await container_snapshot.restore(self, saved, spec)

    # ---- warm shells (container_shells.py, runtime.ShellRuntime): a pool miss without envd's start --------
    async def start_shell(self, spec: SandboxSpec) -> SandboxHandle:
        """A shell: `spec`'s id, limits and network, no template; envd healthy and not yet `/init`ed."""
        return await self._start(spec, shell=True)

    def shell_unfit(self, spec: SandboxSpec) -> str | None:
        """None when a shell can become `spec`, else why not (the node cold-starts it)."""
        return container_shells.fits(spec)

    async def fill_shell(self, shell: SandboxHandle, spec: SandboxSpec) -> SandboxHandle:
        """Make the shell the sandbox `spec` (same id): the template's root, the request's limits. Raises
        `container_shells.ShellUnfit` for a template whose root a shell cannot take (its mount points); on any
        failure the caller stops the shell (it is never used twice)."""
        return await container_shells.fill(self, shell, spec)
