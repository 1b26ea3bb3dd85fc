"""End to end: the released e2b SDK, unchanged, against `sandhive serve` with each OCI backend (container, gvisor).

E2B_API_URL and E2B_SANDBOX_URL both point at the server: the API answers the control-plane calls and
its edge proxy carries envd traffic to the sandboxes. Skipped (with the reason printed) where the
container backend or the template registry is not installed, or without root.
"""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from e2b import Sandbox, SandboxQuery
from e2b.exceptions import SandboxException, SandboxNotFoundException

from tests.api.rig import BACKENDS, Server, container_server, start_server
from tests.helpers import wait_until

# The first test also waits for the server to build the system image and the `base` template if needed.
pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]
TEAM = "e2e"


@pytest.fixture(scope="module", params=BACKENDS)
def live(request: pytest.FixtureRequest) -> Iterator[Server]:
    with container_server("e2e", TEAM, backend=request.param) as server:
        yield server


@pytest.fixture(scope="module")
def key(live: Server) -> str:
    return live.key(TEAM)


@pytest.fixture(scope="module", autouse=True)
def e2b_env(live: Server, key: str) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("E2B_API_URL", live.url)
        mp.setenv("E2B_SANDBOX_URL", live.url)
        mp.setenv("E2B_API_KEY", key)
        mp.delenv("E2B_DEBUG", raising=False)
        mp.delenv("E2B_DOMAIN", raising=False)
        yield


@pytest.fixture()
def sbx() -> Iterator[Sandbox]:
    sandbox = Sandbox.create(timeout=120)
    try:
        yield sandbox
    finally:
        sandbox.kill()


def test_create_run_and_files(sbx: Sandbox) -> None:
    assert sbx.sandbox_id.startswith("i") and len(sbx.sandbox_id) == 21
    result = sbx.commands.run("echo hello from $(whoami)")
    assert result.exit_code == 0 and result.stdout == "hello from user\n"
    sbx.files.write("/tmp/hello.txt", "This is inside the sandbox.")
    assert sbx.files.read("/tmp/hello.txt") == "This is inside the sandbox."


def test_env_vars_and_metadata_reach_the_sandbox() -> None:
    sandbox = Sandbox.create(envs={"GREETING": "hi there"}, metadata={"owner": "e2e"}, timeout=60)
    try:
        assert sandbox.commands.run("echo $GREETING").stdout == "hi there\n"
        assert sandbox.get_info().metadata == {"owner": "e2e"}
    finally:
        sandbox.kill()


def test_connect_and_get_info(sbx: Sandbox) -> None:
    again = Sandbox.connect(sbx.sandbox_id)
    assert again.commands.run("echo connected").stdout == "connected\n"
    info = sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id and info.state == "running"
    assert info.cpu_count >= 1 and info.memory_mb > 0 and info.end_at > info.started_at


def test_set_timeout_and_metrics(sbx: Sandbox) -> None:
    before = sbx.get_info().end_at
    sbx.set_timeout(1800)
    assert sbx.get_info().end_at > before + timedelta(minutes=20)
    metrics = sbx.get_metrics()
    assert len(metrics) >= 1  # sampled at once, then every 5 s (node/metrics_history.py)
    m = metrics[0]
    assert m.cpu_count >= 1 and m.cpu_used_pct >= 0 and 0 < m.mem_used <= m.mem_total and m.disk_total > 0


def test_kill(sbx: Sandbox) -> None:
    assert sbx.kill() is True
    assert Sandbox.kill(sbx.sandbox_id) is False
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(sbx.sandbox_id)


def test_list_with_metadata_filter_and_paging() -> None:
    run = uuid.uuid4().hex[:8]
    with concurrent.futures.ThreadPoolExecutor(5) as pool:  # five creates at once
        sandboxes = list(pool.map(lambda i: Sandbox.create(metadata={"run": run, "i": str(i)}, timeout=120), range(5)))
    try:
        paginator = Sandbox.list(query=SandboxQuery(metadata={"run": run}), limit=2)
        pages = []
        while paginator.has_next:
            pages.append(paginator.next_items())
        assert [len(p) for p in pages] == [2, 2, 1]
        assert {s.sandbox_id for p in pages for s in p} == {s.sandbox_id for s in sandboxes}
        assert all(s.metadata["run"] == run for p in pages for s in p)
    finally:
        for sandbox in sandboxes:
            sandbox.kill()


def test_other_team_gets_404(live: Server, sbx: Sandbox) -> None:
    other = live.key("someone-else")
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(sbx.sandbox_id, api_key=other)
    assert Sandbox.kill(sbx.sandbox_id, api_key=other) is False
    with pytest.raises(SandboxException):
        Sandbox.connect(sbx.sandbox_id, api_key=other)
    assert sbx.commands.run("true").exit_code == 0  # still alive


def test_expires_at_timeout() -> None:
    sandbox = Sandbox.create(timeout=3)

    def gone() -> bool:
        try:
            Sandbox.get_info(sandbox.sandbox_id)
        except SandboxNotFoundException:
            return True
        return False

    # Not `not is_running()`: that is also false while envd's health check is merely slow under load.
    wait_until(gone, 15, "the sandbox to end at its 3 s timeout", interval=0.2)
    assert not sandbox.is_running()


def test_unknown_template_is_404() -> None:
    with pytest.raises(SandboxException, match="template 'no-such-template' not found"):
        Sandbox.create("no-such-template")


def test_idempotent_create(live: Server, key: str) -> None:
    body = {"templateID": "base", "metadata": {"idem": "1"}, "timeout": 60}
    with live.client(key) as c:
        first = c.post("/v2/sandboxes", json=body, headers={"Idempotency-Key": "e2e-idem-1"})
        again = c.post("/v2/sandboxes", json=body, headers={"Idempotency-Key": "e2e-idem-1"})
        other = c.post("/v2/sandboxes", json={**body, "timeout": 61}, headers={"Idempotency-Key": "e2e-idem-1"})
        try:
            assert first.status_code == again.status_code == 201
            assert first.json() == again.json()
            assert other.status_code == 409 and other.json()["error_code"] == "idempotency_request_mismatch"
            listed = c.get("/v2/sandboxes", params={"metadata": "idem=1"}).json()
            assert [s["sandboxID"] for s in listed] == [first.json()["sandboxID"]]
        finally:
            c.delete(f"/sandboxes/{first.json()['sandboxID']}")


def test_sandboxes_survive_a_server_restart(live: Server) -> None:
    sandbox = Sandbox.create(timeout=300)
    try:
        live.stop()
        restarted = start_server(live.data_dir, backend=live.backend, port=int(live.url.rsplit(":", 1)[1]),
                                 timeout=900)
        live.proc, live.log = restarted.proc, restarted.log
        again = Sandbox.connect(sandbox.sandbox_id)
        assert again.commands.run("echo still here").stdout == "still here\n"
        assert httpx.get(f"{live.url}/health", trust_env=False).json()["backend"] == live.backend
    finally:
        Sandbox.kill(sandbox.sandbox_id)
