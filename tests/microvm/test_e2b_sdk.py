"""End to end: the released e2b SDK, unchanged, against `sandhive serve --backend microvm`.

The seed example (create, run, files, kill) and what a microVM clone must get right on top: its own
random bytes and its own clock. Then issue 14's persistence through the same SDK calls as the container
suite (tests/persistence): a memory pause and `connect` keep a counting process, a filesystem pause keeps
files only, a timeout pauses (`on_timeout: "pause"`), a proxied request wakes an `auto_resume` sandbox, a
snapshot starts two copies and `fork(count=2)` makes independent ones (each counting on from the source's
memory), a pause survives a SIGKILLed server, and a volume mount is refused as documented. Timeouts are sized
for TCG (the first create waits for the base template's snapshot: a guest boot, emulated). The helpers and the
server's arguments are in sdk_rig.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox, SandboxException, SandboxQuery, SandboxState, Volume

from tests.api.rig import Server, kill_team_sandboxes
from tests.helpers import wait_until
from tests.hostile import test_egress_rules as egress
from tests.lan import Lan

from .leftovers import leftovers, sandbox_leftovers
from .sdk_rig import (
    COMMAND_TIMEOUT,
    REQUEST_TIMEOUT,
    TEAM,
    URANDOM,
    connect,
    counter,
    counts_on,
    create,
    forget_the_pause,
    run,
    serve,
    sigkill_and_restart,
    start_counter,
    state,
)

pytestmark = [pytest.mark.microvm, pytest.mark.timeout(900)]
internet = egress.internet  # the fake internet (a module fixture), for the egress test and the server's resolver


@pytest.fixture(scope="module")
def live(microvm_root: Path, internet: Lan) -> Iterator[Server]:
    server = serve(microvm_root / "server", internet)
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
        mp.setenv("E2B_VOLUME_API_URL", live.url)
        mp.setenv("E2B_API_KEY", live.key(TEAM))
        mp.delenv("E2B_DEBUG", raising=False)
        mp.delenv("E2B_DOMAIN", raising=False)
        yield


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


def test_a_timeout_pauses_and_connect_resumes_with_everything() -> None:
    """`on_timeout: "pause"`: the end of the sandbox's time pauses it with its memory instead of killing it, and
    `connect` brings back the same counting process and the files. The short time (6 s, as the container suite's
    create asks) is set once the counter runs: taken from the create, it would race the emulated guest's first
    commands; the end the reaper acts on is the same either way."""
    sbx = create(lifecycle={"on_timeout": "pause"})
    try:
        info = Sandbox.get_info(sbx.sandbox_id)
        assert info.lifecycle is not None and info.lifecycle["on_timeout"] == "pause"
        start_counter(sbx)
        before = wait_until(lambda: counter(sbx) >= 3 and counter(sbx), COMMAND_TIMEOUT, "the counter to count")
        sbx.set_timeout(6)
        wait_until(lambda: state(sbx.sandbox_id) == "paused", 120, "the timeout to pause the sandbox")
        resumed = connect(sbx.sandbox_id)
        assert state(sbx.sandbox_id) == "running"
        after = counter(resumed)
        assert after >= before, (before, after)  # from memory: it counted until the pause, then stood still
        counts_on(resumed, after, "the counter to go on counting")
        assert resumed.files.read("/home/user/kept.txt") == "kept"
    finally:
        Sandbox.kill(sbx.sandbox_id)


def test_a_proxied_request_resumes_an_auto_resume_sandbox(live: Server) -> None:
    """With `auto_resume`, the first request through the proxy to a paused sandbox's port wakes it, and the web
    server that answers is the one started before the pause (a filesystem resume would have no server)."""
    sbx = create(lifecycle={"on_timeout": "pause", "auto_resume": True})
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "8000"}
    try:
        assert Sandbox.get_info(sbx.sandbox_id).lifecycle == {"on_timeout": "pause", "auto_resume": True}
        sbx.files.write("/home/user/www/index.html", "hello from before the pause")
        sbx.commands.run("cd /home/user/www && python3 -m http.server 8000", background=True,
                         request_timeout=COMMAND_TIMEOUT)

        def served() -> str | None:
            r = httpx.get(live.url, headers=headers, trust_env=False, timeout=30)
            return r.text if r.status_code == 200 else None

        assert wait_until(served, COMMAND_TIMEOUT, "the sandbox's web server") == "hello from before the pause"
        assert sbx.pause(request_timeout=REQUEST_TIMEOUT) is True
        assert state(sbx.sandbox_id) == "paused"
        r = httpx.get(live.url, headers=headers, trust_env=False, timeout=REQUEST_TIMEOUT)
        assert (r.status_code, r.text) == (200, "hello from before the pause")
        assert state(sbx.sandbox_id) == "running"
    finally:
        Sandbox.kill(sbx.sandbox_id)


def test_a_snapshot_starts_two_copies_and_fork_makes_independent_ones() -> None:
    """Every copy carries the source's memory: the loop, whose count lives only in the shell, counts on from
    where it was when the copy was taken (a counter file that came along without its process would stand
    still), and the source's own loop keeps counting."""
    source = create()
    copies: list[tuple[Sandbox, int]] = []  # each copy, with the source's count just before it was taken
    try:
        start_counter(source)
        at_snapshot = wait_until(lambda: counter(source) >= 3 and counter(source), COMMAND_TIMEOUT,
                                 "the counter to count")
        snap = source.create_snapshot(request_timeout=REQUEST_TIMEOUT)
        copies += [(Sandbox.create(snap.snapshot_id, timeout=300, request_timeout=REQUEST_TIMEOUT), at_snapshot)
                   for _ in range(2)]
        at_fork = wait_until(lambda: counter(source) > at_snapshot and counter(source), COMMAND_TIMEOUT,
                             "the source to count on after its snapshot")
        forks = source.fork(count=2, timeout=300, request_timeout=REQUEST_TIMEOUT)
        for fork in forks:
            assert isinstance(fork, Sandbox), fork
            copies.append((fork, at_fork))
        entropy = {run(source, URANDOM)}
        for copy, floor in copies:
            assert copy.files.read("/home/user/kept.txt") == "kept"
            first = counter(copy)
            assert first >= floor, (floor, first)  # the count it was taken with, not a fresh start at 1
            counts_on(copy, first, f"{copy.sandbox_id}'s loop to count on from the copied memory")
            entropy.add(run(copy, URANDOM))
        assert len(entropy) == 1 + len(copies), entropy
        copies[0][0].files.write("/home/user/only-here", "1")
        assert not copies[1][0].files.exists("/home/user/only-here")
        assert not source.files.exists("/home/user/only-here")
        counts_on(source, counter(source), "the source's loop to keep counting")
    finally:
        for copy, _ in copies:
            copy.kill()
        source.kill()


