"""Warm shells on a fake runtime (`Node(shells=N)`, docs/persistence.md): which misses a shell serves, what the
admission holds before and after, and that a shell that fails to serve is stopped and the miss cold-started.
The real switch of roots is tested against runc in tests/node/test_shells.py and tests/hostile/test_shells.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from sandhive.node.admission import Budget, Kind
from sandhive.node.node import SHELL_TEMPLATE, Node
from sandhive.node.pool import PoolSettings
from sandhive.node.request import Identity
from sandhive.node.runtime import SandboxHandle, SandboxSpec, ShellRuntime, ShellUnfit
from tests.unit.fakes import FakeClock, FakeEnvd, FakeRuntime, request, settle

USER = Identity(env_vars={"A": "1"}, token_for=lambda sandbox_id: f"token-{sandbox_id}")


@dataclass
class FakeShellRuntime(FakeRuntime):
    """A fake runtime with shells: `filled` records each shell made a template's sandbox; `fail_fills` makes the
    next fills raise (a `ShellUnfit` when `unfit`)."""

    filled: list[tuple[str, str]] = field(default_factory=list)
    shells_started: list[str] = field(default_factory=list)
    fail_fills: int = 0
    unfit: bool = False

    async def start_shell(self, spec: SandboxSpec) -> SandboxHandle:
        handle = await self.start(spec)
        self.shells_started.append(spec.sandbox_id)
        return handle

    def shell_unfit(self, spec: SandboxSpec) -> str | None:
        return "a start command" if spec.template.start_cmd else None

    async def fill_shell(self, shell: SandboxHandle, spec: SandboxSpec) -> SandboxHandle:
        if self.fail_fills > 0:
            self.fail_fills -= 1
            raise ShellUnfit("its /etc is a symlink") if self.unfit else RuntimeError("the switch failed")
        self.filled.append((shell.sandbox_id, spec.template.template_id))
        shell.state["memory_mb"] = spec.memory_mb
        return shell


@dataclass
class ShellRig:
    node: Node
    runtime: FakeShellRuntime
    envd: FakeEnvd
    clock: FakeClock


@pytest.fixture
async def rig() -> AsyncIterator[ShellRig]:
    runtime, envd, clock = FakeShellRuntime(), FakeEnvd(), FakeClock()
    node = Node(runtime, pools=PoolSettings(size=0), budget=Budget(memory_mb=4096, cpus=64.0), http=envd.client(),
                clock=clock, shells=1)
    await node.start()
    yield ShellRig(node, runtime, envd, clock)
    await node.close()


def ready_shells(rig: ShellRig) -> int:
    return sum(p.ready for p in rig.node.shells.status())


async def test_a_shell_is_started_at_start_and_told_nothing_of_a_template_or_owner(rig: ShellRig) -> None:
    await settle(lambda: ready_shells(rig) == 1)
    assert isinstance(rig.runtime, ShellRuntime)
    assert len(rig.runtime.shells_started) == 1
    shell = rig.runtime.shells_started[0]
    assert rig.envd.inits[f"fake-{shell}"] == [{"sandboxId": shell}]  # no user, env, token; no command
    assert rig.envd.commands == []
    assert rig.node.admission.used(Kind.POOL).memory_mb == 256  # a shell holds its own small reservation
    assert [p.template_id for p in rig.node.status().pools] == [SHELL_TEMPLATE.template_id]


async def test_a_miss_becomes_the_shell_and_the_shell_pool_refills(rig: ShellRig) -> None:
    await settle(lambda: ready_shells(rig) == 1)
    shell = rig.runtime.shells_started[0]
    handle = await rig.node.create(request(), USER)
    assert handle.sandbox_id == shell and rig.runtime.filled == [(shell, "base")]
    _, init = rig.envd.inits[handle.address]  # one /init after the switch: the template's defaults and the owner's
    assert init["templateId"] == "base" and init["defaultUser"] == "user" and init["defaultWorkdir"] == "/home/user"
    assert init["accessToken"] == f"token-{shell}" and init["envVars"] == {"A": "1"}
    assert rig.node.admission.holds(shell)
    assert rig.node.admission.used(Kind.SANDBOX).memory_mb == 512  # the request's limits, not the shell's
    rig.clock.advance(1.0)  # past the refill delay
    rig.node.shells._wake.set()
    await settle(lambda: len(rig.runtime.shells_started) == 2 and ready_shells(rig) == 1, rounds=2000)
    assert rig.node.admission.used(Kind.POOL).memory_mb == 256


async def test_a_template_with_a_start_command_is_cold_started_and_the_shell_kept(rig: ShellRig) -> None:
    await settle(lambda: ready_shells(rig) == 1)
    handle = await rig.node.create(request("web", start_cmd="server"), USER)
    assert handle.sandbox_id not in rig.runtime.shells_started and rig.runtime.filled == []
    assert ready_shells(rig) == 1


@pytest.mark.parametrize("unfit", [True, False])
async def test_a_shell_that_cannot_serve_is_stopped_and_the_miss_cold_started(rig: ShellRig, unfit: bool) -> None:
    await settle(lambda: ready_shells(rig) == 1)
    shell = rig.runtime.shells_started[0]
    rig.runtime.fail_fills, rig.runtime.unfit = 1, unfit
    handle = await rig.node.create(request(), USER)
    assert handle.sandbox_id != shell and handle.sandbox_id in rig.runtime.running
    assert shell in rig.runtime.stopped and shell not in rig.runtime.running  # never used twice
    assert not rig.node.admission.holds(shell)


async def test_a_miss_before_a_shell_is_ready_is_cold_started() -> None:
    runtime, envd = FakeShellRuntime(), FakeEnvd()
    node = Node(runtime, pools=PoolSettings(size=0), http=envd.client(), clock=FakeClock(), shells=1)
    try:
        await node.start()
        handle = await node.create(request(), USER)  # the shell's fill has not run yet: a cold start
        assert runtime.filled == [] and handle.sandbox_id not in runtime.shells_started
    finally:
        await node.close()


async def test_shells_are_off_by_default_and_on_a_runtime_without_them() -> None:
    assert Node(FakeShellRuntime()).shells.settings.enabled is False
    assert Node(FakeRuntime(), shells=2).shells.settings.enabled is False  # warned and ignored


def test_a_server_keeps_one_shell_by_default_where_the_backend_has_them() -> None:
    """`sandhive serve` without `--miss-shells` (cli/node_options.py): one shell on a backend with shells, none
    elsewhere."""
    assert Node(FakeShellRuntime()).default_shells() == 1
    assert Node(FakeRuntime()).default_shells() == 0


async def test_paused_sandboxes_hold_their_slots_in_reconcile_before_shells_start() -> None:
    """The API reconciles before `start()` fills the shells: each paused sandbox has held what it had by then."""
    held: list[str] = []

    class Holding(FakeShellRuntime):
        async def hold_paused(self, sandbox_id: str) -> None:
            held.append(sandbox_id)

    node = Node(Holding(), shells=1)
    await node.reconcile([], paused=["paused-b", "paused-a"])
    assert held == ["paused-a", "paused-b"] and node.runtime.shells_started == []  # type: ignore[attr-defined]
