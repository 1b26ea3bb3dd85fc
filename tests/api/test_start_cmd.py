"""A template's start command runs in every new sandbox before it is handed out, and the sandbox is handed out only
once the ready command passes — on a pool miss and on a pool hit (where it happened at fill time).

Templates here are made by hand (`base`'s template.json with a start and a ready command) on a live
`sandhive serve` with the container backend, and driven with the released e2b SDK. The deadline case runs
on a node directly (a short deadline; the server's is 60 s).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox
from e2b.exceptions import SandboxException

from sandhive.node.container import ContainerRuntime
from sandhive.node.node import Node
from sandhive.node.request import CreateRequest, Identity
from sandhive.node.runtime import TemplateImage
from sandhive.node.startup import ReadyPolicy, StartCommandFailed
from tests.api.pool_rig import e2b_env, make_template, node_status, pool_of, wait_for_pool
from tests.api.rig import Server, container_server

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]
TEAM = "startcmd"
WEB = dict(start_cmd="python3 -m http.server 8000", ready_cmd="curl -sf localhost:8000")


@pytest.fixture(scope="module")
def live() -> Iterator[Server]:
    with container_server("startcmd", TEAM) as server:
        key = server.key(TEAM)
        with e2b_env(server, key):
            Sandbox.create(timeout=60).kill()  # builds `base`, which the hand-made templates share
            make_template(server.data_dir, "web", **WEB)
            make_template(server.data_dir, "webfails", start_cmd="echo no server here >&2; exit 3",
                          ready_cmd="curl -sf localhost:8000")
            yield server


@pytest.fixture(scope="module")
def key(live: Server) -> str:
    return live.key(TEAM)


@pytest.fixture(autouse=True)
def sdk_env(live: Server, key: str) -> Iterator[None]:
    with e2b_env(live, key):
        yield


def through_proxy(live: Server, host: str) -> httpx.Response:
    """GET http://<host>/ by connecting to the server with that Host header (Python does not resolve
    `*.localhost` to loopback)."""
    port = live.url.rsplit(":", 1)[1]
    assert host.endswith(f":{port}")
    return httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": host}, trust_env=False, timeout=10)


def check_web_sandbox(live: Server, sandbox: Sandbox) -> None:
    # The first command in the new sandbox already gets an answer from the start command's server.
    first = sandbox.commands.run("curl -sf localhost:8000 >/dev/null && echo answered")
    assert first.stdout == "answered\n"
    started = [p for p in sandbox.commands.list() if p.tag == "start_cmd"]
    assert len(started) == 1 and "http.server 8000" in " ".join([started[0].cmd, *started[0].args])
    pid = started[0].pid
    facts = sandbox.commands.run(f"ps -o user= -p {pid}; readlink /proc/{pid}/cwd; "
                                 f"tr '\\0' '\\n' < /proc/{pid}/environ | grep -c '^LANG=C.UTF-8$'")
    assert facts.stdout.split() == ["user", "/home/user", "1"]  # template user, workdir and env
    host = sandbox.get_host(8000)
    assert host.startswith(f"8000-{sandbox.sandbox_id}.")
    answer = through_proxy(live, host)
    assert answer.status_code == 200 and "Directory listing" in answer.text


def test_start_command_runs_and_is_ready_on_a_pool_miss(live: Server, key: str) -> None:
    before = pool_of(node_status(live, key), "web")
    assert before is None  # nothing asked for `web` yet: this create starts its sandbox on the request path
    sandbox = Sandbox.create("web", timeout=120)
    try:
        assert pool_of(node_status(live, key), "web")["misses"] == 1
        check_web_sandbox(live, sandbox)
    finally:
        sandbox.kill()


def test_start_command_already_runs_in_a_pool_hit(live: Server, key: str) -> None:
    pool = wait_for_pool(live, key, "web")
    sandbox = Sandbox.create("web", timeout=120)
    try:
        assert pool_of(node_status(live, key), "web")["hits"] == pool["hits"] + 1
        check_web_sandbox(live, sandbox)
        # The start command's process and its server belong to this sandbox alone.
        assert "http.server" in sandbox.commands.run("ps -eo args").stdout
    finally:
        sandbox.kill()


def test_a_start_command_that_fails_is_a_clear_error(live: Server) -> None:
    started = time.monotonic()
    with pytest.raises(SandboxException) as failure:
        Sandbox.create("webfails", timeout=60, retries=0)
    message = str(failure.value)
    assert "start command" in message and "exited with code 3" in message and "no server here" in message
    assert time.monotonic() - started < 30  # it failed fast, not at the ready deadline


def _busybox(tmp: Path) -> TemplateImage:
    from tests.node.conftest import make_busybox_rootfs

    make_busybox_rootfs(tmp / "rootfs")
    return TemplateImage("busyready", tmp / "rootfs", default_user="root", default_workdir="/root",
                         start_cmd="sleep 300", ready_cmd="test -e /tmp/never")


def test_a_ready_command_that_never_passes_fails_at_the_deadline_and_leaves_nothing(live: Server) -> None:
    data_dir = live.data_dir.parent / "node-deadline"
    data_dir.mkdir()
    data_dir.chmod(0o711)
    template = _busybox(data_dir)

    async def scenario() -> None:
        runtime = ContainerRuntime(data_dir)
        await runtime.prepare()
        node = Node(runtime, ready=ReadyPolicy(deadline=2.0))
        try:
            started = time.monotonic()
            with pytest.raises(StartCommandFailed) as failure:
                await node.create(CreateRequest.of(template), Identity(default_user="root"))
            assert 2.0 <= time.monotonic() - started < 20
            assert "`test -e /tmp/never` did not pass within 2 s" in str(failure.value)
            assert await runtime.running_ids() == set()  # the sandbox was stopped and removed
            assert node.status().reserved.memory_mb == 0
        finally:
            await node.close()
            await runtime.close()

    asyncio.run(scenario())