def test_a_volume_mount_is_refused_with_the_documented_400() -> None:
    """docs/persistence.md: the microvm backend refuses `volumeMounts` with 400 and says why, and no sandbox
    is left from the attempt; the volume itself is made and removed as anywhere (that needs no sandbox)."""
    volume = Volume.create(f"mvm-{uuid.uuid4().hex[:8]}")
    try:
        before = {s.sandbox_id for s in Sandbox.list().next_items()}
        with pytest.raises(SandboxException, match="volumes are not supported by the microvm backend") as refused:
            create(volume_mounts={"/mnt/data": volume})
        assert getattr(refused.value, "status_code", None) == 400
        assert {s.sandbox_id for s in Sandbox.list().next_items()} == before
    finally:
        Volume.destroy(volume.volume_id)


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


def test_a_paused_sandbox_resumes_after_the_server_is_sigkilled(live: Server, internet: Lan) -> None:
    """A pause is files and a store row: the restarted server lists it as paused and `connect` brings back its
    counting process and files. A pause whose `saved.json` was written but whose row was not (the server died in
    between) is found by its directory, paused and whole. Runs late: the server after it is the restarted one."""
    sbx, unrecorded = create(), create()
    try:
        start_counter(sbx)
        before = wait_until(lambda: counter(sbx) >= 3 and counter(sbx), COMMAND_TIMEOUT, "the counter to count")
        assert sbx.pause(request_timeout=REQUEST_TIMEOUT) is True
        unrecorded.files.write("/home/user/kept.txt", "also kept")
        assert unrecorded.pause(request_timeout=REQUEST_TIMEOUT) is True
        forget_the_pause(live, unrecorded.sandbox_id)

        sigkill_and_restart(live, internet)

        assert state(sbx.sandbox_id) == "paused"
        resumed = connect(sbx.sandbox_id)
        after = counter(resumed)
        assert after >= before, (before, after)
        counts_on(resumed, after, "the counter to go on counting")
        assert resumed.files.read("/home/user/kept.txt") == "kept"
        assert state(unrecorded.sandbox_id) == "paused"
        assert connect(unrecorded.sandbox_id).files.read("/home/user/kept.txt") == "also kept"
    except BaseException:
        print(live.output()[-6000:])
        raise
    finally:
        Sandbox.kill(sbx.sandbox_id)
        Sandbox.kill(unrecorded.sandbox_id)


def test_nothing_is_left_after_the_team_is_killed(live: Server) -> None:
    sbx = create()
    kill_team_sandboxes(live, live.key(TEAM))
    assert sandbox_leftovers(live.data_dir, sbx.sandbox_id) == []
    assert leftovers(live.data_dir) == []
