"""envd's reaper keeps no exit status for pids nobody waits for.

An orphan re-parented to envd (a command's background child) is reaped and forgotten: a status kept by pid
would be handed to a later command that gets the same pid once pids wrap, making it look ended at once.
Runs in a child Python process, because the reaper makes its process a child subreaper.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import asyncio, os, subprocess
    from sandhive.envd.reaper import Reaper

    async def main():
        reaper = Reaper()
        reaper.install(asyncio.get_running_loop())
        # sh starts a background child and exits: the child is re-parented to us (a subreaper) and ends.
        ended = asyncio.Event()
        sh = subprocess.Popen(["sh", "-c", "sleep 0.2 & echo $!"], stdout=subprocess.PIPE, text=True)
        orphan = int(sh.stdout.readline())
        reaper.watch(sh.pid, lambda status: ended.set())
        await asyncio.wait_for(ended.wait(), 10)
        for _ in range(100):  # wait until the orphan is gone (reaped by our SIGCHLD handler)
            await asyncio.sleep(0.05)
            if not os.path.exists(f"/proc/{orphan}"):
                break
        else:
            raise SystemExit("the orphan was never reaped")
        calls = []
        reaper.watch(orphan, calls.append)  # as a new command that got the orphan's pid would
        await asyncio.sleep(0.2)
        print("stale" if calls else "clean")

    asyncio.run(main())
""")


def test_an_orphans_status_is_not_handed_to_a_later_watch_of_its_pid() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"
