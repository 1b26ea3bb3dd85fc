"""Admission control: a host budget of memory and vCPUs that every sandbox, pooled ones included, reserves from.

Why reservations rather than measured use: a sandbox may grow to its memory limit at any moment, so the
only promise that holds under load is "the limits of everything running fit the host". Memory is not
overcommitted (the budget is the host's RAM minus a reserve for the host itself); vCPUs are, by a ratio,
because idle sandboxes use no CPU and a busy one is throttled by its own cgroup quota.

Warm-pool sandboxes hold reservations too (they are real sandboxes using real memory), but they are
`POOL` reservations: when a user's create does not fit, the pool gives its sandboxes back first (see
`pool.WarmPools.evict`). A create that still does not fit is refused with `HostFull` — the API answers
503 with Retry-After — instead of overcommitting the host or hanging.
"""

from __future__ import annotations

import enum
import math
import os
from dataclasses import dataclass, field

from ..errors import NodeError
from .errors import BackendUnavailable

DEFAULT_CPU_OVERCOMMIT = 32.0  # vCPUs reserved per host core: idle sandboxes cost no CPU
MIN_HOST_RESERVE_MB = 1024  # kept for the host (server, page cache, kernel) on any machine
HOST_RESERVE_FRACTION = 0.1  # ... or this share of RAM, whichever is larger
RETRY_AFTER_SECONDS = 5  # what a refused create is told to wait; sandboxes end on their own timers


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


def host_memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise BackendUnavailable("cannot size the host's memory budget: /proc/meminfo has no MemTotal")


def host_cores() -> int:
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Budget:
    """The host's budget for sandboxes."""

    memory_mb: int
    cpus: float  # vCPUs, after overcommit

    @classmethod
    def of_host(cls, memory_mb: int | None = None, cpu_overcommit: float = DEFAULT_CPU_OVERCOMMIT) -> Budget:
        """`memory_mb` None: the host's RAM minus max(1 GiB, 10 %). vCPUs: cores × `cpu_overcommit`."""
        if memory_mb is None:
            total = host_memory_mb()
            memory_mb = total - max(MIN_HOST_RESERVE_MB, int(total * HOST_RESERVE_FRACTION))
        if memory_mb <= 0:
            raise ValueError(f"memory budget must be positive, got {memory_mb} MB")
        if cpu_overcommit <= 0:
            raise ValueError(f"CPU overcommit must be positive, got {cpu_overcommit}")
        return cls(memory_mb=memory_mb, cpus=host_cores() * cpu_overcommit)


@dataclass
class _Reservation:
    resources: Resources
    kind: Kind


@dataclass
class Admission:
    """The reservations of every sandbox this node runs. Not thread-safe: used from the event loop only."""

    budget: Budget
    _held: dict[str, _Reservation] = field(default_factory=dict)

    def used(self, kind: Kind | None = None) -> Resources:
        held = [r.resources for r in self._held.values() if kind is None or r.kind is kind]
        return Resources(sum(r.memory_mb for r in held), sum(r.cpu_count for r in held))

    def fits(self, need: Resources) -> bool:
        used = self.used()
        return (used.memory_mb + need.memory_mb <= self.budget.memory_mb
                and used.cpu_count + need.cpu_count <= self.budget.cpus + 1e-9)

    def shortfall(self, need: Resources) -> Resources:
        """How much must be freed before `need` fits (zero when it fits)."""
        used = self.used()
        return Resources(max(0, used.memory_mb + need.memory_mb - self.budget.memory_mb),
                         max(0, math.ceil(used.cpu_count + need.cpu_count - self.budget.cpus)))

    def try_reserve(self, sandbox_id: str, need: Resources, kind: Kind) -> bool:
        if not self.fits(need):
            return False
        self._held[sandbox_id] = _Reservation(need, kind)
        return True

    def reserve(self, sandbox_id: str, need: Resources, kind: Kind = Kind.SANDBOX) -> None:
        """Reserve or raise `HostFull` saying which budget is spent."""
        if not self.try_reserve(sandbox_id, need, kind):
            raise HostFull(self.refusal(need))

    def adopt(self, sandbox_id: str, held: Resources) -> None:
        """Record a sandbox that already runs (after a restart), even if the budget shrank meanwhile."""
        self._held[sandbox_id] = _Reservation(held, Kind.SANDBOX)

    def hand_out(self, sandbox_id: str) -> None:
        """A pooled sandbox became a user's: its reservation is no longer the pool's to give back."""
        if sandbox_id in self._held:
            self._held[sandbox_id].kind = Kind.SANDBOX

    def release(self, sandbox_id: str) -> None:
        self._held.pop(sandbox_id, None)

    def holds(self, sandbox_id: str) -> bool:
        return sandbox_id in self._held

    def refusal(self, need: Resources) -> str:
        used = self.used()
        if used.memory_mb + need.memory_mb > self.budget.memory_mb:
            return (f"Host is full: a sandbox needs {need.memory_mb} MB of memory and "
                    f"{self.budget.memory_mb - used.memory_mb} MB of the host's {self.budget.memory_mb} MB "
                    "sandbox budget are free; retry later or kill a sandbox")
        return (f"Host is full: a sandbox needs {need.cpu_count} vCPUs and "
                f"{self.budget.cpus - used.cpu_count:g} of the host's {self.budget.cpus:g} are free; retry "
                "later or kill a sandbox")
