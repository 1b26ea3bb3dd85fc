"""Admission control: which sandboxes (pooled ones included) this host takes, counted by what they really use.

Memory — two checks, both must pass:
- *Limits*, overcommitted: the memory limits of everything running may add up to the budget (the host's RAM
  minus a reserve for the host) times `memory_overcommit` (`--memory-overcommit`, default 8).
- *Real use*: what the sandboxes really hold — each one's cgroup working set (usage minus inactive page cache,
  `cgroups.working_set`), summed, re-read at most once a second when admission is consulted — plus, for a
  sandbox still starting (reserved less than `SETTLE_SECONDS` ago, whose use is not visible yet), at least a
  per-start estimate (`START_ESTIMATE_MB`), must leave room for the new sandbox's estimate within the budget
  itself. A sandbox whose use cannot be read counts its whole limit: what cannot be seen is not overcommitted.
  That is every microVM (the backend has no `memory_in_use`: guest RAM, once touched, stays with QEMU, so its
  use tends to its limit anyway) and an OCI sandbox whose cgroup never showed up.
Each sandbox's hard limit stays enforced by its own cgroup; overcommit only decides how many may start.

Why 8: an idle `base` sandbox (512 MB limit) really uses 13–26 MB, about 4 % of its limit, so the limits of 200
of them (100 GB) need a ratio of ~4.7 on a 24 GB host; 8 leaves room for sandboxes with larger limits while
bounding what the host promises, and the real-use check (with host memory pressure, host_memory.py) is what
holds when sandboxes do grow. `--memory-overcommit 1` is the old limit-based admission: limits must fit the
budget, and since use never exceeds a limit the real-use check then never binds (it is not even read).

vCPUs are still counted, against cores × `cpu_overcommit` (default 256 per core, was 32). CPU is compressible:
a sandbox's vCPUs are a CFS quota that caps it, not a reservation, so an idle sandbox costs no CPU and a busy
host slows down rather than fails. The ratio is a guard against absurd requests (on 2 cores: 256 two-vCPU or
64 eight-vCPU sandboxes), no longer the cap on idle fleets: 200 idle two-vCPU sandboxes fit on 2 cores, and the
node's count, memory and pressure bound density.

The node also runs at most `max_sandboxes` (`--max-sandboxes`, default 200, as E2B's nodes) at once, pooled
ones included, and admits nothing while the host is under real memory pressure (`MemoryPressure`, see
host_memory.py), whatever the accounting says.

Warm-pool sandboxes hold reservations too (they are real sandboxes using real memory), but they are
`POOL` reservations: when a user's create does not fit, the pool gives its sandboxes back first (see
`pool.WarmPools.evict`). A create that still does not fit is refused with `HostFull` — the API answers
503 with Retry-After — instead of overcommitting the host or hanging.
"""

from __future__ import annotations

import enum
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import NodeError
from .errors import BackendUnavailable
from .host_memory import HostMemory, MemoryPressure

DEFAULT_CPU_OVERCOMMIT = 256.0  # vCPUs per host core: a guard, not a cap on idle fleets (see above)
DEFAULT_MEMORY_OVERCOMMIT = 8.0  # memory limits per MB of budget (see above)
DEFAULT_MAX_SANDBOXES = 200  # sandboxes running at once on one node, pooled ones included
MIN_HOST_RESERVE_MB = 1024  # kept for the host (server, page cache, kernel) on any machine
HOST_RESERVE_FRACTION = 0.1  # ... or this share of RAM, whichever is larger
RETRY_AFTER_SECONDS = 5  # what a refused create is told to wait; sandboxes end on their own timers
START_ESTIMATE_MB = 64  # a starting sandbox counts at least this (or its limit, if smaller) until it settles
SETTLE_SECONDS = 10.0  # after this long a sandbox's measured use is all that counts (envd started long before)
REFRESH_SECONDS = 1.0  # real use and host pressure are re-read at most this often

Meter = Callable[[str], int | None]  # bytes a sandbox really holds, None while it cannot be read


@dataclass(frozen=True)
class Resources:
    """What one sandbox reserves: its memory limit and its vCPUs."""

    memory_mb: int
    cpu_count: int


class Kind(enum.Enum):
    SANDBOX = "sandbox"  # handed out (or being created for a user): never taken back by admission
    POOL = "pool"  # warm, waiting in a pool: yields to user creates


