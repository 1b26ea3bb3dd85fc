"""Shared by the snapshot and fork tests: a live `sandhive serve` on the container backend (the one backend with
memory snapshots here), the released e2b SDK pointed at it, and a background process whose state is in memory.

Kept out of conftest.py so that other persistence suites (pause, volumes) keep their own fixtures.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from e2b import Sandbox

from sandhive.images import node_toolchain
from sandhive.images.debian import BuildError
from tests.api.rig import Server, container_server
from tests.helpers import read_count, wait_until

TEAM = "snapshots"
OTHER_TEAM = "snapshot-rival"

# A shell loop counting in memory, writing its count out every 0.1 s: after a restore it must go on from the
# snapshot's count (memory carried), not from 1 (a restart). The file proves the writable layer came along.
COUNTER = ("echo kept > /home/user/kept; "
           "nohup sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done' "
           ">/dev/null 2>&1 &")


@dataclass
class Live:
    server: Server
    key: str
    other_key: str

    @property
    def url(self) -> str:
        return self.server.url


def toolchain_or_skip() -> None:
    if shutil.which("mmdebstrap") is None:
        print("skipping snapshot tests: mmdebstrap is not installed (the CRIU toolchain is built with it)")
        pytest.skip("mmdebstrap is not installed (the CRIU toolchain is built with it)")
    try:
        node_toolchain.build(log=lambda m: print(m))
    except BuildError as exc:
        print(f"skipping snapshot tests: the node toolchain cannot be built here: {exc}")
        pytest.skip(f"node toolchain unavailable: {exc}")


def live_server(prefix: str, *args: str) -> Iterator[Live]:
    toolchain_or_skip()
    with container_server(prefix, TEAM, *args) as server:
        live = Live(server, server.key(TEAM), server.key(OTHER_TEAM))
        try:
            yield live
        finally:
            with server.client(live.other_key) as c:
                for sandbox in c.get("/v2/sandboxes", params={"limit": 100}).json():
                    c.delete(f"/sandboxes/{sandbox['sandboxID']}")


def point_sdk(monkeypatch: pytest.MonkeyPatch, live: Live, key: str | None = None) -> None:
    """The released SDK reads its endpoints and key from the environment, as E2B's users set them."""
    monkeypatch.setenv("E2B_API_URL", live.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", live.url)
    monkeypatch.setenv("E2B_API_KEY", key or live.key)
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    monkeypatch.delenv("E2B_DOMAIN", raising=False)


def counter(sandbox: Sandbox) -> int:
    return read_count(lambda: sandbox.commands.run("cat /tmp/counter 2>/dev/null || true").stdout)


def start_counting(sandbox: Sandbox) -> int:
    """Start the counter; return its value once it has counted a little."""
    sandbox.commands.run(COUNTER)
    return wait_until(lambda: (c := counter(sandbox)) >= 5 and c, timeout=30, what="the counter loop to count")
