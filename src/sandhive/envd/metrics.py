"""Resource figures for `GET /metrics`: the sandbox's own cgroup where there is one, else the host's."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            raw = f.read().strip()
    except OSError:
        return None
    return int(raw) if raw.isdigit() else None


def _stat_field(path: str, names: tuple[str, ...]) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key in names:
                    return int(value)
    except (OSError, ValueError):
        return None
    return None


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            out[key] = int(rest.split()[0]) * 1024
    return out


def memory() -> tuple[int, int, int]:
    """(total, used, cache) in bytes."""
    info = _meminfo()
    host_total = info.get("MemTotal", 0)
    # cgroup v2, then v1
    for usage, limit, stat, cache_keys in (
        ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.stat", ("file",)),
        ("/sys/fs/cgroup/memory/memory.usage_in_bytes", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
         "/sys/fs/cgroup/memory/memory.stat", ("total_cache", "cache")),
    ):
        used = _read_int(usage)
        if used is None:
            continue
        cap = _read_int(limit)
        total = cap if cap is not None and 0 < cap < host_total else host_total
        cache = _stat_field(stat, cache_keys) or 0
        return total, max(used - cache, 0), cache
    cache = info.get("Cached", 0) + info.get("Buffers", 0)
    return host_total, host_total - info.get("MemAvailable", 0), cache


def cpu_count() -> int:
    quota = _cpu_quota()
    available = len(os.sched_getaffinity(0))
    return max(1, min(available, int(quota + 0.999))) if quota else available


def _cpu_quota() -> float | None:
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            max_, period_text = f.read().split()
        if max_ != "max":
            return int(max_) / int(period_text)
    except (OSError, ValueError):
        pass
    quota = _read_int("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    period = _read_int("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if quota and period:
        return quota / period
    return None


def _cpu_seconds() -> float:
    """CPU time used so far: the cgroup's if readable, else the whole machine's busy time."""
    usage = _stat_field("/sys/fs/cgroup/cpu.stat", ("usage_usec",))
    if usage is not None:
        return usage / 1e6
    usage = _read_int("/sys/fs/cgroup/cpuacct/cpuacct.usage")
    if usage is not None:
        return usage / 1e9
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuSampler:
    """CPU use as a percentage of the sandbox's CPUs since the previous sample."""

    last_time: float = 0.0
    last_cpu: float = 0.0

    def sample(self) -> float:
        now, used = time.monotonic(), _cpu_seconds()
        if not self.last_time:
            self.last_time, self.last_cpu = now, used
            time.sleep(0.1)
            now, used = time.monotonic(), _cpu_seconds()
        elapsed = now - self.last_time
        pct = 100.0 * (used - self.last_cpu) / (elapsed * cpu_count()) if elapsed > 0 else 0.0
        self.last_time, self.last_cpu = now, used
        return round(min(max(pct, 0.0), 100.0), 2)


def snapshot(sampler: CpuSampler) -> dict[str, float | int]:
    total, used, cache = memory()
    disk = os.statvfs("/")
    disk_total = disk.f_blocks * disk.f_frsize
    return {
        "ts": int(time.time()),
        "cpu_count": cpu_count(),
        "cpu_used_pct": sampler.sample(),
        "mem_total": total,
        "mem_used": used,
        "mem_cache": cache,
        "mem_total_mib": total // (1024 * 1024),
        "mem_used_mib": used // (1024 * 1024),
        "disk_used": disk_total - disk.f_bfree * disk.f_frsize,
        "disk_total": disk_total,
    }
