"""User errors reach the client as they are; anything else is a generic 500 naming an id that the log has.

Two levels, no root and no server: a tiny app with the API's error handling (every kind of error the API can
see), and the real app (`create_app`) over a node whose runtime fails to start a sandbox the way runc does,
quoting host paths.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sandhive.api.app import create_app
from sandhive.api.errors import InternalErrors, install_error_handlers
from sandhive.api.settings import Settings
from sandhive.errors import UserError
from sandhive.node import oci_runtime
from sandhive.node.admission import Budget, HostBusy, HostFull
from sandhive.node.backends import BackendMismatch
from sandhive.node.errors import BackendError
from sandhive.node.node import Node
from sandhive.node.pool import PoolSettings
from sandhive.node.runtime import Persistence, ResourceUsage, SandboxHandle, SandboxSpec
from sandhive.node.startup import StartCommandFailed
from sandhive.store import Store
from sandhive.templates.info import TemplateInfo
from sandhive.templates.layout import template_dir
from sandhive.templates.registry import TemplateRegistry

GENERIC = re.compile(r"internal error \(id ([0-9a-f]{8})\); see the server log")
HOST_PATH = "/var/lib/sandhive-secret/sandboxes/abc/rootfs"


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(InternalErrors)
    failures: dict[str, Exception] = {
        "user": UserError(409, "name taken: choose another", "taken"),
        "host-full": HostFull("the host's memory budget is spent"),
        "host-busy": HostBusy("The host is too busy: sandbox abc did not start within 60 s. Try again shortly."),
        "mismatch": BackendMismatch("template 't' asks for the gvisor backend, but this server runs container"),
        "start-cmd": StartCommandFailed("template t: the start command `srv` exited with code 3"),
        "backend": BackendError(f"runc could not start sandbox abc: mount {HOST_PATH}: no such file"),
        "bug": KeyError(HOST_PATH),
    }
    for name, failure in failures.items():
        app.add_api_route(f"/{name}", _raising(failure))
    return app


def _raising(failure: Exception):  # noqa: ANN202 — a route
    def route() -> None:
        raise failure
    return route


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(_app(), raise_server_exceptions=False)


@pytest.mark.parametrize(("path", "status", "message", "error_code"), [
    ("/user", 409, "name taken: choose another", "taken"),
    ("/host-full", 503, "the host's memory budget is spent", "host_full"),
    ("/host-busy", 503, "Try again shortly", "host_busy"),
    ("/mismatch", 400, "asks for the gvisor backend", "template_backend_mismatch"),
    ("/start-cmd", 500, "exited with code 3: fix the template's start or ready command", "template_start_failed"),
])
def test_user_errors_keep_their_status_and_message(client: TestClient, path: str, status: int, message: str,
                                                   error_code: str) -> None:
    r = client.get(path)
    assert r.status_code == status
    body = r.json()
    assert body["code"] == status and message in body["message"] and body["error_code"] == error_code


@pytest.mark.parametrize("path", ["/host-full", "/host-busy"])
def test_a_host_out_of_room_or_time_says_when_to_retry(client: TestClient, path: str) -> None:
    assert client.get(path).headers["retry-after"] == "5"


async def test_a_sandbox_that_runs_but_never_answers_in_time_is_host_busy_not_internal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """envd is the system image's, not the template's: a live sandbox silent past the deadline means a host
    too loaded to start it (seen with 8 starts at once on 2 busy cores), which a retry fixes."""

    class Silent:
        async def get(self, url: str, timeout: float) -> None:
            raise httpx.ConnectError("refused")

    class Runtime:
        _http = Silent()

        async def is_running(self, handle: SandboxHandle) -> bool:
            return True

    monkeypatch.setattr(oci_runtime, "START_DEADLINE", 0.05)
    handle = SandboxHandle("abc", "container", "10.0.0.2")
    with pytest.raises(HostBusy) as caught:
        await oci_runtime.OciRuntime._wait_healthy(Runtime(), handle)  # type: ignore[arg-type]
    assert caught.value.status == 503 and "abc" in caught.value.message


@pytest.mark.parametrize("path", ["/backend", "/bug"])
def test_anything_else_is_a_generic_500_whose_id_the_log_has(client: TestClient, caplog: pytest.LogCaptureFixture,
                                                               path: str) -> None:
    with caplog.at_level(logging.ERROR, logger="sandhive.api"):
        r = client.get(path)
    assert r.status_code == 500
    assert set(r.json()) == {"code", "message"} and r.json()["code"] == 500
    match = GENERIC.fullmatch(r.json()["message"])
    assert match, r.json()
    assert HOST_PATH not in r.text
    [record] = [rec for rec in caplog.records if match.group(1) in rec.getMessage()]
    assert record.exc_info is not None and HOST_PATH in str(record.exc_info[1])  # the detail is in the log only


def test_two_failures_get_two_ids(client: TestClient) -> None:
    first, second = (GENERIC.fullmatch(client.get("/bug").json()["message"]) for _ in range(2))
    assert first and second and first.group(1) != second.group(1)


class FailingRuntime:
    """A runtime whose every start fails as runc's does: with its output, which names host paths."""

    name = "container"
    persistence = Persistence()  # none: a create asking to pause at its timeout is a user error

    def __init__(self) -> None:
        self.closed = False

    async def prepare(self) -> None: ...

    async def start(self, spec: SandboxSpec) -> SandboxHandle:
        raise BackendError(f"runc could not start sandbox {spec.sandbox_id}: mount {spec.template.rootfs}: "
                           "no such file or directory")

    async def stop(self, handle: SandboxHandle) -> None: ...

    async def is_running(self, handle: SandboxHandle) -> bool:
        return False

    async def running_ids(self) -> set[str]:
        return set()

    async def usage(self, handle: SandboxHandle) -> ResourceUsage:
        raise NotImplementedError

    async def logs(self, handle: SandboxHandle) -> list[str]:
        return []

    async def close(self) -> None:
        self.closed = True


def test_a_runtime_failure_on_create_is_a_generic_500_and_the_app_closes_the_runtime(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(data_dir=tmp_path, trust_host_ca=False)
    directory = template_dir(tmp_path, "broken")
    directory.mkdir(parents=True)
    TemplateInfo(id="broken", backend="container").write(directory)
    store = Store.open(tmp_path)
    try:
        store.migrate()
        key, _ = store.create_api_key("unit")
    finally:
        store.close()
    runtime = FailingRuntime()
    node = Node(runtime, pools=PoolSettings(size=0), budget=Budget(memory_mb=4096, cpus=8))
    app = create_app(settings, node, TemplateRegistry(tmp_path))
    with caplog.at_level(logging.ERROR, logger="sandhive.api"), TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/v2/sandboxes", json={"templateID": "broken"}, headers={"X-API-Key": key})
        assert r.status_code == 500, r.text
        match = GENERIC.fullmatch(r.json()["message"])
        assert match, r.json()
        assert str(tmp_path) not in r.text and "runc" not in r.text
        assert node.status().reserved.memory_mb == 0  # the failed create gave its reservation back
        other = c.post("/v2/sandboxes", json={"templateID": "broken", "autoPause": True}, headers={"X-API-Key": key})
        assert other.status_code == 400 and "autoPause" in other.json()["message"]  # user errors still say why
    logged = [rec for rec in caplog.records if match.group(1) in rec.getMessage()]
    assert logged and str(tmp_path) in str(logged[0].exc_info[1])
    assert runtime.closed  # the app's lifespan closed the node, and the node its runtime