class HostFull(NodeError):
    """The host's budget is spent: 503 with Retry-After, the seconds the caller is told to wait."""

    def __init__(self, message: str, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(503, message, "host_full", headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class HostBusy(NodeError):
    """Admitted, but the host was too slow to start the sandbox in time (CPU contention, a storm of starts):
    503 with Retry-After, like `HostFull`, because trying again later works. Not a 500: nothing is broken,
    and the new sandbox's resources are already given back when this reaches the caller."""

    def __init__(self, message: str, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(503, message, "host_busy", headers={"Retry-After": str(retry_after)})


__all__ = ["Admission", "Budget", "HostBusy", "HostFull", "Kind", "MemoryPressure", "Resources"]


def host_memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise BackendUnavailable("cannot size the host's memory budget: /proc/meminfo has no MemTotal")


def host_cores() -> int:
    return len(os.sched_getaffinity(0))


def host_reserve_mb(total_mb: int) -> int:
    return max(MIN_HOST_RESERVE_MB, int(total_mb * HOST_RESERVE_FRACTION))


@dataclass(frozen=True)
class Budget:
    """The host's budget for sandboxes. Built directly (tests), it is the old limit-based one: no overcommit,
    no count limit, no pressure check; `of_host` gives the server's defaults."""

    memory_mb: int  # real memory sandboxes may use
    cpus: float  # vCPUs, after overcommit
    memory_overcommit: float = 1.0  # limits may add up to memory_mb × this
    max_sandboxes: int | None = None  # sandboxes at once, pooled ones included; None: no limit
    reserve_mb: int | None = None  # MemAvailable under this stops admission (host_memory.py); None: not checked

    @property
    def limits_mb(self) -> int:
        """What the memory limits of all sandboxes may add up to."""
        return int(self.memory_mb * self.memory_overcommit)

    @classmethod
    def of_host(cls, memory_mb: int | None = None, cpu_overcommit: float = DEFAULT_CPU_OVERCOMMIT,
                memory_overcommit: float = DEFAULT_MEMORY_OVERCOMMIT,
                max_sandboxes: int | None = DEFAULT_MAX_SANDBOXES, reserve_mb: int | None = None) -> Budget:
        """`memory_mb` None: the host's RAM minus the reserve. vCPUs: cores × `cpu_overcommit`. `reserve_mb`
        None: max(1 GiB, 10 % of RAM), kept free for the host (under it the node admits nothing)."""
        total = host_memory_mb()
        if reserve_mb is None:
            reserve_mb = host_reserve_mb(total)
        if memory_mb is None:
            memory_mb = total - reserve_mb
        if memory_mb <= 0:
            raise ValueError(f"memory budget must be positive, got {memory_mb} MB")
        if cpu_overcommit <= 0:
            raise ValueError(f"CPU overcommit must be positive, got {cpu_overcommit}")
        if memory_overcommit < 1:
            raise ValueError(f"memory overcommit must be at least 1, got {memory_overcommit}")
        if max_sandboxes is not None and max_sandboxes < 1:
            raise ValueError(f"the maximum number of sandboxes must be at least 1, got {max_sandboxes}")
        return cls(memory_mb=memory_mb, cpus=host_cores() * cpu_overcommit, memory_overcommit=memory_overcommit,
                   max_sandboxes=max_sandboxes, reserve_mb=reserve_mb)


@dataclass
class _Reservation:
    resources: Resources
    kind: Kind
    since: float  # when it was reserved (the admission's clock)


@dataclass
class Admission:
    """The reservations of every sandbox this node runs. Not thread-safe: used from the event loop only.

    `meter` reads a sandbox's real use (the runtime's `memory_in_use`; None: every sandbox counts its limit);
    `host` the host's memory pressure (None: from `budget.reserve_mb`, or not checked when that is None)."""

    budget: Budget
    meter: Meter | None = None
    host: HostMemory | None = None
    clock: Callable[[], float] = time.monotonic
    _held: dict[str, _Reservation] = field(default_factory=dict)
    _use: dict[str, int] = field(default_factory=dict)  # bytes per sandbox id, as last read
    _pressure: str | None = None
    _read_at: float = -math.inf

    def __post_init__(self) -> None:
        if self.host is None and self.budget.reserve_mb is not None:
            self.host = HostMemory(self.budget.reserve_mb)

    @property
    def overcommits(self) -> bool:
        return self.budget.memory_overcommit > 1

    def used(self, kind: Kind | None = None) -> Resources:
        """What the limits of the sandboxes (of `kind`) add up to."""
        held = [r.resources for r in self._held.values() if kind is None or r.kind is kind]
        return Resources(sum(r.memory_mb for r in held), sum(r.cpu_count for r in held))

    def count(self) -> int:
        return len(self._held)

    def refresh(self, force: bool = False) -> None:
        """Re-read real use and host pressure if the last reading is older than `REFRESH_SECONDS`."""
        now = self.clock()
        if not force and now - self._read_at < REFRESH_SECONDS:
            return
        self._read_at = now
        if self.meter is not None and self.overcommits:
            use = {}
            for sandbox_id in self._held:
                value = self.meter(sandbox_id)
                if value is not None:
                    use[sandbox_id] = value
            self._use = use
        self._pressure = self.host.reason() if self.host is not None else None

    def in_use_mb(self) -> int:
        """What the sandboxes count for against the budget: measured use, a starting one's estimate, or (unseen)
        its limit."""
        self.refresh()
        now = self.clock()
        total = 0.0
        for sandbox_id, held in self._held.items():
            limit = held.resources.memory_mb
            if self.meter is None or not self.overcommits:
                total += limit
                continue
            young = now - held.since < SETTLE_SECONDS
            measured = self._use.get(sandbox_id)
            if measured is None:
                total += min(limit, START_ESTIMATE_MB) if young else limit
            else:
                mb = measured / 2**20
                total += max(mb, min(limit, START_ESTIMATE_MB)) if young else mb
        return math.ceil(total)

    def pressure(self) -> str | None:
        """Why the host is under real memory pressure, or None."""
        self.refresh()
        return self._pressure

    def _why_not(self, need: Resources) -> str | None:
        """Why `need` does not fit the accounting (count, limits, real use, vCPUs), or None when it does."""
        used = self.used()
        budget = self.budget
        if budget.max_sandboxes is not None and len(self._held) + 1 > budget.max_sandboxes:
            return (f"Host is full: it runs its maximum of {budget.max_sandboxes} sandboxes; retry later or kill "
                    "a sandbox")
        if used.memory_mb + need.memory_mb > budget.limits_mb:
            if not self.overcommits:
                return (f"Host is full: a sandbox needs {need.memory_mb} MB of memory and "
                        f"{budget.memory_mb - used.memory_mb} MB of the host's {budget.memory_mb} MB "
                        "sandbox budget are free; retry later or kill a sandbox")
            return (f"Host is full: a sandbox needs a {need.memory_mb} MB memory limit and "
                    f"{budget.limits_mb - used.memory_mb} MB of the {budget.limits_mb} MB its sandboxes' limits may "
                    f"add up to ({budget.memory_overcommit:g} × the {budget.memory_mb} MB budget) are free; retry "
                    "later or kill a sandbox")
        if self.overcommits:
            in_use, start = self.in_use_mb(), min(need.memory_mb, START_ESTIMATE_MB)
            if in_use + start > budget.memory_mb:
                return (f"Host is full: its sandboxes use {in_use} MB of the host's {budget.memory_mb} MB sandbox "
                        f"budget and a new one needs {start} MB (a {need.memory_mb} MB limit) to start; retry later "
                        "or kill a sandbox")
        if used.cpu_count + need.cpu_count > budget.cpus + 1e-9:
            return (f"Host is full: a sandbox needs {need.cpu_count} vCPUs and "
                    f"{budget.cpus - used.cpu_count:g} of the host's {budget.cpus:g} are free; retry "
                    "later or kill a sandbox")
        return None

    def fits(self, need: Resources) -> bool:
        """Does `need` fit the accounting? (Host pressure aside: giving back pooled sandboxes cannot fix that.)"""
        return self._why_not(need) is None

    def shortfall(self, need: Resources) -> Resources:
        """How much of the limits must be freed before `need` fits them (zero when it does)."""
        used = self.used()
        return Resources(max(0, used.memory_mb + need.memory_mb - self.budget.limits_mb),
                         max(0, math.ceil(used.cpu_count + need.cpu_count - self.budget.cpus)))

    def try_reserve(self, sandbox_id: str, need: Resources, kind: Kind) -> bool:
        if self.pressure() is not None or not self.fits(need):
            return False
        self._held[sandbox_id] = _Reservation(need, kind, self.clock())
        return True

    def reserve(self, sandbox_id: str, need: Resources, kind: Kind = Kind.SANDBOX) -> None:
        """Reserve, or raise `MemoryPressure` (the host is short of memory) or `HostFull` saying what is spent."""
        if not self.try_reserve(sandbox_id, need, kind):
            raise self.refusal_error(need)

    def adopt(self, sandbox_id: str, held: Resources) -> None:
        """Record a sandbox that already runs (after a restart), even if the budget shrank meanwhile."""
        self._held[sandbox_id] = _Reservation(held, Kind.SANDBOX, self.clock())

    def hand_out(self, sandbox_id: str) -> None:
        """A pooled sandbox became a user's: its reservation is no longer the pool's to give back."""
        if sandbox_id in self._held:
            self._held[sandbox_id].kind = Kind.SANDBOX

    def release(self, sandbox_id: str) -> None:
        self._held.pop(sandbox_id, None)
        self._use.pop(sandbox_id, None)

    def holds(self, sandbox_id: str) -> bool:
        return sandbox_id in self._held

    def refusal_error(self, need: Resources) -> NodeError:
        pressure = self.pressure()
        if pressure is not None:
            return MemoryPressure(pressure)
        return HostFull(self.refusal(need))

    def refusal(self, need: Resources) -> str:
        return self._why_not(need) or "Host is full; retry later or kill a sandbox"
