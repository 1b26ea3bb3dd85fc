"""`fork` with the released e2b SDK against a live server on the container backend (issue 14).

`fork(count=2)`: two independent copies of a running sandbox from one snapshot, each with its memory and files,
its own kernel entropy, its own writes; the source keeps its id and end time. Bad counts are 400s.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from e2b import Sandbox, SandboxNotFoundException

from tests.persistence.snapshot_rig import Live, counter, live_server, point_sdk, start_counting

# Python's own RNG seeded in memory before the fork: copies share that (as on E2B); the kernel's is fresh.
URANDOM = "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'"


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    yield from live_server("fork")


@pytest.fixture(autouse=True)
def sdk_env(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    point_sdk(monkeypatch, live)


def test_fork_makes_independent_copies_and_the_source_keeps_its_id_and_end(live: Live) -> None:
    source = Sandbox.create(timeout=300)
    forks: list[Sandbox] = []
    try:
        start_counting(source)
        end_before = source.get_info().end_at
        results = source.fork(count=2, timeout=120)
        at_fork = counter(source)
        assert len(results) == 2
        for result in results:
            assert isinstance(result, Sandbox), result
            forks.append(result)
        assert len({source.sandbox_id, *(f.sandbox_id for f in forks)}) == 3

        entropy = {source.commands.run(URANDOM).stdout}
        for fork in forks:
            assert at_fork - 300 <= counter(fork) <= at_fork + 300  # memory came along: no restart at 1
            assert fork.files.read("/home/user/kept") == "kept\n"
            entropy.add(fork.commands.run(URANDOM).stdout)
            assert fork.get_info().end_at != end_before  # its own timeout
        assert len(entropy) == 3, entropy

        forks[0].files.write("/home/user/only-in-first", "1")
        assert forks[0].files.exists("/home/user/only-in-first")
        assert not forks[1].files.exists("/home/user/only-in-first")
        assert not source.files.exists("/home/user/only-in-first")

        assert source.is_running() and counter(source) > at_fork
        assert source.get_info().end_at == end_before
    finally:
        for fork in forks:
            fork.kill()
        source.kill()


def test_fork_counts_outside_1_to_100_and_unknown_sandboxes_are_refused(live: Live) -> None:
    with pytest.raises(SandboxNotFoundException):
        Sandbox.fork("inosuchsandbox0000000", count=1)
    with httpx.Client(base_url=live.url, headers={"X-API-Key": live.key}, trust_env=False, timeout=60) as c:
        for count in (0, 101, -1, "two"):
            r = c.post("/sandboxes/inosuchsandbox0000000/fork", json={"count": count})
            assert r.status_code == 400 and r.json()["code"] == 400, (count, r.text)
        r = c.post("/sandboxes/inosuchsandbox0000000/fork", json={"count": 1})
        assert r.status_code == 404 and r.json()["code"] == 404
