"""Each team's concurrent sandboxes and start rate over time: E2B's `GET /teams/{teamID}/metrics` series.

The API samples every `interval` seconds (the node's metrics interval): a team's running sandboxes (the team quota
counts them as they start and end) and the creates since the last sample divided by the interval. The last
`keep_seconds` (1 h) of points are kept per team, in memory: a restart starts the series afresh, as it does the
sandboxes' own metrics history. A team appears from its first sandbox on.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..node.metrics_history import Periodic
from .metrics_schemas import TeamMetricName


@dataclass(frozen=True)
class TeamPoint:
    time: float  # unix seconds
    concurrent: int
    start_rate: float  # creates per second since the previous point

    def value(self, metric: TeamMetricName) -> float:
        return self.concurrent if metric is TeamMetricName.concurrent_sandboxes else self.start_rate


class TeamSeries:
    """Points per team; `running()` and `started()` are read at each sample (the quota's counts and the service's
    cumulative creates per team)."""

    def __init__(self, running: Callable[[], Mapping[str, int]], started: Callable[[], Mapping[str, int]],
                 interval: float, keep_seconds: float = 3600.0, clock: Callable[[], float] = time.time) -> None:
        self._running = running
        self._started = started
        self.interval = interval
        self._clock = clock
        self._size = max(1, int(keep_seconds / max(interval, 0.001)))
        self._points: dict[str, deque[TeamPoint]] = {}
        self._last_started: dict[str, int] = {}
        self._last_time: float | None = None
        self._sampler = Periodic(self._sample, interval, "team metrics")

    def sample_once(self) -> None:
        now = self._clock()
        elapsed = max(now - self._last_time, 1e-3) if self._last_time is not None else self.interval
        self._last_time = now
        running, started = self._running(), self._started()
        for team_id in set(running) | set(started) | set(self._points):
            total = started.get(team_id, 0)
            new = total - self._last_started.get(team_id, 0)
            self._last_started[team_id] = total
            ring = self._points.setdefault(team_id, deque(maxlen=self._size))
            ring.append(TeamPoint(now, running.get(team_id, 0), new / elapsed))

    def points(self, team_id: str, start: int | None = None, end: int | None = None) -> list[TeamPoint]:
        """The team's points with `start <= time <= end` in whole unix seconds (either bound optional)."""
        return [p for p in self._points.get(team_id, ())
                if (start is None or int(p.time) >= start) and (end is None or int(p.time) <= end)]

    def start(self) -> None:
        self._sampler.start()

    async def stop(self) -> None:
        await self._sampler.stop()

    async def _sample(self) -> None:
        self.sample_once()
