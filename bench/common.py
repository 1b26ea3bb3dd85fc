"""Timing helpers for the benchmarks: percentiles and a Markdown table, baselines side by side."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable


def measure(fn: Callable[[], object], runs: int, warmup: int = 3) -> list[float]:
    """Wall-clock milliseconds of `runs` calls of `fn`, after `warmup` unmeasured ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def row(name: str, samples: list[float], baseline: list[float] | None = None) -> str:
    p50, p99 = pct(samples, 50), pct(samples, 99)
    ratio = f"{p50 / statistics.median(baseline):.2f}×" if baseline else "—"
    return f"| {name} | {p50:.2f} | {p99:.2f} | {len(samples)} | {ratio} |"


HEADER = "| measurement | p50 ms | p99 ms | runs | p50 vs its baseline |\n|---|---|---|---|---|"


def machine() -> str:
    cores = len(__import__("os").sched_getaffinity(0))
    with open("/proc/meminfo") as f:
        mem_gib = int(f.readline().split()[1]) / 1024 / 1024
    return (f"{platform.node()} · {platform.platform()} · {cores} cores · {mem_gib:.0f} GiB"
            f" · Python {platform.python_version()}")
