"""Counts a server keeps for its operators: how long creates and builds take, and what admission refused.

Plain numbers, not Prometheus objects: the node and the template builds only count here, and the API's collector
(api/prometheus.py) turns them into metric families when it is scraped. Nothing here imports a metrics library,
so a node without the API (tests, benches) pays nothing for them.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

# Create latency: a pool hit takes milliseconds, a cold start up to seconds (gVisor, microvm under TCG).
CREATE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Template builds: a cached rebuild takes a fraction of a second, an apt-heavy Dockerfile minutes.
BUILD_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0)


@dataclass
class Histogram:
    """Observations counted into fixed upper bounds (`le`), as Prometheus' cumulative histogram reports them."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; the last is +Inf
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, observations at or below it) for every bound and +Inf."""
        out, running = [], 0
        for bound, n in zip((*[repr(b) for b in self.bounds], "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass
class NodeTelemetry:
    """What a node counts: create latency by pool outcome ("hit": a warm sandbox was handed over, "miss": a shell
    or a cold start served it) and creates refused because the host's budget was spent."""

    create_seconds: dict[str, Histogram] = field(
        default_factory=lambda: {"hit": Histogram(CREATE_BUCKETS), "miss": Histogram(CREATE_BUCKETS)})
    rejections: Counter[str] = field(default_factory=Counter)

    def created(self, pool: str, seconds: float) -> None:
        self.create_seconds[pool].observe(seconds)
