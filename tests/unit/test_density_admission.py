"""Admission by real use (node/admission.py, host_memory.py): overcommitted limits, measured use with a per-start
estimate, the per-node sandbox count (pooled ones included, yielding to users) and real memory pressure — on
a fake meter, fake /proc files and a clock the test moves. The live counterpart is tests/api/test_density.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandhive.node import admission as admission_module
from sandhive.node.admission import Admission, Budget, HostFull, Kind, MemoryPressure, Resources
from sandhive.node.host_memory import HostMemory
from sandhive.node.node import Node
from sandhive.node.pool import PoolSettings
from sandhive.node.request import Identity
from tests.unit.fakes import FakeClock, FakeEnvd, FakeRuntime, request, settle

BASE = Resources(memory_mb=512, cpu_count=2)
MB = 2**20
USER = Identity(env_vars={}, token_for=lambda sandbox_id: f"token-{sandbox_id}")


class Meter:
    """Per-sandbox bytes in use, as a runtime's `memory_in_use` reads them from cgroups; counts its reads."""

    def __init__(self) -> None:
        self.use: dict[str, int] = {}
        self.reads = 0

    def __call__(self, sandbox_id: str) -> int | None:
        self.reads += 1
        return self.use.get(sandbox_id)


def overcommitted(memory_mb: int = 1024, ratio: float = 8, **fields: object) -> tuple[Admission, Meter, FakeClock]:
    meter, clock = Meter(), FakeClock()
    budget = Budget(memory_mb=memory_mb, cpus=1000, memory_overcommit=ratio, **fields)  # type: ignore[arg-type]
    return Admission(budget, meter=meter, clock=clock), meter, clock


def test_limits_may_add_up_to_the_budget_times_the_ratio_while_real_use_fits_the_budget() -> None:
    admission, meter, clock = overcommitted(memory_mb=1024, ratio=8)  # limits up to 8192 MB: 16 base sandboxes
    for i in range(10):  # starting: each counts its 64 MB estimate, whatever little it shows yet
        admission.reserve(f"s{i}", BASE)
        meter.use[f"s{i}"] = 5 * MB
    assert admission.in_use_mb() == 640
    clock.advance(admission_module.SETTLE_SECONDS + admission_module.REFRESH_SECONDS)
    for i in range(10):
        meter.use[f"s{i}"] = 20 * MB  # idle sandboxes really hold ~20 MB
    admission.refresh(force=True)
    assert admission.in_use_mb() == 200  # settled: only what they use counts
    for i in range(10, 16):
        admission.reserve(f"s{i}", BASE)
    assert admission.used().memory_mb == 16 * 512 > admission.budget.memory_mb
    with pytest.raises(HostFull, match=r"8192 MB its sandboxes' limits may add up to \(8 × the 1024 MB budget\)"):
        admission.reserve("s16", BASE)


def test_real_use_refuses_a_start_the_budget_cannot_hold() -> None:
    admission, meter, clock = overcommitted(memory_mb=1024, ratio=8)
    admission.reserve("big", BASE)
    clock.advance(admission_module.SETTLE_SECONDS + 1)
    meter.use["big"] = 1000 * MB  # it grew (within its own cgroup limit)
    admission.refresh(force=True)
    assert not admission.fits(BASE)
    with pytest.raises(HostFull, match="its sandboxes use 1000 MB of the host's 1024 MB .* needs 64 MB"):
        admission.reserve("next", BASE)
    meter.use["big"] = 900 * MB
    clock.advance(admission_module.REFRESH_SECONDS)  # re-read on the next admission, not sooner
    admission.reserve("next", BASE)


def test_a_sandbox_whose_use_never_shows_counts_its_whole_limit() -> None:
    admission, _, clock = overcommitted(memory_mb=1024, ratio=8)
    admission.reserve("unseen", BASE)
    assert admission.in_use_mb() == 64  # just started: the estimate
    clock.advance(admission_module.SETTLE_SECONDS + 1)
    assert admission.in_use_mb() == 512  # never measurable: not overcommitted
    without_meter = Admission(Budget(memory_mb=1024, cpus=100, memory_overcommit=8))
    without_meter.reserve("a", BASE)
    assert without_meter.in_use_mb() == 512


def test_ratio_one_is_the_limit_based_admission_and_reads_nothing() -> None:
    admission, meter, _ = overcommitted(memory_mb=1024, ratio=1)
    admission.reserve("a", BASE)
    admission.reserve("b", BASE)
    with pytest.raises(HostFull, match="needs 512 MB of memory and 0 MB of the host's 1024 MB"):
        admission.reserve("c", BASE)
    assert meter.reads == 0


def test_the_per_node_count_includes_pooled_sandboxes() -> None:
    admission, _, _ = overcommitted(memory_mb=100_000, max_sandboxes=3)
    admission.reserve("user", BASE)
    assert admission.try_reserve("pool-1", BASE, Kind.POOL) and admission.try_reserve("pool-2", BASE, Kind.POOL)
    assert not admission.try_reserve("pool-3", BASE, Kind.POOL)
    with pytest.raises(HostFull, match="maximum of 3 sandboxes") as refused:
        admission.reserve("user-2", BASE)
    assert refused.value.status == 503 and int(refused.value.headers["Retry-After"]) > 0  # type: ignore[index]


