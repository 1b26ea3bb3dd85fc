"""Density on one host (issue 17): 200 idle `base` sandboxes on one container-backend server, created 8 at a time
through the released e2b SDK, all admitted (admission by real use, node/admission.py) and each answering a
command; the 201st is refused at the per-node maximum (503 + Retry-After); all are then killed in parallel and
nothing of them is left on the host (netns, slots, veths, mounts, loop devices, cgroups, directories, runc state).
A server whose host is short of memory (`--memory-reserve` above what the host has) refuses creates with 503
`memory_pressure`, whatever its accounting says.

Selected alone with `-m density`; the durations of its phases are printed (`-s`)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from e2b import Sandbox

from sandhive.node import network
from sandhive.node.admission import START_ESTIMATE_MB, Budget
from tests.api.pool_rig import e2b_env, node_status
from tests.api.rig import Server, container_server
from tests.helpers import wait_until

pytestmark = [pytest.mark.needs_backend, pytest.mark.density, pytest.mark.timeout(1800)]

TEAM = "density"
COUNT = 200  # `--max-sandboxes`' default: the node takes exactly this many
AT_ONCE = 8  # creates in flight, as the issue asks
ARGS = ("--max-sandboxes-per-team", "0")  # the node's maximum, not a team's, is what this test reaches


def leftovers(server: Server, ids: list[str], slots: dict[str, int]) -> list[str]:
    """What the sandboxes `ids` still hold on the host, read once for all of them."""
    wanted = set(ids)
    found = [f"netns {n}" for n in network.existing_sandbox_netns() if n in wanted]
    owners = {}
    for slot_file in network.HOST_SLOTS_DIR.iterdir():
        try:
            owners[slot_file.read_text()] = slot_file.name
        except OSError:
            continue
    found += [f"network slot {owners[i]} of {i}" for i in wanted & owners.keys()]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines() if ":" in line}
    found += [f"veth {network.Slot(s).veth} of {i}" for i, s in slots.items()
              if network.Slot(s).veth in names and owners.get(i) is not None]
    with open("/proc/self/mounts") as f:
        found += [f"mount {m}" for line in f if any(i in (m := line.split()[1]) for i in wanted)]
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            path = backing.read_text().strip()
        except OSError:
            continue
        if str(server.data_dir) in path and any(i in path for i in wanted):
            found.append(f"loop device {backing.parts[3]} on {path}")
    found += [f"cgroup {p}" for i in wanted for p in Path("/sys/fs/cgroup").glob(f"*/sandhive/{i}")]
    found += [f"directory of {d.name}" for d in (server.data_dir / "sandboxes").glob("*") if d.name in wanted]
    runc = subprocess.run(["runc", "--root", str(server.data_dir / "runc"), "list", "--format", "json"],
                          capture_output=True, text=True, timeout=60)
    if runc.returncode == 0:
        found += [f"runc state of {c['id']}" for c in json.loads(runc.stdout or "null") or [] if c["id"] in wanted]
    return found


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def too_small() -> str | None:
    """Why this host cannot hold COUNT `base` sandboxes (512 MB limits) with serve's default admission, or None."""
    budget = Budget.of_host()
    if budget.limits_mb < COUNT * 512 or budget.memory_mb < COUNT * START_ESTIMATE_MB:
        return (f"the host has too little memory for {COUNT} sandboxes: a {budget.memory_mb} MB budget "
                f"× {budget.memory_overcommit:g} holds {budget.limits_mb // 512} `base` limits")
    return None


@pytest.fixture(scope="module")
def dense() -> Iterator[Server]:
    reason = too_small()
    if reason:
        print(f"skipping the density test: {reason}")
        pytest.skip(reason)
    with container_server("density", TEAM, *ARGS) as server:
        yield server


