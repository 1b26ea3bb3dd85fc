"""`sudo` works in container sandboxes (issue 12, issue 13), and the root it gives is the sandbox's, not the host's.

no_new_privs used to be set on the sandbox's process tree, so the base template's passwordless sudo failed
("The 'no new privileges' flag is set"). It is off now; the user namespace, the capability set, seccomp and the
masked paths still bound what root inside can do, which the second test checks from the host.

gVisor: runsc (0.0~20240729) ignores the bundle's `noNewPrivileges` and always sets PR_SET_NO_NEW_PRIVS for the
sandbox ("noNewPrivileges ignored. PR_SET_NO_NEW_PRIVS is assumed to always be set"), so setuid programs cannot
raise privileges under gVisor; there a command runs as root with the SDK's `user="root"`.
"""

from __future__ import annotations

import os
import time

import pytest

from sandhive.node import userns
from tests.helpers import wait_until

from .conftest import Live
from .sandboxes import host_uid, run, sandbox

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(600)]
GVISOR_NNP = "runsc always sets no_new_privs (it ignores the bundle's noNewPrivileges): sudo cannot work under gVisor"


def _skip_on_gvisor(live: Live) -> None:
    if live.server.backend == "gvisor":
        print(f"skipping on gvisor: {GVISOR_NNP}")
        pytest.skip(GVISOR_NNP)


def test_sudo_works_as_user(live: Live) -> None:
    _skip_on_gvisor(live)
    with sandbox(live) as sbx:
        code, out = run(sbx, "sudo -n true", user="user")
        assert code == 0, out
        code, out = run(sbx, "id -u; sudo -n id -u", user="user")
        assert code == 0 and out.split() == ["1000", "0"], out


def _host_pids_running(argv: str) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    if f.read().replace(b"\0", b" ").strip() == argv.encode():
                        pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_sudo_root_is_an_unprivileged_host_uid(live: Live) -> None:
    _skip_on_gvisor(live)
    marker = f"sleep {int(time.time() * 1000) % 100000 + 1000}"
    with sandbox(live) as sbx:
        code, out = run(sbx, f"sudo -n sh -c '{marker} > /dev/null 2>&1 &' && echo started", user="user")
        assert code == 0 and "started" in out, out
        pids = wait_until(lambda: _host_pids_running(marker), 10, f"{marker!r} started with sudo to run")
        uids = {host_uid(pid) for pid in pids}
        assert all(uid >= userns.SANDBOX_RANGES_START for uid in uids), f"sudo's root is host uid {uids}"
