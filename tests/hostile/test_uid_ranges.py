"""Every sandbox runs in a host uid/gid range of its own (issue 12), never the range template trees are stored in.

Before the fix every sandbox's root was host uid 100000, the owner of every template tree too: a process that
escaped one sandbox's namespaces could signal or ptrace every other sandbox's processes and write their files.
Now each sandbox's range follows its network slot, templates reach it through an idmapped mount, and everything
is checked from the host: the processes' uids, the owners of files the sandbox wrote, and that the range is
free again once the sandbox is killed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandhive.node import userns
from tests.helpers import wait_until

from .conftest import Live
from .sandboxes import host_uid, run, sandbox, sandbox_dir

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(600)]


def _range_of(live: Live, sandbox_id: str) -> int:
    """The host uid of the sandbox's root, as the host sees its first process (envd, or gVisor's sentry)."""
    pid = int((sandbox_dir(live, sandbox_id) / "pid").read_text())
    return host_uid(pid)


def _processes_in(first: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                uid = host_uid(int(entry.name))
            except (OSError, StopIteration):
                continue
            if first <= uid < first + userns.SIZE:
                pids.append(int(entry.name))
    return pids


def _owners(tree: Path) -> list[tuple[str, int]]:
    """(path, host uid) of everything under `tree`; entries the running sandbox removes meanwhile are skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in [None, *dirnames, *filenames]:
            path = dirpath if name is None else os.path.join(dirpath, name)
            try:
                found.append((path, os.lstat(path).st_uid))
            except FileNotFoundError:
                continue
    return found


def _gone(root: int, seconds: float = 15.0) -> bool:
    """No process runs in the range `root` starts (a kill answers before the runtime reaped everything)."""
    try:
        wait_until(lambda: not _processes_in(root), seconds, f"the processes of range {root} to end", interval=0.1)
    except AssertionError:
        return False
    return True


def test_each_sandbox_has_its_own_host_uid_range(live: Live) -> None:
    with sandbox(live) as a, sandbox(live) as b:
        root_a, root_b = _range_of(live, a.sandbox_id), _range_of(live, b.sandbox_id)
        for root in (root_a, root_b):
            assert root >= userns.SANDBOX_RANGES_START, root
            assert not userns.BASE <= root < userns.BASE + userns.SIZE, "a sandbox runs in the template range"
        assert abs(root_a - root_b) >= userns.SIZE, (root_a, root_b)
        assert _processes_in(root_a) and not set(_processes_in(root_a)) & set(_processes_in(root_b))

        code, out = run(a, "echo mine > /home/user/written-by-a && id -u && stat -c %u /home/user/written-by-a")
        assert code == 0 and out.split() == ["1000", "1000"], out
        upper = sandbox_dir(live, a.sandbox_id) / "rw" / "upper"
        if live.server.backend == "container":
            written = upper / "home/user/written-by-a"
            assert written.read_text() == "mine\n"
            assert (written.stat().st_uid, written.stat().st_gid) == (root_a + 1000, root_a + 1000)
        else:  # gVisor keeps the root's writes in its own file store; the host sees only its file, if any
            print("gvisor: files written in the sandbox live in the sentry's file store, not as host files")
        for path, owner in _owners(upper):
            assert root_a <= owner < root_a + userns.SIZE or owner == 0, f"{path} is owned by {owner}"
        # The template tree itself stays in the canonical range, untouched by either sandbox.
        code, out = run(b, "stat -c %u /home/user/written-by-a 2>&1; stat -c %u /etc/passwd")
        assert "No such file" in out and out.split()[-1] == "0", out
    for root in (root_a, root_b):
        assert _gone(root), f"processes of a killed sandbox still run in range {root}: {_processes_in(root)}"


def test_a_killed_sandboxes_range_is_free(live: Live) -> None:
    with sandbox(live) as sbx:
        root = _range_of(live, sbx.sandbox_id)
        slot = (root - userns.SANDBOX_RANGES_START) // userns.SIZE
        assert userns.sandbox_range(slot) == root
        assert Path(f"/run/sandhive/net-slots/{slot}").exists()
        state = sandbox_dir(live, sbx.sandbox_id)
    assert _gone(root)
    wait_until(lambda: not Path(f"/run/sandhive/net-slots/{slot}").exists(), 15,
               "the network slot (and so the uid range) to be freed", interval=0.1)
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if str(state) in line], "mounts of a killed sandbox remain"
