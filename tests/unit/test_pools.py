"""Warm pools on the fake runtime: sizing, refill, hand-over and eviction, with a clock the test moves.

The live counterparts (tests/api/test_pool.py, test_pool_sizing.py) prove the same against runc; these pin the
arithmetic and the order of events down in milliseconds."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sandhive.node.admission import HostFull, Kind
from sandhive.node.pool import PoolSettings
from sandhive.node.request import Identity
from tests.unit.fakes import FakeRuntime, Rig, make_node, request, settle

USER = Identity(env_vars={"A": "1"}, token_for=lambda sandbox_id: f"token-{sandbox_id}")


def ready(rig: Rig, template_id: str = "base") -> int:
    return sum(p.ready for p in rig.node.pools.status() if p.template_id == template_id)


def poke(rig: Rig) -> None:
    """Wake the pools' maintainer after the test moved the clock (real code is woken by creates and fills)."""
    rig.node.pools._wake.set()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    rig = make_node(pools=PoolSettings(size=2, max_size=5, fill_concurrency=2, refill_delay=0.15))
    yield rig
    await rig.node.close()


async def test_pinned_pool_fills_to_its_base_size_at_start(rig: Rig) -> None:
    await rig.node.start(prewarm=[request()])
    await settle(lambda: ready(rig) == 2)
    assert sorted(rig.runtime.running) == sorted(rig.runtime.started) and len(rig.runtime.started) == 2
    assert rig.node.status().pooled.memory_mb == 2 * 512  # each pooled sandbox holds a POOL reservation
    # Each fill got the template's defaults (the first /init) and one warm-up command before it was pooled.
    assert all(len(rig.envd.inits[f"fake-{i}"]) == 1 for i in rig.runtime.started)
    assert rig.envd.commands == ["true", "true"]


async def test_a_hit_hands_over_the_pooled_sandbox_then_refills_after_the_delay(rig: Rig) -> None:
    await rig.node.start(prewarm=[request()])
    await settle(lambda: ready(rig) == 2)
    pooled = set(rig.runtime.started)

    handle = await rig.node.create(request(), USER)

    assert handle.sandbox_id in pooled  # a hit: no new start
    assert len(rig.runtime.started) == 2
    owner_init = rig.envd.inits[handle.address][-1]
    assert owner_init["accessToken"] == f"token-{handle.sandbox_id}" and owner_init["envVars"] == {"A": "1"}
    assert rig.node.admission.used(Kind.POOL).memory_mb == 512  # the handed-out one is the user's now
    assert [p.hits for p in rig.node.pools.status()] == [1]

    await settle(rounds=50)
    assert len(rig.runtime.started) == 2, "a refill waits refill_delay after a hand-over"
    rig.clock.advance(0.2)
    poke(rig)
    await settle(lambda: ready(rig) == 2)
    assert len(rig.runtime.started) == 3


async def test_a_miss_starts_a_sandbox_and_creates_a_pool_for_next_time(rig: Rig) -> None:
    await rig.node.start()
    handle = await rig.node.create(request("py"), USER)
    assert rig.runtime.started[0] == handle.sandbox_id
    assert rig.envd.commands == []  # a user's start has no warm-up command
    assert [(p.template_id, p.misses) for p in rig.node.pools.status()] == [("py", 1)]
    rig.clock.advance(1)
    poke(rig)
    await settle(lambda: ready(rig, "py") == 2)


async def test_a_burst_of_creates_raises_the_target_up_to_max_size_then_it_falls_back(rig: Rig) -> None:
    await rig.node.start()
    for _ in range(7):  # seven creates within one fill time
        rig.node.pools.take(request("burst"))
    assert [p.target for p in rig.node.pools.status()] == [5]  # capped at max_size
    rig.clock.advance(61)  # past window_seconds: the burst is forgotten
    assert [p.target for p in rig.node.pools.status()] == [2]


async def test_an_unpinned_pool_idle_for_idle_seconds_is_dropped_and_its_sandboxes_stopped(rig: Rig) -> None:
    await rig.node.start()
    await rig.node.create(request("idle"), USER)
    rig.clock.advance(1)
    poke(rig)
    await settle(lambda: ready(rig, "idle") == 2)
    pooled = {i for i in rig.runtime.running if i != rig.runtime.started[0]}

    rig.clock.advance(1801)
    poke(rig)
    await settle(lambda: not rig.node.pools.status())
    await settle(lambda: pooled <= set(rig.runtime.stopped))
    assert rig.node.admission.used(Kind.POOL).memory_mb == 0


async def test_failed_fills_back_off_exponentially(rig: Rig) -> None:
    rig.runtime.fail_starts = 2  # both fills of the first step fail
    await rig.node.start(prewarm=[request()])
    await settle(lambda: rig.runtime.fail_starts == 0)
    await settle(rounds=50)
    assert rig.runtime.started == [] and rig.node.admission.used().memory_mb == 0  # failures hold nothing
    rig.clock.advance(3.9)  # two failures in a row: the retry is due 2**2 s after the last
    poke(rig)
    await settle(rounds=50)
    assert rig.runtime.started == []
    rig.clock.advance(0.2)
    poke(rig)
    await settle(lambda: ready(rig) == 2)


async def test_a_pooled_sandbox_that_fails_its_hand_over_is_stopped_and_the_next_one_used(rig: Rig) -> None:
    await rig.node.start(prewarm=[request()])
    await settle(lambda: ready(rig) == 2)
    first, second = rig.runtime.started
    rig.envd.refuse_init.add(f"fake-{first}")
    handle = await rig.node.create(request(), USER)
    assert handle.sandbox_id == second
    assert first in rig.runtime.stopped and not rig.node.admission.holds(first)


async def test_a_user_create_evicts_pooled_sandboxes_when_the_host_is_full() -> None:
    rig = make_node(pools=PoolSettings(size=3, fill_concurrency=3), memory_mb=1536)  # room for three
    try:
        await rig.node.start(prewarm=[request()])
        await settle(lambda: ready(rig) == 3)
        handle = await rig.node.create(request("other"), USER)  # a miss: a pooled sandbox must yield
        assert rig.node.admission.used(Kind.SANDBOX).memory_mb == 512
        assert rig.node.admission.used().memory_mb <= 1536
        await settle(lambda: len(rig.runtime.stopped) == 1)
        assert rig.runtime.stopped[0] != handle.sandbox_id
        await rig.node.create(request("other"), USER)
        await rig.node.create(request("other"), USER)
        with pytest.raises(HostFull, match="512 MB"):  # nothing pooled is left to give back
            await rig.node.create(request("other"), USER)
    finally:
        await rig.node.close()


async def test_close_stops_pooled_sandboxes_but_not_handed_out_ones() -> None:
    rig = make_node(pools=PoolSettings(size=2))
    await rig.node.start(prewarm=[request()])
    await settle(lambda: ready(rig) == 2)
    handle = await rig.node.create(request(), USER)
    await rig.node.close()
    assert set(rig.runtime.running) == {handle.sandbox_id}


async def test_a_rebuilt_template_drops_the_pools_of_its_old_build() -> None:
    rig = make_node(pools=PoolSettings(size=1), runtime=FakeRuntime())
    try:
        await rig.node.start(prewarm=[request()])
        await settle(lambda: ready(rig) == 1)
        old = rig.runtime.started[0]
        await rig.node.create(request(start_cmd="serve"), USER)  # the same template id, a new build
        await settle(lambda: old in rig.runtime.stopped)
        assert [p.pinned for p in rig.node.pools.status()] == [True]  # the new build inherits the pin
    finally:
        await rig.node.close()
