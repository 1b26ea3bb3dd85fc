"""End to end: the released e2b SDK, unchanged, against `sandhive serve --backend microvm`.

The seed example (create, run, files, kill) and what a microVM clone must get right on top: its own
random bytes and its own clock. Then issue 14's persistence through the same SDK calls as the container
suite (tests/persistence): a memory pause and `connect` keep a counting process, a filesystem pause keeps
files only, a snapshot starts two copies, `fork(count=2)` makes independent copies. Timeouts are sized for
TCG (the first create waits for the base template's snapshot: a guest boot, emulated).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import Sandbox, SandboxQuery, SandboxState

from tests.api.rig import Server, kill_team_sandboxes, start_server
from tests.helpers import read_count, wait_until
from tests.hostile import test_egress_rules as egress
from tests.lan import Lan

from .leftovers import leftovers, sandbox_leftovers

pytestmark = [pytest.mark.microvm, pytest.mark.timeout(900)]
internet = egress.internet  # the fake internet (a module fixture), for the egress test
TEAM = "microvm"
REQUEST_TIMEOUT = 600  # seconds: the first create builds the template's snapshot
COMMAND_TIMEOUT = 120


@pytest.fixture(scope="module")
def live(microvm_root: Path, internet: Lan) -> Iterator[Server]:
    # No warm pool: every create below is a snapshot clone made on the request path. The egress filter asks the
    # fake internet's nameserver (tests/hostile/test_egress_rules.py) for names.
    server = start_server(microvm_root / "server", "--pool-size", "0", "--egress-resolver", internet.link_ip,
                          backend="microvm", timeout=900)
    try:
        yield server
    finally:
        try:
            kill_team_sandboxes(server, server.key(TEAM))
        finally:
            server.stop()


@pytest.fixture(scope="module", autouse=True)
def e2b_env(live: Server) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("E2B_API_URL", live.url)
        mp.setenv("E2B_SANDBOX_URL", live.url)
        mp.setenv("E2B_API_KEY", live.key(TEAM))
        mp.delenv("E2B_DEBUG", raising=False)
        mp.delenv("E2B_DOMAIN", raising=False)
        yield


def create() -> Sandbox:
    return Sandbox.create(timeout=300, request_timeout=REQUEST_TIMEOUT)


def run(sbx: Sandbox, line: str) -> str:
    return sbx.commands.run(line, timeout=COMMAND_TIMEOUT, request_timeout=COMMAND_TIMEOUT).stdout


def test_the_seed_example(live: Server) -> None:
    """Sandbox.create(), commands.run('echo Hello'), files write/read, kill — and kill leaves nothing."""
    with live.client() as c:
        health = c.get("/health").json()
        assert health["backend"] == "microvm" and health["accelerator"] in ("kvm", "tcg")
    sbx = create()
    try:
        assert run(sbx, "echo Hello") == "Hello\n"
        sbx.files.write("/home/user/hello.txt", "Hello from a microVM\n")
        assert sbx.files.read("/home/user/hello.txt") == "Hello from a microVM\n"
        assert run(sbx, "cat /home/user/hello.txt; whoami") == "Hello from a microVM\nuser\n"
        assert run(sbx, "uname -r") != Path("/proc/sys/kernel/osrelease").read_text()  # its own kernel
    finally:
        sbx.kill()
    assert sbx.sandbox_id not in [s.sandbox_id for s in Sandbox.list().next_items()]
    assert sandbox_leftovers(live.data_dir, sbx.sandbox_id) == []


def test_clones_have_their_own_randomness_and_clock() -> None:
    a, b = create(), create()
    try:
        ra, rb = run(a, "head -c16 /dev/urandom | od -An -tx1"), run(b, "head -c16 /dev/urandom | od -An -tx1")
        assert len(ra.split()) == 16 and ra != rb
        for sbx in (a, b):
            assert abs(int(run(sbx, "date +%s")) - time.time()) < 5
    finally:
        a.kill()
        b.kill()


# A shell loop whose only state is in memory (as tests/persistence's): after a memory pause it goes on from
# where it was, after a filesystem pause it is gone.
COUNTER_LOOP = "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done"
URANDOM = "head -c16 /dev/urandom | od -An -tx1"


def start_counter(sbx: Sandbox) -> None:
    sbx.files.write("/home/user/kept.txt", "kept")
    sbx.commands.run(COUNTER_LOOP, background=True, request_timeout=COMMAND_TIMEOUT)


def counter(sbx: Sandbox) -> int:
    return read_count(lambda: run(sbx, "cat /tmp/counter 2>/dev/null || true"))


def test_memory_pause_then_connect_keeps_a_counting_process() -> None:
    sbx = create()
    try:
        start_counter(sbx)
        before = wait_until(lambda: counter(sbx) >= 3 and counter(sbx), 120, "the counter to count")
        assert sbx.pause(request_timeout=REQUEST_TIMEOUT) is True
        assert Sandbox.get_info(sbx.sandbox_id).state.value == "paused"
        paused = Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED])).next_items()
        assert sbx.sandbox_id in {s.sandbox_id for s in paused}

        resumed = Sandbox.connect(sbx.sandbox_id, timeout=300, request_timeout=REQUEST_TIMEOUT)
        after = counter(resumed)
        assert before <= after < before + 100, (before, after)  # went on from memory, not restarted at 1
        wait_until(lambda: counter(resumed) > after, 120, "the counter to go on counting")
        assert resumed.files.read("/home/user/kept.txt") == "kept"
    finally:
        Sandbox.kill(sbx.sandbox_id)


def test_filesystem_pause_keeps_files_not_processes() -> None:
    sbx = create()
    try:
        start_counter(sbx)
        wait_until(lambda: counter(sbx) >= 2, 120, "the counter to count")
        assert sbx.pause(mode="filesystem", request_timeout=REQUEST_TIMEOUT) is True
        resumed = Sandbox.connect(sbx.sandbox_id, timeout=300, request_timeout=REQUEST_TIMEOUT)
        assert resumed.files.read("/home/user/kept.txt") == "kept"
        first = counter(resumed)
        time.sleep(1.0)
        assert counter(resumed) == first  # the loop did not survive: only the files did
    finally:
        Sandbox.kill(sbx.sandbox_id)


def test_a_snapshot_starts_two_copies_and_fork_makes_independent_ones() -> None:
    source = create()
    copies: list[Sandbox] = []
    try:
        start_counter(source)
        wait_until(lambda: counter(source) >= 3, 120, "the counter to count")
        snap = source.create_snapshot(request_timeout=REQUEST_TIMEOUT)
        copies += [Sandbox.create(snap.snapshot_id, timeout=300, request_timeout=REQUEST_TIMEOUT) for _ in range(2)]
        forks = source.fork(count=2, timeout=300, request_timeout=REQUEST_TIMEOUT)
        for fork in forks:
            assert isinstance(fork, Sandbox), fork
            copies.append(fork)
        entropy = {run(source, URANDOM)}
        for copy in copies:
            assert copy.files.read("/home/user/kept.txt") == "kept"
            assert counter(copy) >= 3  # memory came along: the loop's count, not a fresh start
            entropy.add(run(copy, URANDOM))
        assert len(entropy) == 1 + len(copies), entropy
        copies[0].files.write("/home/user/only-here", "1")
        assert not copies[1].files.exists("/home/user/only-here")
        assert not source.files.exists("/home/user/only-here")
        assert source.is_running()
    finally:
        for copy in copies:
            copy.kill()
        source.kill()


def test_egress_rules_hold_for_a_guest(internet: Lan) -> None:
    """Issue 16 on the microvm tier: a guest sits behind its slot's veth like a container, so its ranges and
    domain rules are judged by the same kernel sets and egress filter (tests/hostile/test_egress_rules.py has
    the full set on container and gvisor)."""
    a, b = internet.addresses[1], internet.addresses[2]
    sbx = Sandbox.create(timeout=300, request_timeout=REQUEST_TIMEOUT,
                         network={"deny_out": ["0.0.0.0/0"], "allow_out": ["allowed.test", b]})
    try:
        sbx.files.write("/tmp/probe.py", egress.PROBE)
        assert run(sbx, f"python3 /tmp/probe.py {a} {b}").split() == [a, "blocked", b, "open"]
        assert egress.fetch(sbx, a, 80, "allowed.test", COMMAND_TIMEOUT) == f"site={a} host=allowed.test sni=-"
        assert egress.fetch(sbx, a, 443, "allowed.test", COMMAND_TIMEOUT) == \
            f"site={a} host=allowed.test sni=allowed.test"
        assert egress.fetch(sbx, a, 80, "other.test", COMMAND_TIMEOUT) == "blocked"
        sbx.update_network({"deny_out": [b]})
        assert run(sbx, f"python3 /tmp/probe.py {a} {b}").split() == [a, "open", b, "blocked"]
    finally:
        sbx.kill()


def test_nothing_is_left_after_the_team_is_killed(live: Server) -> None:
    sbx = create()
    kill_team_sandboxes(live, live.key(TEAM))
    assert sandbox_leftovers(live.data_dir, sbx.sandbox_id) == []
    assert leftovers(live.data_dir) == []
