"""`sandhive serve` wires its edge proxy to the store: the SDK reaches a sandbox the store knows, on one port.

No backend is needed: envd runs on this host at 127.0.0.2:49983 and a sandbox row says that is where
sandbox `iwired...` lives. The server loads it at start (as it adopts survivors after a restart), so
`Sandbox.connect` through E2B_API_URL = E2B_SANDBOX_URL = the server runs a command in that envd.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import Sandbox
from e2b.exceptions import SandboxException

from sandhive.store import Store
from tests.api.rig import Server, create_key, insert_sandbox, start_server
from tests.helpers import stop_process_group, wait_for_health

ENVD_ADDRESS = "127.0.0.2"  # all of 127/8 is loopback; the proxy adds port 49983 itself
ENVD_PORT = 49983
SANDBOX_ID = "iwired0000000000000a"


def _port_taken(address: str, port: int) -> str | None:
    with contextlib.closing(socket.socket()) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as exc:
            return f"cannot bind {address}:{port}: {exc}"
    return None


@pytest.fixture(scope="module")
def wired(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    reason = _port_taken(ENVD_ADDRESS, ENVD_PORT)
    if reason:
        print(f"skipping proxy wiring tests: {reason}")
        pytest.skip(reason)
    data_dir = tmp_path_factory.mktemp("wired") / "data"
    key = create_key(data_dir, "wired")
    store = Store.open(data_dir)
    try:
        insert_sandbox(store, store.authenticate(key), sandbox_id=SANDBOX_ID, address=ENVD_ADDRESS)
    finally:
        store.close()
    envd = subprocess.Popen([sys.executable, "-m", "sandhive.envd", "--host", ENVD_ADDRESS, "--port", str(ENVD_PORT)],
                            start_new_session=True)
    server: Server | None = None
    try:
        wait_for_health(f"http://{ENVD_ADDRESS}:{ENVD_PORT}", envd)
        server = start_server(data_dir)
        yield server, key
    finally:
        if server is not None:
            server.stop()
        stop_process_group(envd)


def test_sdk_runs_a_command_through_the_servers_proxy(wired: tuple[Server, str], tmp_path: Path) -> None:
    server, key = wired
    opts = dict(api_url=server.url, sandbox_url=server.url, api_key=key)
    sandbox = Sandbox.connect(SANDBOX_ID, **opts)
    assert sandbox.commands.run("echo through the proxy").stdout == "through the proxy\n"
    sandbox.files.write(str(tmp_path / "wired.txt"), "written via the edge proxy")
    assert sandbox.files.read(str(tmp_path / "wired.txt")) == "written via the edge proxy"


def test_killed_sandbox_is_no_longer_routed(wired: tuple[Server, str]) -> None:
    server, key = wired
    opts = dict(api_url=server.url, sandbox_url=server.url, api_key=key)
    sandbox = Sandbox.connect(SANDBOX_ID, **opts)
    assert Sandbox.kill(SANDBOX_ID, **opts) is True
    with pytest.raises(SandboxException):
        sandbox.commands.run("echo unreachable")
    with server.client() as c:
        r = c.get("/health", headers={"E2b-Sandbox-Id": SANDBOX_ID, "E2b-Sandbox-Port": str(ENVD_PORT)})
    assert r.status_code == 502 and "was not found" in r.json()["message"]
