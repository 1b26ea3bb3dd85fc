"""The runtime contract: what every isolation backend (container, gvisor, microvm) provides.

A backend starts a sandbox from a template rootfs, with the system image mounted read-only at
`/.sandhive` and envd as its first process, listening on port 49983 of the sandbox's own network
namespace. It returns a `SandboxHandle`: where the host reaches the sandbox (`address`) and the
backend-private facts needed to stop or adopt it later (`state`, JSON-serialisable, stored by the API
so that a restarted server can find, adopt or clean up what is running).

Its life: `prepare()` once on the event loop that will use it (host setup; raises `BackendUnavailable`
saying why it cannot run here), then sandboxes, then `close()` on that loop. Failures are `errors.BackendError`
(internal: logged, never shown) unless the user can act on them (`sandhive.errors.NodeError`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from ..errors import NodeError

ENVD_PORT = 49983
GUEST_ADDRESS = "169.254.0.21"  # every sandbox sees itself at this address, so clones need no re-addressing


@dataclass(frozen=True)
class TemplateImage:
    """A built template as a backend needs it."""

    template_id: str
    rootfs: Path  # read-only root filesystem tree, owned by the sandbox uid range (see userns.py)
    default_user: str = "user"
    default_workdir: str = "/home/user"
    env: dict[str, str] = field(default_factory=dict)
    start_cmd: str | None = None  # started in every new sandbox before it is handed out (as default_user)
    ready_cmd: str | None = None  # the sandbox is handed out once this exits 0 (none: once start_cmd started)
    cpu_count: int = 2
    memory_mb: int = 512
    disk_mb: int = 1024
    backend: str | None = None  # the backend the template asks for (None: whichever the server runs)


@dataclass(frozen=True)
class VolumeMount:
    """A team's volume shown read-write at `path` inside the sandbox. `source` is the volume's file system as the
    node mounted it (`node/volumes.py`), stored in the canonical uid range; the backend shows it shifted into
    the sandbox's own range, as it does the template."""

    volume_id: str
    source: Path
    path: str
    node_id: str | None = None  # the remote node that keeps the volume (a control plane places the sandbox there)


@dataclass(frozen=True)
class SandboxSpec:
    """What to run: one sandbox of a template with limits."""

    sandbox_id: str  # [a-z0-9]+
    template: TemplateImage
    cpu_count: int
    memory_mb: int
    disk_mb: int
    allow_internet_access: bool = True
    volumes: tuple[VolumeMount, ...] = ()  # a resume or restore passes the sandbox's volumes again


@dataclass
class SandboxHandle:
    """A running sandbox as the node knows it. `address`:`ENVD_PORT` is envd, `address`:N any port."""

    sandbox_id: str
    backend: str
    address: str
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def envd_url(self) -> str:
        return f"http://{self.address}:{ENVD_PORT}"


PauseMode = Literal["memory", "filesystem"]
# In the handle a "memory" `resume` returns when it could only cold-boot the sandbox's kept files (gVisor's frozen
# sandbox after a host reboot): envd is new, so the node prepares and inits it as for a "filesystem" resume.
COLD_BOOTED = "cold_booted"


@dataclass(frozen=True)
class Persistence:
    """What a backend keeps of a sandbox (issue 14), stated in `/health` and docs/persistence.md.

    `pause_modes`: "memory" keeps processes where they were (CRIU, QEMU migration, or a frozen sandbox);
    "filesystem" keeps the writable layer and drops the processes (the resume cold-boots from it).
    `memory_snapshots`: `snapshot`/`restore` carry memory into new sandboxes (E2B's snapshots and fork); a
    backend without them answers 409 naming one that has them.
    """

    pause_modes: tuple[PauseMode, ...] = ()
    memory_snapshots: bool = False


@dataclass
class SavedSandbox:
    """A paused sandbox or a snapshot, as files on this node: what `resume`/`restore` start from.

    `directory` is the node's (under its data dir), made by the backend and kept until the node deletes it.
    `state` is backend-private and JSON-serialisable, stored beside the sandbox's record, so a restarted
    server (or a rebooted host) can still resume it.
    """

    source_id: str  # the sandbox it was saved from
    backend: str
    mode: PauseMode
    directory: Path
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResourceUsage:
    """A sample of a sandbox's use, from its cgroup."""

    cpu_count: int
    cpu_used_pct: float
    mem_used: int
    mem_total: int
    mem_cache: int
    disk_used: int
    disk_total: int
    cpu_seconds: float = 0.0  # CPU time used since the sandbox started (Prometheus' counter)


