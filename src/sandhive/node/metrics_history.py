"""Each running sandbox's recent use (CPU, memory, disk), sampled every few seconds into a bounded ring.

E2B's `GET /sandboxes/{id}/metrics?start&end` answers a series, not one reading: the node samples every sandbox it
watches every `interval` seconds (5 s, as E2B) with the runtime's own `usage` (cgroup figures for the OCI
backends, QEMU's process for microvm) and keeps the last `keep_seconds` (1 h) of samples per sandbox. A sandbox
that is paused keeps its samples (no new ones); one that ends loses them.

A sampling round reads every sandbox at once (one cgroup read and one statvfs each) and costs little: see
bench/RESULTS.md ("metrics sampling") for its measured cost with 20+ sandboxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .runtime import ResourceUsage, SandboxHandle

log = logging.getLogger("sandhive.node")

DEFAULT_INTERVAL_SECONDS = 5.0  # E2B's sampling period
DEFAULT_KEEP_SECONDS = 3600.0  # one hour of history per sandbox (720 samples at 5 s)

ReadUsage = Callable[[SandboxHandle], Awaitable[ResourceUsage]]


@dataclass(frozen=True)
class Sample:
    time: float  # unix seconds (wall clock: E2B's `timestampUnix`)
    usage: ResourceUsage


class Periodic:
    """`sample` every `interval` seconds until stopped, a full interval between rounds (samples are never closer
    than it; the period stretches by a round's own few milliseconds). A round that fails is logged, not fatal:
    a bug in one round must not end a history. Shared by the sandboxes' and the teams' (api/team_metrics.py)."""

    def __init__(self, sample: Callable[[], Awaitable[None]], interval: float, what: str) -> None:
        self._sample, self.interval, self._what = sample, interval, what
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self._sample()
            except Exception:
                log.exception("sampling %s failed", self._what)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class MetricsHistory:
    """Samples of the sandboxes being tracked; `start()` runs the sampler, `stop()` ends it."""

    def __init__(self, read: ReadUsage, interval: float = DEFAULT_INTERVAL_SECONDS,
                 keep_seconds: float = DEFAULT_KEEP_SECONDS, clock: Callable[[], float] = time.time) -> None:
        """`clock` (wall-clock seconds) is for tests."""
        self._read = read
        self.interval = interval
        self.keep_seconds = keep_seconds
        self._clock = clock
        self._tracked: dict[str, SandboxHandle] = {}
        self._samples: dict[str, deque[Sample]] = {}
        self._sampler = Periodic(self.sample_once, interval, "sandbox metrics")
        self.last_round_seconds = 0.0  # wall time of the last round (the cost an operator can watch)
        # The process's CPU time during the last round: an upper bound of the round's own (anything else the
        # server did meanwhile counts too), including the worker threads that statvfs the disks.
        self.last_round_cpu_seconds = 0.0
        self.rounds = 0

    # ---- which sandboxes ----------------------------------------------------------------------------------
    def track(self, handle: SandboxHandle) -> None:
        """Sample this running sandbox from the next round on (its earlier samples, if any, are kept)."""
        self._tracked[handle.sandbox_id] = handle

    def untrack(self, sandbox_id: str) -> None:
        """Stop sampling it (paused, or about to end) but keep what was sampled."""
        self._tracked.pop(sandbox_id, None)

    def forget(self, sandbox_id: str) -> None:
        """The sandbox is gone: its samples too."""
        self._tracked.pop(sandbox_id, None)
        self._samples.pop(sandbox_id, None)

    def tracked(self) -> list[str]:
        return list(self._tracked)

    # ---- reading ------------------------------------------------------------------------------------------
    def samples(self, sandbox_id: str, start: float | None = None, end: float | None = None) -> list[Sample]:
        """The sandbox's samples with `start <= time <= end` (either bound optional), oldest first."""
        ring = self._samples.get(sandbox_id, ())
        return [s for s in ring if (start is None or s.time >= start) and (end is None or s.time <= end)]

    def latest(self, sandbox_id: str) -> Sample | None:
        ring = self._samples.get(sandbox_id)
        return ring[-1] if ring else None

    # ---- sampling -----------------------------------------------------------------------------------------
    async def sample_once(self) -> None:
        """One round: every tracked sandbox read at once. A sandbox whose reading fails (it is ending) is
        skipped this round; the owner forgets it when it ends."""
        began, cpu = time.monotonic(), time.process_time()
        handles = list(self._tracked.values())
        results = await asyncio.gather(*(self._read(h) for h in handles), return_exceptions=True)
        now = self._clock()
        for handle, result in zip(handles, results, strict=True):
            if not isinstance(result, BaseException):
                self._append(handle.sandbox_id, Sample(now, result))
        self.last_round_seconds = time.monotonic() - began
        self.last_round_cpu_seconds = time.process_time() - cpu
        self.rounds += 1

    async def first_sample(self, sandbox_ids: list[str]) -> None:
        """Sample now those of `sandbox_ids` that are tracked and have no sample yet: a sandbox created a moment
        ago has figures at once, as the single reading this history replaced had."""
        handles = [self._tracked[i] for i in sandbox_ids if i in self._tracked and not self._samples.get(i)]
        results = await asyncio.gather(*(self._read(h) for h in handles), return_exceptions=True)
        now = self._clock()
        for handle, result in zip(handles, results, strict=True):
            if not isinstance(result, BaseException):
                self._append(handle.sandbox_id, Sample(now, result))

    def _append(self, sandbox_id: str, sample: Sample) -> None:
        if sandbox_id not in self._tracked:
            return  # it paused or ended while it was read
        size = max(1, int(self.keep_seconds / max(self.interval, 0.001)))
        ring = self._samples.get(sandbox_id)
        if ring is None or ring.maxlen != size:
            ring = self._samples[sandbox_id] = deque(ring or (), maxlen=size)
        if ring and ring[-1].time > sample.time:
            return  # a round and a first sample crossed: keep the series in time order
        ring.append(sample)

    def start(self) -> None:
        self._sampler.start()

    async def stop(self) -> None:
        await self._sampler.stop()
