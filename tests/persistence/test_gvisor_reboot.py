"""A frozen gVisor sandbox survives a host reboot in the default configuration (issue 14; released `e2b` SDK,
the session's gvisor server, started without `SANDHIVE_GVISOR_FILES_ON_DISK`).

A memory pause on gvisor freezes the sandbox in place after reading its changes to the template out through
the sandbox (`node/gvisor_files.py`). The server is SIGKILLed and the reboot simulated by ending the frozen
sandbox and everything it held on the host (its runsc sandbox, netns, slot, mounts, cgroup: what the
runtime's own `stop` frees); a server started on the same data dir then resumes it on `connect` by a cold boot
of its files: files written as the user and as root are there with their owners, a deleted template file
stays deleted, and the env vars of its create are set again (its new envd was `/init`-ed as on create).
"""

from __future__ import annotations

import asyncio

import pytest
from e2b import Sandbox

from sandhive.node.gvisor import GVisorRuntime
from sandhive.node.runtime import SandboxHandle

from .conftest import Live

pytestmark = [pytest.mark.needs_backend, pytest.mark.backends("gvisor"), pytest.mark.timeout(600)]


def test_a_frozen_gvisor_sandbox_survives_a_host_reboot(live: Live) -> None:
    sandbox = Sandbox.create(timeout=300, envs={"KEPT_ENV": "from the create"})
    try:
        sandbox.files.write("/home/user/kept.txt", "kept")
        sandbox.commands.run("mkdir -p /srv/data && echo by root > /srv/data/f && rm /etc/motd", user="root")
        assert sandbox.pause() is True
        record = live.server.store.get_sandbox(sandbox.sandbox_id)
        assert record is not None and record.saved is not None
        state = record.saved["state"]
        assert state["frozen"] and state["files"] == "files.tar"  # frozen, and its files read out first

        # The reboot: the server dies, the frozen sandbox ends, and with it all it held on the host.
        handle = SandboxHandle(sandbox.sandbox_id, "gvisor", state["address"], dict(state["handle"]))
        live.sigkill_and_restart(meanwhile=lambda: asyncio.run(GVisorRuntime(live.server.data_dir).stop(handle)))

        assert Sandbox.get_info(sandbox.sandbox_id).state.value == "paused"
        resumed = Sandbox.connect(sandbox.sandbox_id, timeout=120)
        assert resumed.files.read("/home/user/kept.txt") == "kept"
        out = resumed.commands.run("cat /srv/data/f; stat -c %U /home/user/kept.txt; ls /etc/motd 2>&1 || true; "
                                   "echo $KEPT_ENV", user="user").stdout.splitlines()
        assert out[:2] == ["by root", "user"] and "No such file" in out[2], out
        assert out[3] == "from the create", out  # the cold-booted envd was /init-ed as on create
        resumed.files.write("/home/user/after.txt", "after the reboot")
        assert resumed.commands.run("cat /home/user/after.txt").stdout == "after the reboot"
        assert Sandbox.get_info(sandbox.sandbox_id).state.value == "running"
    except BaseException:
        print(live.server.output()[-6000:])
        raise
    finally:
        Sandbox.kill(sandbox.sandbox_id)
