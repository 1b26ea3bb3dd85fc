"""A pool miss served by a warm shell (`sandhive serve --miss-shells 1`, container backend) leaves no way back to the
shell's old root or to host files: the root was switched under envd by a host-side `pivot_root` in the shell's
mount namespace and the old root detached (docs/persistence.md "template-agnostic warm shells").

Tried as the sandbox's root (passwordless sudo in `base`): envd's root and working directory (`/proc/1/root`,
`/proc/1/cwd`), every open file descriptor of every process in the sandbox, `..` from the root, the mount table.
Checked from the host too: every process of the sandbox has the template's overlay as its root.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import Sandbox

from tests.api.pool_rig import node_status
from tests.api.rig import Server, container_server, create_key

from .conftest import TEAM, Live
from .sandboxes import run, sandbox_dir

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]

SHELL_TEMPLATE = "sandhive-shell"
OLD_ROOT_MARK = ".next-root"  # a directory only the shell's root had

PROBE = r"""
echo "root: $(readlink /proc/1/root) cwd: $(readlink /proc/1/cwd)"
echo "same: $(stat -c %d:%i / /proc/1/root/ /proc/1/cwd/ /.. /../.. | sort -u | wc -l)"
cd / && cd .. && cd .. && echo "dotdot: $(pwd) $(ls -a | tr '\n' ' ')"
for p in /proc/[0-9]*; do
  for f in $p/root $p/cwd $p/fd/*; do
    [ -d "$f" ] && ls -a "$f/" 2>/dev/null | grep -qx '.next-root' && echo "OLD ROOT via $f"
  done
done
for f in /proc/[0-9]*/fd/*; do echo "fd $(readlink $f)"; done | sort -u
echo ---mountinfo
cat /proc/self/mountinfo
"""


@pytest.fixture(scope="module")
def shell_server() -> Iterator[Server]:
    with container_server("shells", TEAM, "--miss-shells", "1", "--pool-size", "0") as server:
        yield server


def _wait_for_shell(server: Server, admin: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pools = [p for p in node_status(server, admin)["pools"] if p["templateID"] == SHELL_TEMPLATE]
        if pools and pools[0]["ready"] >= 1:
            return
        time.sleep(0.5)
    raise AssertionError(f"no warm shell became ready within {timeout:.0f} s")


def test_no_path_leads_to_the_shells_old_root(shell_server: Server) -> None:
    admin = create_key(shell_server.data_dir, "shell-operator", "--admin")
    key = shell_server.key(TEAM)
    _wait_for_shell(shell_server, admin)
    before = {p["templateID"]: p for p in node_status(shell_server, admin)["pools"]}[SHELL_TEMPLATE]
    sbx = Sandbox.create(timeout=120, api_key=key, api_url=shell_server.url, sandbox_url=shell_server.url)
    try:
        after = {p["templateID"]: p for p in node_status(shell_server, admin)["pools"]}[SHELL_TEMPLATE]
        assert after["hits"] == before["hits"] + 1, "the create was not served by the warm shell"
        code, out = run(sbx, PROBE, user="root")
        assert code == 0, out
        head, _, mountinfo = out.partition("---mountinfo\n")
        print(head)
        assert "root: / cwd: /" in head
        assert "same: 1" in head  # /, envd's root and cwd, /.. and /../.. are one directory
        assert "dotdot: / " in head and OLD_ROOT_MARK not in head.split("dotdot:")[1].splitlines()[0]
        assert "OLD ROOT" not in head
        fds = [line[3:] for line in head.splitlines() if line.startswith("fd ")]
        assert not [f for f in fds if f.startswith(("/var/", "/work/", "/tmp/sandhive", "/" + OLD_ROOT_MARK))], fds
        assert OLD_ROOT_MARK not in mountinfo and "size=1024k" not in mountinfo
        root_line = next(line for line in mountinfo.splitlines() if line.split()[4] == "/")
        assert " - overlay overlay " in root_line, root_line
        # The same from the host: every process of the sandbox has the template's overlay as its root.
        state = sandbox_dir(Live(shell_server, key), sbx.sandbox_id)
        root = os.stat(state / "rootfs")
        pids = [int(p) for p in (Path("/sys/fs/cgroup/pids/sandhive") / sbx.sandbox_id / "cgroup.procs")
                .read_text().split()]
        assert pids
        for pid in pids:
            st = os.stat(f"/proc/{pid}/root")
            assert (st.st_dev, st.st_ino) == (root.st_dev, root.st_ino), f"process {pid} has another root"
    finally:
        sbx.kill()
