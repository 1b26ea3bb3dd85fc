"""The node's metrics history, the team series and the plain histograms behind /metrics, with a fake reader and
a clock the test moves (no sandboxes, no sleeping)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sandhive.api.metrics_schemas import TeamMetricName
from sandhive.api.team_metrics import TeamSeries
from sandhive.cli.metrics_listen import parse_address
from sandhive.node.metrics_history import MetricsHistory
from sandhive.node.runtime import ResourceUsage, SandboxHandle
from sandhive.node.telemetry import Histogram


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def usage(mem: int) -> ResourceUsage:
    return ResourceUsage(cpu_count=1, cpu_used_pct=5.0, mem_used=mem, mem_total=2**30, mem_cache=0, disk_used=1,
                         disk_total=2, cpu_seconds=mem / 10)


def handle(sandbox_id: str) -> SandboxHandle:
    return SandboxHandle(sandbox_id, "fake", address="10.0.0.1")


async def test_history_keeps_a_bounded_window_per_sandbox_and_drops_it_at_the_end() -> None:
    clock, reads = Clock(), {"a": 0}

    async def read(h: SandboxHandle) -> ResourceUsage:
        if h.sandbox_id == "gone":
            raise RuntimeError("its cgroup is gone")
        reads["a"] += 1
        return usage(reads["a"])

    history = MetricsHistory(read, interval=5.0, keep_seconds=20.0, clock=clock)
    history.track(handle("a"))
    history.track(handle("gone"))
    for _ in range(6):
        await history.sample_once()
        clock.now += 5
    samples = history.samples("a")
    assert [s.usage.mem_used for s in samples] == [3, 4, 5, 6]  # 20 s at 5 s: the last four
    assert [s.time for s in samples] == [1010.0, 1015.0, 1020.0, 1025.0]
    assert [s.time for s in history.samples("a", start=1015, end=1020)] == [1015.0, 1020.0]
    assert history.samples("gone") == [] and history.latest("gone") is None  # failed reads are skipped
    history.untrack("a")  # paused: no new samples, the old ones stay
    await history.sample_once()
    assert history.latest("a") is not None and history.latest("a").usage.mem_used == 6  # type: ignore[union-attr]
    history.forget("a")
    assert history.samples("a") == [] and history.tracked() == ["gone"]


async def test_first_sample_only_for_tracked_sandboxes_without_one() -> None:
    clock, calls = Clock(), []

    async def read(h: SandboxHandle) -> ResourceUsage:
        calls.append(h.sandbox_id)
        return usage(1)

    history = MetricsHistory(read, clock=clock)
    history.track(handle("a"))
    await history.first_sample(["a", "untracked"])
    await history.first_sample(["a"])  # it has one now: not read again
    assert calls == ["a"] and len(history.samples("a")) == 1


def test_team_series_counts_concurrency_and_start_rate() -> None:
    clock = Clock()
    running: dict[str, int] = {"t1": 1}
    started: dict[str, int] = {"t1": 1}
    series = TeamSeries(lambda: running, lambda: started, interval=5.0, keep_seconds=3600, clock=clock)
    series.sample_once()
    clock.now += 5
    running["t1"], started["t1"] = 3, 11  # ten creates in 5 s, three still running
    series.sample_once()
    clock.now += 5
    running["t1"] = 0
    series.sample_once()
    points = series.points("t1")
    assert [p.concurrent for p in points] == [1, 3, 0]
    assert [p.start_rate for p in points] == [pytest.approx(0.2), pytest.approx(2.0), 0.0]
    assert max(points, key=lambda p: p.value(TeamMetricName.concurrent_sandboxes)).time == 1005.0
    assert series.points("t1", start=1005, end=1005) == [points[1]]
    assert series.points("nobody") == []


def test_histogram_is_cumulative_as_prometheus_reads_it() -> None:
    hist = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 7.0):
        hist.observe(value)
    assert hist.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert hist.count == 4 and hist.total == pytest.approx(7.65)


def test_prometheus_page_of_an_app_parses(tmp_path: Path) -> None:
    """The collector on an app without a backend: every family is there, and two apps do not clash."""
    import asyncio

    from sandhive.api import Settings, create_app
    from sandhive.store import Store

    pages = []
    for n in range(2):
        data_dir = tmp_path / f"d{n}"
        data_dir.mkdir()
        store = Store.open(data_dir)
        store.migrate()
        store.close()
        app = create_app(Settings(data_dir=data_dir), node=None, templates=None)
        pages.append(asyncio.run(app.state.prometheus.render()).decode())
    names = {f.name for f in text_string_to_metric_families(pages[0])}
    assert {"sandhive_sandboxes", "sandhive_sandbox_create_seconds", "sandhive_admission_rejections",
            "sandhive_template_build_seconds", "sandhive_egress_denied", "sandhive_pool_ready"} <= names
    assert pages[0] == pages[1]


@pytest.mark.parametrize(("value", "expected"), [("127.0.0.1:9464", ("127.0.0.1", 9464)),
                                                 (":9464", ("0.0.0.0", 9464)), ("[::1]:80", ("::1", 80))])
def test_metrics_listen_address(value: str, expected: tuple[str, int]) -> None:
    assert parse_address(value) == expected


@pytest.mark.parametrize("value", ["9464", "host:", "host:99999", "host:x"])
def test_metrics_listen_address_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_address(value)
