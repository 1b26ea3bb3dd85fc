"""Issue 13 item 6: while a sandbox is being killed, the proxy no longer routes to it. Requests to its ports
get E2B's answer for a killed sandbox (502 "The sandbox was not found", which the SDK turns into
SandboxNotRunning) from the moment the kill starts, never "port is not open" (SandboxUnreachable: "the sandbox
is running but...") from a sandbox that is half torn down.

Client threads keep asking the sandbox's user port and envd through the server's proxy while the released SDK
kills it (sync and async). Before the fix the route outlived the sandbox's processes by ~0.1 s.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from e2b import AsyncSandbox, Sandbox

from tests.conformance.conftest import Live

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]
USER_PORT = 8000
SERVE = f"python3 -m http.server {USER_PORT} --bind 0.0.0.0 >/dev/null 2>&1"
CLIENTS = 4


class Hammer:
    """Threads that ask the sandbox's ports through the proxy until stopped, keeping every non-200 answer."""

    def __init__(self, url: str, sandbox_id: str) -> None:
        self.url = url
        self.sandbox_id = sandbox_id
        self.answers: list[tuple[int, int, str]] = []  # (port, status, body) of every non-200 answer
        self.ok = 0
        self.failures: list[str] = []  # transport errors (a request in flight when the sandbox died)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(port,), daemon=True)
                         for port in (USER_PORT, 49983) for _ in range(CLIENTS // 2)]
        self._lock = threading.Lock()

    def _run(self, port: int) -> None:
        headers = {"E2b-Sandbox-Id": self.sandbox_id, "E2b-Sandbox-Port": str(port)}
        path = "/" if port == USER_PORT else "/health"
        with httpx.Client(base_url=self.url, headers=headers, trust_env=False, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    r = client.get(path)
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.failures.append(repr(exc))
                    continue
                with self._lock:
                    if r.status_code in (200, 204):
                        self.ok += 1
                    else:
                        self.answers.append((port, r.status_code, r.text))

    def __enter__(self) -> Hammer:
        for thread in self._threads:
            thread.start()
        return self

    def until_reached(self, timeout: float = 30) -> None:
        """Wait until the clients have had answers from the running sandbox (so the kill finds them busy)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.ok < 10 * len(self._threads):
            time.sleep(0.02)

    def until_not_found_on_every_port(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                ports = {port for port, _, body in self.answers if "was not found" in body}
            if ports == {USER_PORT, 49983}:
                return
            time.sleep(0.02)

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def _wait_routed(url: str, sandbox_id: str) -> None:
    headers = {"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": str(USER_PORT)}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if httpx.get(url, headers=headers, trust_env=False, timeout=5).status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"port {USER_PORT} of the sandbox never answered through the proxy")


def _check(hammer: Hammer) -> None:
    port_not_open = [a for a in hammer.answers if "port is not open" in a[2]]
    assert not port_not_open, f"the dying sandbox was still routed: {port_not_open[:3]}"
    assert hammer.ok > 0, f"the clients never reached the sandbox before the kill: {hammer.failures[:3]}"
    gone = [a for a in hammer.answers if a[1] == 502 and "was not found" in a[2]]
    assert {port for port, _, _ in gone} == {USER_PORT, 49983}, hammer.answers[:5]


def test_kill_unroutes_before_it_stops_sync(live: Live) -> None:
    sbx = Sandbox.create(timeout=120)
    sbx.commands.run(SERVE, background=True)
    _wait_routed(live.url, sbx.sandbox_id)
    with Hammer(live.url, sbx.sandbox_id) as hammer:
        hammer.until_reached()
        assert sbx.kill() is True
        hammer.until_not_found_on_every_port()
    _check(hammer)


def test_kill_unroutes_before_it_stops_async(live: Live) -> None:
    async def scenario() -> Hammer:
        sbx = await AsyncSandbox.create(timeout=120)
        await sbx.commands.run(SERVE, background=True)
        await asyncio.to_thread(_wait_routed, live.url, sbx.sandbox_id)
        with Hammer(live.url, sbx.sandbox_id) as hammer:
            await asyncio.to_thread(hammer.until_reached)
            assert await sbx.kill() is True
            await asyncio.to_thread(hammer.until_not_found_on_every_port)
        return hammer

    _check(asyncio.run(scenario()))
