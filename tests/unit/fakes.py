"""Fakes for the unit tier: a runtime behind the runtime contract, an envd behind `httpx.MockTransport`, and a clock
the test moves. Nothing here needs root, runc or a network: the node, its pools, admission and the API's timers run
for real on top of them, in milliseconds.

The fakes keep the contract's promises (stop is idempotent, a failed start leaves nothing, `running_ids` lists what
runs) so that a test that passes here describes behaviour a real backend would show too.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from sandhive.node.admission import Budget
from sandhive.node.node import Node
from sandhive.node.pool import PoolSettings
from sandhive.node.request import CreateRequest
from sandhive.node.runtime import ResourceUsage, SandboxHandle, SandboxSpec, TemplateImage

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    """Monotonic seconds (call it) and the matching wall clock (`utc`), both moved only by `advance`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def utc(self) -> datetime:
        return EPOCH + timedelta(seconds=self.now)


class FakeStartFailed(Exception):
    """What the fake runtime raises for a start the test told to fail."""


@dataclass
class FakeRuntime:
    """An isolation backend that runs nothing: sandboxes are entries in `running`.

    `gate`, when set, holds every start until the test sets it (starts in flight); `fail_starts` makes that many
    next starts raise. `die(id)` ends a sandbox "by itself", as a crash would.
    """

    name: str = "fake"
    running: dict[str, SandboxHandle] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)  # every successful start, in order
    stopped: list[str] = field(default_factory=list)  # every stop call, in order (repeats included)
    fail_starts: int = 0
    gate: asyncio.Event | None = None
    prepared: bool = False
    closed: bool = False
    _exits: dict[str, asyncio.Future[str]] = field(default_factory=dict)

    async def prepare(self) -> None:
        self.prepared = True

    async def close(self) -> None:
        self.closed = True

    async def start(self, spec: SandboxSpec) -> SandboxHandle:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_starts > 0:
            self.fail_starts -= 1
            raise FakeStartFailed(f"fake start of {spec.sandbox_id} failed")
        handle = SandboxHandle(spec.sandbox_id, self.name, address=f"fake-{spec.sandbox_id}",
                               state={"memory_mb": spec.memory_mb})
        self.running[spec.sandbox_id] = handle
        self.started.append(spec.sandbox_id)
        return handle

    async def stop(self, handle: SandboxHandle) -> None:
        self.stopped.append(handle.sandbox_id)
        self.running.pop(handle.sandbox_id, None)
        exit_ = self._exits.pop(handle.sandbox_id, None)
        if exit_ is not None and not exit_.done():
            exit_.cancel()

    async def is_running(self, handle: SandboxHandle) -> bool:
        return handle.sandbox_id in self.running

    async def wait_exit(self, handle: SandboxHandle) -> str:
        future = self._exits.setdefault(handle.sandbox_id, asyncio.get_running_loop().create_future())
        return await future

    def die(self, sandbox_id: str, reason: str = "its init exited") -> None:
        self.running.pop(sandbox_id, None)
        future = self._exits.setdefault(sandbox_id, asyncio.get_running_loop().create_future())
        future.set_result(reason)

    async def running_ids(self) -> set[str]:
        return set(self.running)

    async def usage(self, handle: SandboxHandle) -> ResourceUsage:
        return ResourceUsage(cpu_count=1, cpu_used_pct=0.0, mem_used=0, mem_total=handle.state.get("memory_mb", 0),
                             mem_cache=0, disk_used=0, disk_total=0)

    async def logs(self, handle: SandboxHandle) -> list[str]:
        return [f"fake envd of {handle.sandbox_id}"]

    async def hold_paused(self, sandbox_id: str) -> None:
        return None


def _frame(message: dict, flags: int = 0) -> bytes:
    payload = json.dumps(message).encode()
    return struct.pack(">BI", flags, len(payload)) + payload


@dataclass
class FakeEnvd:
    """Every sandbox's envd at once: answers `/init` (204) and `process.Process/Start` (the command exits 0).

    `inits` holds each `/init` body by host; `refuse_init` names hosts whose envd answers 500 (a sandbox that
    died while pooled)."""

    inits: dict[str, list[dict]] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    refuse_init: set[str] = field(default_factory=set)

    def handler(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if request.url.path == "/init":
            if host in self.refuse_init:
                return httpx.Response(500, text="envd is gone")
            self.inits.setdefault(host, []).append(json.loads(request.content))
            return httpx.Response(204)
        if request.url.path == "/process.Process/Start":
            body = json.loads(request.content[5:])
            self.commands.append(body["process"]["args"][-1])
            stream = (_frame({"event": {"start": {"pid": 7}}}) + _frame({"event": {"end": {"exitCode": 0,
                                                                                           "exited": True}}})
                      + _frame({}, flags=0x02))
            return httpx.Response(200, content=stream, headers={"Content-Type": "application/connect+json"})
        return httpx.Response(404)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


def template(template_id: str = "base", **fields: object) -> TemplateImage:
    """A template whose rootfs need not exist (the pool key falls back to "missing" for it)."""
    values: dict = dict(rootfs=Path(f"/nonexistent/{template_id}"), memory_mb=512, cpu_count=2)
    values.update(fields)
    return TemplateImage(template_id=template_id, **values)


def request(template_id: str = "base", **fields: object) -> CreateRequest:
    return CreateRequest.of(template(template_id, **fields))


@dataclass
class Rig:
    """A node on the fake runtime, the fake envd and a fake clock."""

    node: Node
    runtime: FakeRuntime
    envd: FakeEnvd
    clock: FakeClock


def make_node(*, pools: PoolSettings | None = None, memory_mb: int = 4096, cpus: float = 64.0,
              runtime: FakeRuntime | None = None, clock: FakeClock | None = None) -> Rig:
    runtime = runtime or FakeRuntime()
    envd, clock = FakeEnvd(), clock or FakeClock()
    node = Node(runtime, pools=pools or PoolSettings(size=0), budget=Budget(memory_mb=memory_mb, cpus=cpus),
                http=envd.client(), clock=clock)
    return Rig(node, runtime, envd, clock)


async def settle(condition: Callable[[], bool] | None = None, rounds: int = 200, pause: float = 0) -> None:
    """Let the event loop run background tasks (fills, retirements) until `condition` holds, or for `rounds`
    turns without one. Fails when the condition never holds. `pause` > 0 only where work runs in a thread
    (the store through `to_thread`): the fakes themselves never need real time."""
    for _ in range(rounds):
        if condition is not None and condition():
            return
        await asyncio.sleep(pause)
    if condition is not None and not condition():
        raise AssertionError("the condition did not hold after the background tasks ran")