def test_200_idle_base_sandboxes_fit_answer_and_leave_nothing(dense: Server) -> None:
    key = dense.key(TEAM)
    sandboxes: list[Sandbox] = []
    slots: dict[str, int] = {}
    began = time.monotonic()
    with e2b_env(dense, key), ThreadPoolExecutor(AT_ONCE) as creators, ThreadPoolExecutor(32) as workers:
        try:
            Sandbox.create(template="base", timeout=60, request_timeout=600).kill()  # `base` built/prepared once
            prepared = time.monotonic()
            futures = [creators.submit(Sandbox.create, template="base", timeout=1800, request_timeout=600,
                                         retries=0)
                       for _ in range(COUNT)]
            failures = []
            for future in futures:
                try:
                    sandboxes.append(future.result())
                except Exception as exc:  # all of them are collected (and killed) before failing
                    failures.append(repr(exc))
            created = time.monotonic()
            assert not failures, (f"{len(failures)} of {COUNT} creates failed, e.g. {failures[:3]}\n"
                                  + "\n".join(line for line in dense.output().splitlines()
                                               if "ERROR" in line or "Error" in line or "rror:" in line)[-6000:])
            status = node_status(dense, key)
            fds = open_fds(dense.proc.pid)
            for sandbox in sandboxes:
                held = network.SlotAllocator().owned_by(sandbox.sandbox_id)
                if held is not None:
                    slots[sandbox.sandbox_id] = held.index

            outputs = list(workers.map(lambda n: sandboxes[n].commands.run(f"echo {n}", request_timeout=300).stdout,
                                       range(COUNT)))
            assert outputs == [f"{n}\n" for n in range(COUNT)]
            answered = time.monotonic()

            with dense.client(key) as c:  # the node runs its maximum: the 201st is refused, and says so
                over = c.post("/v2/sandboxes", json={"templateID": "base", "timeout": 60}, timeout=300)
            assert over.status_code == 503, over.text
            assert f"maximum of {COUNT} sandboxes" in over.json()["message"] and int(over.headers["Retry-After"]) > 0
        finally:
            killing = time.monotonic()
            list(workers.map(lambda s: s.kill(request_timeout=300), sandboxes))
            killed = time.monotonic()
    assert status["sandboxes"] == COUNT and status["maxSandboxes"] == COUNT, status
    assert status["memoryOvercommit"] > 1 and 0 < status["inUseMemoryMB"] < status["memoryBudgetMB"], status
    ids = [s.sandbox_id for s in sandboxes]
    wait_until(lambda: not leftovers(dense, ids, slots), 300, "the killed sandboxes' host resources to go",
               interval=1.0, show=lambda: leftovers(dense, ids, slots)[:20])
    with dense.client(key) as c:
        assert c.get("/v2/sandboxes", params={"limit": 100}).json() == []
    print(f"\ndensity: {COUNT} sandboxes, {AT_ONCE} creates at once: first create (prepares base) "
          f"{prepared - began:.1f}s, creates {created - prepared:.1f}s, {COUNT} commands {answered - created:.1f}s, "
          f"kills {killed - killing:.1f}s, total {time.monotonic() - began:.1f}s; node at {COUNT}: "
          f"{status['inUseMemoryMB']} MB in use ({status['inUseMemoryMB'] / COUNT:.1f} MB each), "
          f"{status['reservedMemoryMB']} MB of limits, server fds {fds}")


def test_memory_pressure_refuses_creates_whatever_the_accounting_says() -> None:
    # 100 TB kept for the host (the budget given, as it would be the RAM minus that)
    with container_server("pressure", TEAM, "--memory-reserve", str(10**8), "--memory-budget", "4096") as server:
        key = server.key(TEAM)
        status = node_status(server, key)
        assert status["memoryPressure"] and "under the 100000000 MB kept for the host" in status["memoryPressure"]
        assert status["sandboxes"] == 0  # the accounting has all the room there is
        with server.client(key) as c:
            refused = c.post("/v2/sandboxes", json={"templateID": "base", "timeout": 60}, timeout=600)
        assert refused.status_code == 503, refused.text
        body = refused.json()
        assert body["error_code"] == "memory_pressure" and body["message"].startswith("Host is under memory pressure")
        assert int(refused.headers["Retry-After"]) > 0
        assert node_status(server, key)["pools"] == [] or all(
            p["ready"] == 0 for p in node_status(server, key)["pools"])  # pools do not fill under pressure either
