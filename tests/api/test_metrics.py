"""Metrics end to end on a live `sandhive serve` (container backend): the node's sampled history through the released
e2b SDK's `get_metrics`, the batch route through the SDK's generated client, team metrics, and Prometheus' /metrics
(admin key on the API port, no key on `--metrics-listen`).

The server samples every METRICS_INTERVAL seconds (`--metrics-interval`), so waiting for a few samples is quick;
every wait is on a condition. One backend only: sampling is the node's, the same for every OCI backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from e2b import Sandbox
from e2b.api.client.api.sandboxes import get_sandboxes_metrics
from e2b.connection_config import ConnectionConfig
from e2b.sandbox_sync.paginator import get_api_client
from prometheus_client.parser import text_string_to_metric_families

from tests.api.rig import Server, container_server, create_key
from tests.helpers import free_port, wait_until

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]
TEAM = "metrics"
METRICS_INTERVAL = 1.0
METRIC_NAMES = ("sandhive_sandboxes", "sandhive_sandbox_create_seconds", "sandhive_sandbox_cpu_seconds",
                "sandhive_sandbox_memory_bytes", "sandhive_sandbox_disk_bytes", "sandhive_pool_ready",
                "sandhive_admission_rejections", "sandhive_template_build_seconds", "sandhive_egress_denied")


@pytest.fixture(scope="module")
def scrape_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def live(scrape_port: int) -> Iterator[Server]:
    with container_server("metrics", TEAM, "--metrics-interval", str(METRICS_INTERVAL), "--pool-size", "1",
                          "--metrics-listen", f"127.0.0.1:{scrape_port}") as server:
        yield server


@pytest.fixture(scope="module")
def key(live: Server) -> str:
    return live.key(TEAM)


@pytest.fixture(scope="module")
def admin(live: Server) -> str:
    return create_key(live.data_dir, "metrics-operator", "--admin")


@pytest.fixture(scope="module", autouse=True)
def e2b_env(live: Server, key: str) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("E2B_API_URL", live.url)
        mp.setenv("E2B_SANDBOX_URL", live.url)
        mp.setenv("E2B_API_KEY", key)
        mp.delenv("E2B_DEBUG", raising=False)
        mp.delenv("E2B_DOMAIN", raising=False)
        yield


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Sandbox, Sandbox]]:
    """Two sandboxes of the team, alive for the module."""
    a = Sandbox.create(timeout=300)
    try:
        b = Sandbox.create(timeout=300)
        try:
            yield a, b
        finally:
            b.kill()
    finally:
        a.kill()


def test_history_holds_samples_spaced_by_the_interval(pair: tuple[Sandbox, Sandbox]) -> None:
    sbx = pair[0]
    sbx.commands.run("head -c 20000000 /dev/urandom | sha256sum")  # some CPU to show

    def four() -> list | None:
        found = sbx.get_metrics()
        return found if len(found) >= 4 else None

    samples = wait_until(four, 60, "four samples of the sandbox's metrics")
    times = [m.timestamp for m in samples]
    assert times == sorted(times)
    gaps = [(b - a).total_seconds() for a, b in zip(times[1:], times[2:], strict=False)]  # the first is on demand
    assert gaps and all(g >= METRICS_INTERVAL * 0.95 for g in gaps), gaps
    m = samples[-1]
    assert m.cpu_count >= 1 and 0 <= m.cpu_used_pct <= 100 and 0 < m.mem_used <= m.mem_total
    assert 0 < m.disk_used <= m.disk_total
    # A window: only the samples inside it (bounds in whole seconds, inclusive).
    middle = samples[len(samples) // 2].timestamp.replace(microsecond=0)
    later = sbx.get_metrics(start=middle)
    assert later and all(s.timestamp >= middle for s in later)
    earlier = Sandbox.get_metrics(sbx.sandbox_id, end=middle)
    assert earlier and all(s.timestamp < middle + timedelta(seconds=1) for s in earlier)
    assert sbx.get_metrics(start=datetime.now(UTC) + timedelta(hours=1)) == []


def test_batch_metrics_of_several_sandboxes_in_one_call(pair: tuple[Sandbox, Sandbox]) -> None:
    ids = [s.sandbox_id for s in pair]
    with get_api_client(ConnectionConfig()) as client:
        res = get_sandboxes_metrics.sync_detailed(client=client, sandbox_ids=[*ids, "inosuchsandbox0000000"])
    assert res.status_code == 200, res.content
    assert res.parsed is not None
    found = res.parsed.sandboxes
    assert set(found) == set(ids)  # the unknown id is absent
    for metric in found.values():
        assert metric["memTotal"] > 0 and metric["cpuCount"] >= 1 and metric["timestampUnix"] > 0


def test_batch_metrics_bounds(live: Server, key: str) -> None:
    with live.client(key) as c:
        too_many = ",".join(f"i{n:020d}" for n in range(101))
        assert c.get("/sandboxes/metrics", params={"sandbox_ids": too_many}).status_code == 400
        assert c.get("/sandboxes/metrics", params={"sandbox_ids": ","}).status_code == 400
        assert c.get("/sandboxes/metrics").status_code == 400  # E2B: sandbox_ids is required
    assert httpx.get(f"{live.url}/sandboxes/metrics", params={"sandbox_ids": "a"}).status_code == 401


def test_team_metrics_count_concurrent_sandboxes_and_starts(live: Server, key: str,
                                                            pair: tuple[Sandbox, Sandbox]) -> None:
    team = live.store.authenticate(key)
    with live.client(key) as c:
        def two_running() -> list[dict] | None:
            points = c.get(f"/teams/{team}/metrics").json()
            return points if any(p["concurrentSandboxes"] >= 2 for p in points) else None

        points = wait_until(two_running, 60, "a team metrics point with both sandboxes")
        assert {"timestamp", "timestampUnix", "concurrentSandboxes", "sandboxStartRate"} <= set(points[0])
        assert any(p["sandboxStartRate"] > 0 for p in points)  # the pair's creates
        top = c.get(f"/teams/{team}/metrics/max", params={"metric": "concurrent_sandboxes"}).json()
        assert top["value"] >= 2 and top["timestampUnix"] >= points[0]["timestampUnix"]
        rate = c.get(f"/teams/{team}/metrics/max", params={"metric": "sandbox_start_rate"}).json()
        assert rate["value"] > 0
        last = points[-1]["timestampUnix"]
        window = c.get(f"/teams/{team}/metrics", params={"start": last, "end": last}).json()
        assert window and all(p["timestampUnix"] == last for p in window)
        assert c.get(f"/teams/{team}/metrics", params={"start": 10, "end": 5}).status_code == 400
        assert c.get(f"/teams/{team}/metrics/max").status_code == 400  # `metric` is required


def _scrape(text: str) -> dict[str, list]:
    """Family name → its samples, as Prometheus' own parser reads the page."""
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def _running(families: dict[str, list]) -> float:
    return sum(s.value for s in families["sandhive_sandboxes"] if s.labels["state"] == "running")


