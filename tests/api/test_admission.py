"""Admission control on a live `sandhive serve`: a small configured host budget (3 sandboxes of 512 MB), a warm
pool of 1 and a team limit of 2. A team over its limit gets 429, a create that does not fit the host gets 503,
both with Retry-After and in E2B's error shape; pooled sandboxes give their memory back before a user's create
is refused, and never take it from users."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from e2b import Sandbox
from e2b.exceptions import ServiceBusyException

from tests.api.pool_rig import e2b_env, node_status, pool_of, wait_for_pool
from tests.api.rig import Server, container_server, kill_team_sandboxes

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]
TEAM_A, TEAM_B = "adm-a", "adm-b"
# Pools and the budget alone: no warm shell (they reserve from the budget too; tests/hostile/test_shells.py).
ARGS = ("--memory-budget", "1536", "--memory-overcommit", "1", "--pool-size", "1", "--max-sandboxes-per-team", "2",
        "--miss-shells", "0")


@pytest.fixture(scope="module")
def live() -> Iterator[Server]:
    with container_server("admission", TEAM_A, *ARGS) as server:
        try:
            yield server
        finally:
            kill_team_sandboxes(server, server.key(TEAM_B))


def create(server: Server, key: str, wait: float = 30.0, **body: object) -> httpx.Response:
    with server.client(key, timeout=wait) as c:
        return c.post("/v2/sandboxes", json={"templateID": "base", "timeout": 120, **body})


def test_refusals_are_e2b_shaped_and_pools_yield_to_users(live: Server) -> None:
    key_a, key_b = live.key(TEAM_A), live.key(TEAM_B)
    # Builds `base` on first use: seconds from the shared tree cache, but over 30 s on a loaded 2-core CI host.
    a1 = create(live, key_a, wait=300.0)
    assert a1.status_code == 201, a1.text
    wait_for_pool(live, key_a)  # the pool of `base` (with internet) holds 1 of the 3 places
    a2 = create(live, key_a, allow_internet_access=False)  # another pool key: a miss, and the budget is now spent
    assert a2.status_code == 201, a2.text
    status = node_status(live, key_a)
    assert status["reservedMemoryMB"] == 1536 and status["pooledMemoryMB"] == 512

    over = create(live, key_a)  # team A has its 2 sandboxes
    assert over.status_code == 429
    assert over.json()["code"] == 429 and "limit of 2 running sandboxes" in over.json()["message"]
    assert int(over.headers["Retry-After"]) > 0

    b1 = create(live, key_b, allow_internet_access=False)  # fits only if the pooled sandbox gives its place back
    assert b1.status_code == 201, b1.text
    status = node_status(live, key_b)
    assert status["reservedMemoryMB"] == 1536 and status["pooledMemoryMB"] == 0
    assert pool_of(status)["ready"] == 0

    full = create(live, key_b, allow_internet_access=False)  # team B is under its limit, the host is not
    assert full.status_code == 503
    body = full.json()
    assert body["code"] == 503 and body["message"].startswith("Host is full") and "512 MB" in body["message"]
    assert int(full.headers["Retry-After"]) > 0
    with e2b_env(live, key_b), pytest.raises(ServiceBusyException):
        Sandbox.create(timeout=60, retries=0)

    time.sleep(1.5)  # the pools keep trying to fill; users' sandboxes keep their places
    status = node_status(live, key_b)
    assert status["reservedMemoryMB"] == 1536 and status["pooledMemoryMB"] == 0

    with live.client(key_a) as c:
        assert c.delete(f"/sandboxes/{a1.json()['sandboxID']}").status_code == 204
    with e2b_env(live, key_b):
        b2 = Sandbox.create(timeout=60)  # a place is free again (a refilling pool yields it if it got there first)
        assert b2.commands.run("echo admitted").stdout == "admitted\n"
        b2.kill()
