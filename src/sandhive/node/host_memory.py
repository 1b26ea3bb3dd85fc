"""The host's real memory pressure: when it is short of memory, the node admits nothing, whatever its accounting says.

Why a second check next to the accounting (admission.py): the accounting counts only this node's sandboxes, from
figures up to a second old. Other processes (other servers, builds, the page cache's dirty pages), sandboxes
growing all at once, or a kernel that cannot reclaim fast enough show up here first. Two signals, either refuses:

- `MemAvailable` (the kernel's own estimate of what can be had without swapping) under the host reserve — the
  same reserve the budget keeps for the host (max(1 GiB, 10 % of RAM), or `--memory-reserve`);
- PSI (`/proc/pressure/memory`): the share of the last 10 s in which every runnable task stalled on memory
  ("full avg10") over `PSI_FULL_LIMIT` %. That is thrashing, which MemAvailable can miss while the page cache is
  still large. Kernels without PSI skip this signal.

A refusal is `MemoryPressure`: 503 with Retry-After and `error_code` "memory_pressure", distinct from `host_full`,
so a control plane (or a user) knows to place elsewhere rather than wait for a sandbox of this host to end.
Pausing idle sandboxes under pressure is not done here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import NodeError

PSI_FULL_LIMIT = 10.0  # % of the last 10 s with all tasks stalled on memory: thrashing, not a passing spike
MEMINFO = Path("/proc/meminfo")
PSI_MEMORY = Path("/proc/pressure/memory")
RETRY_AFTER_SECONDS = 10  # pressure passes when the kernel has reclaimed or a sandbox ended: longer than host_full's


class MemoryPressure(NodeError):
    """The host is short of real memory: 503 with Retry-After; `error_code` "memory_pressure"."""

    def __init__(self, message: str, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(503, message, "memory_pressure", headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


def mem_available_mb(meminfo: Path = MEMINFO) -> int | None:
    try:
        with meminfo.open() as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def psi_full_avg10(pressure: Path = PSI_MEMORY) -> float | None:
    """The "full avg10" figure of PSI memory pressure, or None where the kernel has no PSI."""
    try:
        for line in pressure.read_text().splitlines():
            kind, *fields = line.split()
            if kind == "full":
                return float(dict(f.split("=", 1) for f in fields)["avg10"])
    except (OSError, ValueError, KeyError):
        return None
    return None


@dataclass(frozen=True)
class HostMemory:
    """Reads the host's memory signals; `reason()` says why the host is under pressure, or None."""

    reserve_mb: int
    psi_full_limit: float = PSI_FULL_LIMIT
    meminfo: Path = MEMINFO
    pressure: Path = PSI_MEMORY

    def reason(self) -> str | None:
        available = mem_available_mb(self.meminfo)
        if available is not None and available < self.reserve_mb:
            return (f"Host is under memory pressure: {available} MB of memory are available, under the "
                    f"{self.reserve_mb} MB kept for the host; retry later or elsewhere")
        stalled = psi_full_avg10(self.pressure)
        if stalled is not None and stalled > self.psi_full_limit:
            return (f"Host is under memory pressure: its tasks stalled on memory {stalled:g}% of the last 10 s; "
                    "retry later or elsewhere")
        return None