def _creates(families: dict[str, list]) -> float:
    return sum(s.value for s in families["sandhive_sandbox_create_seconds"] if s.name.endswith("_count"))


def test_prometheus_metrics_move_when_sandboxes_come_and_go(live: Server, admin: str, key: str) -> None:
    with live.client(admin) as ops:
        def scrape() -> dict[str, list]:
            res = ops.get("/metrics")
            assert res.status_code == 200 and res.headers["content-type"].startswith("text/plain")
            return _scrape(res.text)

        before = scrape()
        assert set(METRIC_NAMES) <= set(before), set(METRIC_NAMES) - set(before)
        sbx = Sandbox.create(timeout=120)
        try:
            after = scrape()
            assert _running(after) == _running(before) + 1
            assert _creates(after) == _creates(before) + 1
            node = {s.labels["node"] for s in after["sandhive_sandboxes"]}
            assert node and all(node)

            def usage_of_sandbox() -> dict[str, list] | None:
                families = scrape()
                mine = [s for s in families["sandhive_sandbox_memory_bytes"]
                        if s.labels["sandbox"] == sbx.sandbox_id]
                return families if mine and mine[0].value > 0 else None

            families = wait_until(usage_of_sandbox, 60, "the sandbox's memory in /metrics")
            team = live.store.authenticate(key)
            cpu = [s for s in families["sandhive_sandbox_cpu_seconds"] if s.labels.get("sandbox") == sbx.sandbox_id]
            assert cpu and cpu[0].name == "sandhive_sandbox_cpu_seconds_total" and cpu[0].labels["team"] == team
            disk = [s for s in families["sandhive_sandbox_disk_bytes"] if s.labels["sandbox"] == sbx.sandbox_id]
            assert disk and disk[0].value > 0 and disk[0].labels["template"]
            assert {s.labels["reason"] for s in families["sandhive_admission_rejections"]} >= {"host_full"}
        finally:
            sbx.kill()
        gone = scrape()
        assert _running(gone) == _running(after) - 1
        assert not [s for s in gone["sandhive_sandbox_memory_bytes"] if s.labels["sandbox"] == sbx.sandbox_id]


def test_metrics_page_needs_an_admin_key(live: Server, key: str) -> None:
    with live.client(key) as c:
        res = c.get("/metrics")
    assert res.status_code == 403 and res.json()["code"] == 403
    assert httpx.get(f"{live.url}/metrics").status_code == 401


def test_metrics_listener_answers_without_a_key(scrape_port: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{scrape_port}", trust_env=False, timeout=30) as c:
        res = c.get("/metrics")
        assert res.status_code == 200
        assert set(METRIC_NAMES) <= set(_scrape(res.text))
        assert c.get("/sandboxes").status_code == 404  # nothing but /metrics on it
