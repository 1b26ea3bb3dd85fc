"""envd as a sandbox's first process: zombies reaped, floods bounded, many streams at once."""

from __future__ import annotations

import asyncio
import os
import time

from e2b import AsyncSandbox, Sandbox

from tests.helpers import wait_until


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _zombie_children(pid: int) -> list[int]:
    zombies = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            zombies.append(int(entry))
    return zombies


def test_orphans_are_reaped(envd, sbx: Sandbox) -> None:
    sbx.commands.run("for i in 1 2 3 4 5; do (sleep 0.2 &) ; done")  # grandchildren re-parent to envd
    time.sleep(1.0)
    assert _zombie_children(envd.proc.pid) == []


def test_flood_with_a_stalled_client_stays_bounded(envd, sbx: Sandbox) -> None:
    before = _rss_kib(envd.proc.pid)
    handle = sbx.commands.run("cat /dev/zero", background=True)  # nobody reads the stream yet
    time.sleep(2.0)
    grown = _rss_kib(envd.proc.pid) - before
    assert grown < 64 * 1024, f"envd grew by {grown} KiB while a client stalled"
    assert sbx.commands.kill(handle.pid)
    # SIGKILL is delivered and the process reaped after Kill answers (as in E2B's envd): under load a List
    # right after it can still see the process for a moment.
    wait_until(lambda: handle.pid not in [p.pid for p in sbx.commands.list()], 10, "the killed flood to be reaped")


def test_flood_with_no_client_keeps_running_bounded(envd, sbx: Sandbox) -> None:
    before = _rss_kib(envd.proc.pid)
    handle = sbx.commands.run("head -c 200000000 /dev/zero; echo tail-marker", background=True)
    handle.disconnect()
    wait_until(lambda: handle.pid not in [p.pid for p in sbx.commands.list()], 60,
               "the detached flood to run to its end", interval=0.2)
    assert _rss_kib(envd.proc.pid) - before < 64 * 1024


async def test_many_concurrent_streams(asbx: AsyncSandbox) -> None:
    async def one(i: int) -> str:
        return (await asbx.commands.run(f"sleep 0.{i % 5}; echo {i}")).stdout

    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert results == [f"{i}\n" for i in range(50)]