async def test_a_pool_yields_its_places_in_the_count_to_user_creates() -> None:
    runtime, envd, clock = FakeRuntime(), FakeEnvd(), FakeClock()
    budget = Budget(memory_mb=100_000, cpus=1000, memory_overcommit=8, max_sandboxes=3)
    node = Node(runtime, pools=PoolSettings(size=2, fill_concurrency=2), budget=budget, http=envd.client(),
                clock=clock)
    try:
        await node.start(prewarm=[request()])
        await settle(lambda: sum(p.ready for p in node.pools.status()) == 2)
        for _ in range(3):  # misses of another template: the pooled sandboxes give their places back
            await node.create(request("other"), USER)
        assert node.admission.count() == 3 and node.admission.used(Kind.POOL).memory_mb == 0
        with pytest.raises(HostFull, match="maximum of 3 sandboxes"):
            await node.create(request("other"), USER)
        assert node.status().sandboxes == 3
    finally:
        await node.close()


def write_proc(tmp_path: Path, available_kb: int, full_avg10: float) -> HostMemory:
    meminfo, pressure = tmp_path / "meminfo", tmp_path / "pressure"
    meminfo.write_text(f"MemTotal:       24683784 kB\nMemFree:        1000 kB\nMemAvailable:   {available_kb} kB\n")
    pressure.write_text(f"some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n"
                        f"full avg10={full_avg10:.2f} avg60=0.00 avg300=0.00 total=1\n")
    return HostMemory(reserve_mb=1024, meminfo=meminfo, pressure=pressure)


@pytest.mark.parametrize(("available_kb", "full_avg10", "why"), [
    (512 * 1024, 0.0, "512 MB of memory are available, under the 1024 MB kept for the host"),
    (8 * 2**20, 42.5, "stalled on memory 42.5% of the last 10 s"),
])
def test_memory_pressure_stops_admission_whatever_the_accounting_says(
        tmp_path: Path, available_kb: int, full_avg10: float, why: str) -> None:
    host = write_proc(tmp_path, available_kb, full_avg10)
    clock = FakeClock()
    admission = Admission(Budget(memory_mb=100_000, cpus=1000, memory_overcommit=8), host=host, clock=clock)
    assert admission.fits(BASE)  # the accounting has room
    assert not admission.try_reserve("pool", BASE, Kind.POOL)  # pools wait too
    with pytest.raises(MemoryPressure, match=why) as refused:
        admission.reserve("user", BASE)
    assert refused.value.status == 503 and refused.value.error_code == "memory_pressure"
    assert int(refused.value.headers["Retry-After"]) > 0  # type: ignore[index]
    write_proc(tmp_path, 8 * 2**20, 0.0)  # pressure passed
    clock.advance(admission_module.REFRESH_SECONDS)
    admission.reserve("user", BASE)


def test_no_psi_and_no_meminfo_mean_no_pressure(tmp_path: Path) -> None:
    host = HostMemory(reserve_mb=1024, meminfo=tmp_path / "none", pressure=tmp_path / "none")
    assert host.reason() is None


def test_host_defaults_admit_200_idle_two_vcpu_sandboxes_on_2_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admission_module, "host_cores", lambda: 2)
    budget = Budget.of_host(memory_mb=20_000)
    assert budget.max_sandboxes == 200 and budget.memory_overcommit == 8 and budget.reserve_mb
    assert budget.cpus >= 200 * 2
    assert budget.limits_mb >= 200 * 512
    with pytest.raises(ValueError, match="memory overcommit must be at least 1"):
        Budget.of_host(memory_mb=1000, memory_overcommit=0.5)
    with pytest.raises(ValueError, match="at least 1"):
        Budget.of_host(memory_mb=1000, max_sandboxes=0)


@pytest.mark.parametrize("v2", [False, True])
def test_working_set_is_usage_minus_inactive_page_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        v2: bool) -> None:
    from sandhive.node import cgroups

    monkeypatch.setattr(cgroups, "V1", tmp_path)
    if v2:
        (tmp_path / "cgroup.controllers").write_text("memory pids\n")
        d = tmp_path / "sandhive" / "sb1"
        d.mkdir(parents=True)
        (d / "memory.current").write_text(f"{30 * MB}\n")
        (d / "memory.stat").write_text(f"anon {20 * MB}\nfile {10 * MB}\ninactive_file {8 * MB}\n")
    else:
        d = tmp_path / "memory" / "sandhive" / "sb1"
        d.mkdir(parents=True)
        (d / "memory.usage_in_bytes").write_text(f"{30 * MB}\n")
        (d / "memory.stat").write_text(f"cache {10 * MB}\ninactive_file 1\ntotal_inactive_file {8 * MB}\n")
    reader = cgroups.CgroupReader()
    assert reader.working_set("sb1") == 22 * MB
    assert reader.working_set("gone") is None
