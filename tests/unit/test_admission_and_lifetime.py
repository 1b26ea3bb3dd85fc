"""Admission (the host budget every sandbox reserves from) and E2B's timeout rules, as plain objects."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sandhive.api.lifetime import MAX_REFRESH_SECONDS, Lifetime
from sandhive.errors import UserError
from sandhive.node.admission import Admission, Budget, HostFull, Kind, Resources
from tests.unit.fakes import EPOCH

SMALL = Resources(memory_mb=512, cpu_count=2)


def test_memory_is_never_overcommitted() -> None:
    admission = Admission(Budget(memory_mb=1024, cpus=100))
    admission.reserve("a", SMALL)
    admission.reserve("b", SMALL)
    assert not admission.fits(Resources(1, 1))
    with pytest.raises(HostFull, match="needs 512 MB of memory and 0 MB of the host's 1024 MB"):
        admission.reserve("c", SMALL)
    assert admission.shortfall(SMALL) == Resources(512, 0)
    admission.release("a")
    admission.release("a")  # twice is fine
    admission.reserve("c", SMALL)
    assert admission.used() == Resources(1024, 4)


def test_vcpus_are_a_separate_budget_with_its_own_refusal() -> None:
    admission = Admission(Budget(memory_mb=10_000, cpus=3))
    admission.reserve("a", SMALL)
    with pytest.raises(HostFull, match="needs 2 vCPUs and 1 of the host's 3 are free"):
        admission.reserve("b", SMALL)


def test_pool_reservations_are_counted_apart_until_handed_out() -> None:
    admission = Admission(Budget(memory_mb=2048, cpus=64))
    assert admission.try_reserve("p", SMALL, Kind.POOL)
    admission.reserve("u", SMALL)
    assert admission.used(Kind.POOL) == SMALL and admission.used(Kind.SANDBOX) == SMALL
    admission.hand_out("p")
    assert admission.used(Kind.POOL) == Resources(0, 0) and admission.used(Kind.SANDBOX) == Resources(1024, 4)


def test_adopt_records_a_survivor_even_over_a_shrunken_budget() -> None:
    admission = Admission(Budget(memory_mb=256, cpus=1))
    admission.adopt("old", SMALL)  # it runs: refusing to know it would overcommit silently
    assert admission.holds("old") and not admission.fits(Resources(1, 0))


def test_budget_of_host_keeps_a_reserve_and_refuses_nonsense() -> None:
    assert Budget.of_host(memory_mb=1000, cpu_overcommit=2).memory_mb == 1000
    with pytest.raises(ValueError):
        Budget.of_host(memory_mb=0)
    with pytest.raises(ValueError):
        Budget.of_host(memory_mb=1000, cpu_overcommit=0)


# ---- timeouts and the maximum lifetime --------------------------------------------------------------------

@pytest.mark.parametrize(("max_lifetime", "seconds", "message"), [
    (None, 0, "Timeout must be greater than 0"),
    (None, -5, "Timeout must be greater than 0"),
    (3600, 3601, "Timeout cannot be greater than 1 hour"),
    (7200, 7201, "Timeout cannot be greater than 2 hours"),
    (90, 91, "Timeout cannot be greater than 90 seconds"),
    (None, 2**31, "Timeout cannot be greater than 2147483647 seconds"),
])
def test_bad_timeouts_are_400_in_e2bs_words(max_lifetime: int | None, seconds: int, message: str) -> None:
    with pytest.raises(UserError) as info:
        Lifetime(max_lifetime).check_timeout(seconds)
    assert (info.value.status, info.value.message) == (400, message)


def test_a_deadline_never_passes_the_maximum_lifetime() -> None:
    lifetime = Lifetime(3600)
    started = EPOCH
    assert lifetime.deadline(started, started, 300) == started + timedelta(seconds=300)
    later = started + timedelta(minutes=50)
    assert lifetime.deadline(started, later, 3600) == started + timedelta(hours=1)  # capped
    assert Lifetime(None).deadline(started, later, 3600) == later + timedelta(hours=1)


def test_refresh_durations() -> None:
    Lifetime.check_refresh(0)
    Lifetime.check_refresh(MAX_REFRESH_SECONDS)
    for bad in (-1, MAX_REFRESH_SECONDS + 1):
        with pytest.raises(UserError, match="between 0 and 3600"):
            Lifetime.check_refresh(bad)
