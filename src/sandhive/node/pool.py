"""Warm pools: sandboxes started ahead, so that a create is a hand-over (`/init`) instead of a start.

One pool per `PoolKey` — template build, backend, limits and internet switch — because a sandbox's
limits, network and rootfs are fixed when it starts. A pooled sandbox is started with its final id and
left where envd waits for `/init` (with the template's start command running and its ready check
passed); `take` hands it out exactly once. Nothing is ever returned to a pool: a sandbox never
inherits anything from another.

Sizing. Each template has a base size (default 2, `0` disables its pools). A pool appears on the first
create of its key (or at server start for pinned ones, e.g. `base`) and keeps `target` sandboxes ready
or starting, where `target` is the base size raised to the largest number of creates that arrived
within one fill time during the last `window_seconds` (the number the pool would have needed to serve
them all), capped at `max_size`. Demand that stops lets the target fall back to the base size, and a
pool without any create for `idle_seconds` is emptied and dropped unless it is pinned.

Host budget. Every pooled sandbox, starting or ready, holds an admission reservation (`Kind.POOL`). A
fill that does not fit waits. A user create that does not fit calls `evict`, which gives back pooled
sandboxes (ready ones first, then fills in flight) until it fits: pool sandboxes yield, so a pool never
makes a user's create fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field

from .admission import Admission, Kind, Resources
from .request import CreateRequest, new_sandbox_id
from .runtime import SandboxHandle

log = logging.getLogger("sandhive.node.pool")

TICK_SECONDS = 1.0  # the maintainer looks at every pool at least this often
FIRST_FILL_GUESS = 1.0  # seconds a fill is assumed to take before one was measured
MAX_BACKOFF_SECONDS = 60.0  # after repeated failed fills, a pool retries at most this rarely


@dataclass(frozen=True)
class PoolSettings:
    size: int = 2  # base size of every template's pool; 0 disables pools
    sizes: Mapping[str, int] = field(default_factory=dict)  # per-template base sizes (template id → size)
    max_size: int = 8  # demand grows a pool up to this (or its base size, if larger)
    window_seconds: float = 60.0  # how far back demand is looked at
    idle_seconds: float = 1800.0  # an unpinned pool without creates for this long is dropped
    # Sandbox starts at once for the pools, user misses included (a start is CPU-bound: envd's imports).
    fill_concurrency: int = field(default_factory=lambda: max(1, len(os.sched_getaffinity(0)) // 2))
    # A refill waits this long after a hand-over, so that the new owner's /init and first command do not
    # compete for the CPU with a sandbox starting behind them (envd's start is ~0.25 s of CPU).
    refill_delay: float = 0.15

    def base(self, template_id: str) -> int:
        return max(0, self.sizes.get(template_id, self.size))

    @property
    def enabled(self) -> bool:
        return self.size > 0 or any(v > 0 for v in self.sizes.values())


@dataclass(frozen=True)
class PoolKey:
    """What makes two sandboxes interchangeable before `/init`."""

    template_id: str
    build: str  # the template's build (its rootfs and start-up facts), so a rebuilt template gets fresh sandboxes
    backend: str
    cpu_count: int
    memory_mb: int
    disk_mb: int
    internet: bool

    @classmethod
    def of(cls, request: CreateRequest, backend: str) -> PoolKey:
        t = request.template
        try:
            st = os.stat(t.rootfs)
            rootfs = f"{st.st_dev}:{st.st_ino}"
        except OSError:
            rootfs = "missing"
        build = repr((str(t.rootfs), rootfs, t.start_cmd, t.ready_cmd, t.default_user, t.default_workdir,
                      sorted(t.env.items())))
        return cls(t.template_id, build, backend, request.cpu_count, request.memory_mb, request.disk_mb,
                   request.allow_internet_access)


@dataclass
class _Pool:
    key: PoolKey
    request: CreateRequest
    pinned: bool = False
    ready: deque[SandboxHandle] = field(default_factory=deque)
    filling: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # sandbox id → its fill
    doomed: set[str] = field(default_factory=set)  # fills given back while in flight: stopped when done
    demand: deque[float] = field(default_factory=deque)  # monotonic times of creates
    last_demand: float = 0.0
    last_take: float = -1e9
    fill_seconds: float = FIRST_FILL_GUESS
    failures: int = 0
    retry_at: float = 0.0
    hits: int = 0
    misses: int = 0


@dataclass(frozen=True)
class PoolStatus:
    """One pool as `GET /sandhive/node` reports it."""

    template_id: str
    backend: str
    cpu_count: int
    memory_mb: int
    disk_mb: int
    internet: bool
    ready: int
    starting: int
    target: int
    hits: int
    misses: int
    fill_ms: float
    pinned: bool


Boot = Callable[[CreateRequest, str], Awaitable[SandboxHandle]]
Stop = Callable[[SandboxHandle], Awaitable[None]]


class WarmPools:
    """Every warm pool of one node. Used from the node's event loop only."""

    def __init__(self, settings: PoolSettings, admission: Admission, backend: str, boot: Boot, stop: Stop,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.admission = admission
        self.backend = backend
        self._boot = boot
        self._stop = stop
        self._clock = clock
        self._pools: dict[PoolKey, _Pool] = {}
        self._wake = asyncio.Event()
        self._maintainer: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False
        self._user_starts = 0  # sandboxes being started for users (misses) right now

    # ---- the node's calls ------------------------------------------------------------------
    def start(self) -> None:
        """Begin filling (after the node reconciled what runs: leftovers of an old pool are orphans by then)."""
        if self.settings.enabled and self._maintainer is None and not self._closed:
            self._maintainer = asyncio.create_task(self._maintain(), name="sandhive-warm-pools")

    def pin(self, request: CreateRequest) -> None:
        """Keep this key's pool at its base size even without demand (e.g. `base`, warmed at server start)."""
        pool = self._pool_for(request, create=True)
        if pool is not None:
            pool.pinned = True
            self._wake.set()

    def take(self, request: CreateRequest, *, count: bool = True) -> SandboxHandle | None:
        """A ready sandbox for `request`, now, or None (a miss). `count` records the create as demand."""
        pool = self._pool_for(request, create=count)
        if pool is None:
            return None
        if count:
            now = self._clock()
            pool.demand.append(now)
            pool.last_demand = now
        self._wake.set()
        if pool.ready:
            pool.hits += 1 if count else 0
            pool.last_take = self._clock()
            return pool.ready.popleft()
        pool.misses += 1 if count else 0
        return None

    @contextlib.contextmanager
    def user_start(self) -> Iterator[None]:
        """Around a miss's start: user starts count against the fill concurrency and go first, so a burst of
        misses does not also compete with the pools' fills for the CPU (they refill once it has passed)."""
        self._user_starts += 1
        try:
            yield
        finally:
            self._user_starts -= 1
            self._wake.set()

    def evict(self, need: Resources) -> bool:
        """Give back pooled sandboxes until `need` fits the host budget; True when it does."""
        while not self.admission.fits(need):
            victim = self._victim()
            if victim is None:
                return False
            pool, sandbox_id = victim
            self.admission.release(sandbox_id)
            log.info("warm pool of %s gives back sandbox %s: the host budget is needed for a create",
                     pool.key.template_id, sandbox_id)
        self._wake.set()
        return True

    def status(self) -> list[PoolStatus]:
        now = self._clock()
        return [PoolStatus(p.key.template_id, p.key.backend, p.key.cpu_count, p.key.memory_mb, p.key.disk_mb,
                           p.key.internet, len(p.ready), len(p.filling) - len(p.doomed), self._target(p, now),
                           p.hits, p.misses, round(p.fill_seconds * 1000, 1), p.pinned)
                for p in self._pools.values()]

    async def close(self) -> None:
        """Server shutdown: stop filling, stop every pooled sandbox (handed-out ones are not ours)."""
        self._closed = True
        if self._maintainer is not None:
            self._maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintainer
        fills = [task for pool in self._pools.values() for task in pool.filling.values()]
        for task in fills:
            task.cancel()  # a cancelled start cleans up after itself (the runtime contract)
        await asyncio.gather(*fills, return_exceptions=True)
        for pool in self._pools.values():
            while pool.ready:
                self._retire(pool.ready.popleft())
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
        self._pools.clear()

    # ---- sizing ----------------------------------------------------------------------------
    def _pool_for(self, request: CreateRequest, create: bool) -> _Pool | None:
        if self._closed:
            return None
        key = PoolKey.of(request, self.backend)
        pool = self._pools.get(key)
        if pool is None and create and self.settings.base(key.template_id) > 0:
            pinned = self._drop_stale_builds(key)
            pool = self._pools[key] = _Pool(key, request, pinned=pinned)
        return pool

    def _drop_stale_builds(self, key: PoolKey) -> bool:
        """A template rebuilt under the same id: its old pools hold sandboxes of the old build. True when one of
        them was pinned for the same limits (the new build's pool is then pinned too)."""
        pinned = False
        for other in [p for k, p in self._pools.items() if k.template_id == key.template_id and k.build != key.build]:
            log.info("template %s was rebuilt: emptying the warm pools of its previous build", key.template_id)
            pinned |= other.pinned and (other.key.cpu_count, other.key.memory_mb, other.key.disk_mb,
                                        other.key.internet) == (key.cpu_count, key.memory_mb, key.disk_mb, key.internet)
            self._drain(other)
            self._pools.pop(other.key, None)
        return pinned

    def _target(self, pool: _Pool, now: float) -> int:
        base = self.settings.base(pool.key.template_id)
        if base == 0:
            return 0
        while pool.demand and pool.demand[0] < now - self.settings.window_seconds:
            pool.demand.popleft()
        if not pool.pinned and pool.last_demand and now - pool.last_demand > self.settings.idle_seconds:
            return 0
        burst, first = 0, 0
        times = list(pool.demand)
        for last, at in enumerate(times):  # the most creates within any one fill time
            while at - times[first] > pool.fill_seconds:
                first += 1
            burst = max(burst, last - first + 1)
        return min(max(self.settings.max_size, base), max(base, burst))

    # ---- the maintainer --------------------------------------------------------------------
    async def _maintain(self) -> None:
        # `while not closed`, not `while True`: on Python 3.11 `wait_for` swallows a cancel that arrives as the
        # wake event fires (a fill just ended), and `close()` would then wait for this loop forever.
        while not self._closed:
            self._wake.clear()
            pause = TICK_SECONDS
            try:
                pause = self._step()
            except Exception:  # a bug here must not end pooling for the server's life
                log.exception("warm pool maintenance failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    def _step(self) -> float:
        """Retire, drop and fill; returns how soon the next step is due."""
        now = self._clock()
        pause = TICK_SECONDS
        in_flight = sum(len(p.filling) for p in self._pools.values()) + self._user_starts
        for pool in list(self._pools.values()):
            target = self._target(pool, now)
            while len(pool.ready) > target:
                self._retire(pool.ready.popleft())
            if target == 0 and not pool.filling and not pool.pinned:
                del self._pools[pool.key]
                continue
            starting = len(pool.filling) - len(pool.doomed)
            if now - pool.last_take < self.settings.refill_delay:
                pause = min(pause, pool.last_take + self.settings.refill_delay - now)
                continue
            while (len(pool.ready) + starting < target and in_flight < self.settings.fill_concurrency
                   and now >= pool.retry_at):
                sandbox_id = new_sandbox_id()
                if not self.admission.try_reserve(sandbox_id, pool.request.resources, Kind.POOL):
                    break  # the host budget is spent: pools wait, user creates come first
                pool.filling[sandbox_id] = asyncio.create_task(self._fill(pool, sandbox_id),
                                                               name=f"sandhive-fill-{sandbox_id}")
                starting += 1
                in_flight += 1
        return max(pause, 0.01)

    async def _fill(self, pool: _Pool, sandbox_id: str) -> None:
        started = self._clock()
        try:
            handle = await self._boot(pool.request, sandbox_id)
        except BaseException as exc:
            self._fill_ended(pool, sandbox_id, keep_reservation=False)
            if isinstance(exc, asyncio.CancelledError) or not isinstance(exc, Exception):
                raise
            pool.failures += 1
            backoff = min(MAX_BACKOFF_SECONDS, 2.0 ** pool.failures)
            pool.retry_at = self._clock() + backoff
            log.warning("warm pool of %s could not start a sandbox (retrying in %.0f s): %s",
                        pool.key.template_id, backoff, exc)
            return
        doomed = sandbox_id in pool.doomed
        if doomed or self._closed or self._pools.get(pool.key) is not pool:
            self._fill_ended(pool, sandbox_id, keep_reservation=False)
            self._retire(handle, release=False)
            return
        self._fill_ended(pool, sandbox_id, keep_reservation=True)
        pool.failures = 0
        pool.fill_seconds = 0.7 * pool.fill_seconds + 0.3 * (self._clock() - started)
        pool.ready.append(handle)

    def _fill_ended(self, pool: _Pool, sandbox_id: str, keep_reservation: bool) -> None:
        pool.filling.pop(sandbox_id, None)
        if sandbox_id in pool.doomed:
            pool.doomed.discard(sandbox_id)  # its reservation was given back when it was doomed
        elif not keep_reservation:
            self.admission.release(sandbox_id)
        self._wake.set()

    # ---- giving sandboxes back -------------------------------------------------------------
    def _victim(self) -> tuple[_Pool, str] | None:
        """The pooled sandbox to give back first: a ready one of the least recently used pool, else a fill."""
        pools = sorted(self._pools.values(), key=lambda p: p.last_demand)
        for pool in pools:
            if pool.ready:
                handle = pool.ready.pop()  # the newest: the oldest ones serve the next hit
                self._retire(handle, release=False)
                return pool, handle.sandbox_id
        for pool in pools:
            for sandbox_id in pool.filling:
                if sandbox_id not in pool.doomed:
                    pool.doomed.add(sandbox_id)
                    return pool, sandbox_id
        return None

    def _drain(self, pool: _Pool) -> None:
        while pool.ready:
            self._retire(pool.ready.popleft())
        for sandbox_id in pool.filling:
            if sandbox_id not in pool.doomed:
                pool.doomed.add(sandbox_id)
                self.admission.release(sandbox_id)

    def _retire(self, handle: SandboxHandle, release: bool = True) -> None:
        """Stop a pooled sandbox in the background; its reservation is given back now."""
        if release:
            self.admission.release(handle.sandbox_id)
        task = asyncio.create_task(self._stop_quietly(handle), name=f"sandhive-retire-{handle.sandbox_id}")
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop_quietly(self, handle: SandboxHandle) -> None:
        try:
            await self._stop(handle)
        except Exception:
            log.exception("stopping pooled sandbox %s failed (a restart's reconcile removes it)", handle.sandbox_id)