class Runtime(Protocol):
    """One isolation backend. Every method is idempotent where it can be: stop twice is fine."""

    name: str

    async def prepare(self) -> None:
        """Host setup before the first sandbox (tools, firewall, system image). Raises BackendUnavailable."""
        ...

    async def start(self, spec: SandboxSpec) -> SandboxHandle:
        """Start a sandbox; return once its envd answers `GET /health` (before `/init`).

        On failure nothing it created remains (netns, mounts, cgroups, processes, directories).
        """
        ...

    async def stop(self, handle: SandboxHandle) -> None:
        """Kill the sandbox and free everything it held. Safe on a sandbox that is already gone."""
        ...

    async def is_running(self, handle: SandboxHandle) -> bool: ...

    # Optional: `async def wait_exit(handle) -> str`, returning (with a reason) once the sandbox ended by itself.
    # Backends without it are watched by polling `is_running` (see Node.watch).

    async def running_ids(self) -> set[str]:
        """Ids of the sandboxes this backend has on this host (running or half-torn-down)."""
        ...

    async def usage(self, handle: SandboxHandle) -> ResourceUsage: ...

    async def logs(self, handle: SandboxHandle) -> list[str]:
        """The sandbox's own log lines (envd's output), oldest first."""
        ...

    # ---- persistence (issue 14). A backend refuses a mode or call it lacks with `NodeError(409, ...)` naming
    # the backend that can; `persistence` says which it has. ---------------------------------------------

    persistence: Persistence

    async def pause(self, handle: SandboxHandle, mode: PauseMode, dest: Path) -> SavedSandbox:
        """Save the sandbox into `dest` (made here; must not exist) and stop its processes.

        All or nothing: on failure the sandbox runs on as before and `dest` is gone. On success nothing of
        the sandbox runs (except a backend's frozen-in-place pause, which `state` records and `stop_saved` ends).
        """
        ...

    async def resume(self, saved: SavedSandbox, spec: SandboxSpec) -> SandboxHandle:
        """Bring a paused sandbox back under its own id (`spec.sandbox_id == saved.source_id`): "memory" where its
        processes left off, "filesystem" by a cold boot of its kept layer. Returns once envd answers `/health`.
        On failure `saved` is untouched (the sandbox stays paused, resumable again)."""
        ...

    async def snapshot(self, handle: SandboxHandle, dest: Path) -> SavedSandbox:
        """Save the sandbox's memory and files into `dest` while it keeps running (it may stand still for the
        dump, and keeps its id, address and end time)."""
        ...

    async def restore(self, saved: SavedSandbox, spec: SandboxSpec) -> SandboxHandle:
        """Start a new sandbox `spec.sandbox_id` from a snapshot: its own slot, netns, cgroup and writable layer.
        `saved` is only read: one snapshot serves many restores (fork)."""
        ...

    async def stop_saved(self, saved: SavedSandbox) -> None:
        """Free what a saved sandbox holds besides its directory (a frozen-in-place sandbox's processes)."""
        ...

    async def hold_paused(self, sandbox_id: str) -> None:
        """At server start, before any pool or shell fills: take again what the paused sandbox `sandbox_id` keeps
        host-wide while paused and a host reboot released (the container backend's network slot), if no other
        sandbox took it meanwhile, so that its resume comes back as it left (same address). Nothing for a
        backend whose pause keeps nothing host-wide, or for an id it never paused."""
        ...

    async def close(self) -> None:
        """Server stop: free what the backend holds itself (clients, namespaces); sandboxes keep running."""
        ...


class ShellUnfit(Exception):
    """This request cannot be served by a shell (the node cold-starts it instead); the message says why."""


@runtime_checkable
class ShellRuntime(Protocol):
    """A backend that serves pool misses from warm shells (docs/persistence.md "template-agnostic warm shells"):
    sandboxes started from no template, made a template's sandbox on demand. The container backend's
    (`container_shells.py`); the node uses it when `Node(shells=N)` and the runtime is one."""

    async def start_shell(self, spec: SandboxSpec) -> SandboxHandle:
        """A shell with `spec`'s id, limits and network, no template, envd healthy and not `/init`ed."""
        ...

    def shell_unfit(self, spec: SandboxSpec) -> str | None:
        """None when a shell can become `spec`, else why not (the node cold-starts it)."""
        ...

    async def fill_shell(self, shell: SandboxHandle, spec: SandboxSpec) -> SandboxHandle:
        """Make `shell` the sandbox `spec` (the same id), once; on failure the caller stops it."""
        ...


def not_supported(backend: str, what: str) -> NodeError:
    """The 409 for a persistence call a backend lacks, pointing at the matrix of who has it."""
    return NodeError(409, f"{what} is not supported by the {backend} backend (see docs/persistence.md for "
                          "which backend supports what)")


class NotPersistent:
    """The persistence half of `Runtime` for a backend that has none (yet): every call is a clear 409."""

    name: str
    persistence = Persistence()

    async def pause(self, handle: SandboxHandle, mode: PauseMode, dest: Path) -> SavedSandbox:
        raise not_supported(self.name, f"pause ({mode})")

    async def resume(self, saved: SavedSandbox, spec: SandboxSpec) -> SandboxHandle:
        raise not_supported(self.name, f"resume ({saved.mode})")

    async def snapshot(self, handle: SandboxHandle, dest: Path) -> SavedSandbox:
        raise not_supported(self.name, "a snapshot with memory")

    async def restore(self, saved: SavedSandbox, spec: SandboxSpec) -> SandboxHandle:
        raise not_supported(self.name, "a restore from a snapshot")

    async def stop_saved(self, saved: SavedSandbox) -> None:
        return None

    async def hold_paused(self, sandbox_id: str) -> None:
        return None
