"""Warm pools on a live `sandhive serve` (container backend), driven with the released e2b SDK: a pooled sandbox
handed to one team carries nothing of another's, pools count in the host budget, grow with demand, are stopped
with the server and are removed as orphans after a crash."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import Sandbox

from tests.api.pool_rig import e2b_env, node_status, pool_of, wait_for_pool
from tests.api.rig import Server, container_server, start_server

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]
TEAM_A, TEAM_B = "pool-a", "pool-b"


@pytest.fixture(scope="module")
def live() -> Iterator[Server]:
    with container_server("pool", TEAM_A) as server:
        try:
            yield server
        finally:
            from tests.api.rig import kill_team_sandboxes

            kill_team_sandboxes(server, server.key(TEAM_B))


def sandbox_dirs(data_dir: Path) -> set[str]:
    """Every sandbox the server's runtime has on the host (a directory is made first and removed last)."""
    root = data_dir / "sandboxes"
    return {p.name for p in root.iterdir()} if root.is_dir() else set()


def runc_ids(data_dir: Path) -> set[str]:
    out = subprocess.run(["runc", "--root", str(data_dir / "runc"), "list", "-q"], capture_output=True, text=True)
    return set(out.stdout.split())


def test_a_pooled_sandbox_handed_to_team_b_carries_nothing_of_team_a(live: Server) -> None:
    key_a, key_b = live.key(TEAM_A), live.key(TEAM_B)
    with e2b_env(live, key_a):
        Sandbox.create(timeout=60).kill()  # builds `base` on first use; from now on its pool fills
        wait_for_pool(live, key_a)
        hits = pool_of(node_status(live, key_a))["hits"]
        a = Sandbox.create(envs={"TEAM_A_SECRET": "a-secret"}, timeout=120)
        assert pool_of(node_status(live, key_a))["hits"] == hits + 1  # team A got a pooled sandbox
        a.files.write("/tmp/team-a.txt", "a's data")
        a.files.write("/home/user/team-a.txt", "a's data")
        a.commands.run("echo 'export TEAM_A_PROFILE=1' >> ~/.bashrc")
        a.commands.run("sleep 3600", background=True)
        a.commands.run("python3 -m http.server 7777", background=True)
        a.commands.run("for i in $(seq 50); do ss -ltn | grep -q :7777 && break; sleep 0.1; done; ss -ltn | "
                       "grep -q :7777")
        a_id, a_host = a.sandbox_id, a.commands.run("hostname").stdout.strip()
        assert a_host == a_id
        a.kill()
    wait_for_pool(live, key_b)
    with e2b_env(live, key_b):
        hits = pool_of(node_status(live, key_b))["hits"]
        b = Sandbox.create(timeout=120)
        try:
            assert pool_of(node_status(live, key_b))["hits"] == hits + 1  # and team B the next from the pool
            assert b.sandbox_id != a_id
            assert b.commands.run("hostname").stdout.strip() == b.sandbox_id
            assert not b.files.exists("/tmp/team-a.txt") and not b.files.exists("/home/user/team-a.txt")
            assert b.commands.run("ls -A /tmp").stdout == ""  # a fresh /tmp
            env = b.commands.run("env").stdout
            assert "TEAM_A" not in env and f"E2B_SANDBOX_ID={b.sandbox_id}" in env
            assert "TEAM_A_PROFILE" not in b.commands.run("cat ~/.bashrc").stdout
            processes = b.commands.run("ps -eo args").stdout
            assert "sleep 3600" not in processes and "http.server" not in processes
            assert [p.cmd for p in b.commands.list()] == []  # only the listing command itself ran, and ended
            assert ":7777" not in b.commands.run("ss -ltn").stdout
            assert b.commands.run("curl -s -o /dev/null -w '%{http_code}' localhost:7777 || true").stdout in ("000",
                                                                                                          "")
        finally:
            b.kill()


def test_pooled_sandboxes_hold_memory_in_the_host_budget(live: Server) -> None:
    key = live.key(TEAM_A)
    pool = wait_for_pool(live, key)
    status = node_status(live, key)
    assert status["pooledMemoryMB"] >= pool["ready"] * pool["memoryMB"] > 0
    assert status["reservedMemoryMB"] >= status["pooledMemoryMB"]
    assert status["memoryBudgetMB"] > 0 and status["cpuBudget"] > 0


def test_a_burst_of_creates_grows_the_pool(live: Server) -> None:
    key = live.key(TEAM_A)
    wait_for_pool(live, key)
    with e2b_env(live, key), concurrent.futures.ThreadPoolExecutor(6) as workers:
        burst = list(workers.map(lambda _: Sandbox.create(timeout=120), range(6)))
    try:
        pool = pool_of(node_status(live, key))
        assert pool["target"] > 2, pool  # grown toward the burst (capped), above the base size
    finally:
        for sandbox in burst:
            sandbox.kill()


def test_shutdown_stops_the_pool_and_a_crash_leaves_orphans_that_restart_removes(live: Server) -> None:
    key = live.key(TEAM_A)
    with e2b_env(live, key):
        kept = Sandbox.create(timeout=300)
    try:
        wait_for_pool(live, key)
        pooled = sandbox_dirs(live.data_dir) - {kept.sandbox_id}
        assert pooled, "the pool has sandboxes on the host"
        port = int(live.url.rsplit(":", 1)[1])

        live.stop()  # SIGTERM: a clean shutdown stops the pool's sandboxes, not the users'
        assert sandbox_dirs(live.data_dir) & pooled == set()
        assert runc_ids(live.data_dir) & pooled == set()
        assert kept.sandbox_id in runc_ids(live.data_dir)

        restarted = start_server(live.data_dir, backend="container", port=port, timeout=300)
        live.proc, live.log = restarted.proc, restarted.log
        wait_for_pool(live, key)
        pooled = sandbox_dirs(live.data_dir) - {kept.sandbox_id}
        os.kill(live.proc.pid, signal.SIGKILL)  # a crash leaves the pool's sandboxes running ...
        live.proc.wait(10)
        assert pooled <= runc_ids(live.data_dir)

        restarted = start_server(live.data_dir, backend="container", port=port, timeout=300)
        live.proc, live.log = restarted.proc, restarted.log
        left = sandbox_dirs(live.data_dir) | runc_ids(live.data_dir)
        assert left & pooled == set()  # ... and the restart removed them as orphans
        with e2b_env(live, key):
            again = Sandbox.connect(kept.sandbox_id)  # the user's sandbox was adopted, not removed
            assert again.commands.run("echo still here").stdout == "still here\n"
    finally:
        with e2b_env(live, key):
            kept.kill()


def test_pool_size_zero_disables_pools(live: Server) -> None:
    data_dir = live.data_dir.parent / "nopool"
    server = start_server(data_dir, "--pool-size", "0", "--miss-shells", "0", backend="container", timeout=300)
    try:
        key = server.key(TEAM_A)
        with e2b_env(server, key):
            sandbox = Sandbox.create(timeout=60)
            try:
                assert sandbox.commands.run("echo ok").stdout == "ok\n"
                status = node_status(server, key)
                assert status["pools"] == [] and status["pooledMemoryMB"] == 0
                assert status["reservedMemoryMB"] == 512
                assert sandbox_dirs(data_dir) == {sandbox.sandbox_id}  # nothing started ahead
            finally:
                sandbox.kill()
    finally:
        server.stop()
