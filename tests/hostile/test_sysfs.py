"""A sandbox sees its own sysfs, not the host's (issue 12): no host network interfaces, no host block devices,
and nothing in it writable.

Before the fix container sandboxes had a read-only bind of the host's /sys: every host NIC (with its MAC and
counters) and every host disk was listed. gVisor always served its own synthetic sysfs; it is checked the same way.
"""

from __future__ import annotations

import subprocess

import pytest

from .conftest import Live
from .sandboxes import run, sandbox

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(600)]

PROBE = ("ls -1 /sys/class/net 2>/dev/null; echo ---; ls -1 /sys/block /sys/class/block 2>/dev/null | grep -v : "
         "| grep -c . ; echo ---; cat /sys/class/net/eth0/address 2>/dev/null; echo ---; "
         "mkdir /sys/sandhive-probe 2>&1 && echo WROTE; grep ' /sys ' /proc/mounts")


def _links(*netns: str) -> dict[str, str]:
    """Interface name → MAC, on the host or (with `netns`) in the named network namespace."""
    out = subprocess.run(["ip", *(["-n", netns[0]] if netns else []), "-o", "link"], capture_output=True,
                         text=True, check=True).stdout
    links = {}
    for line in out.splitlines():
        fields = line.split()
        name = fields[1].rstrip(":").split("@")[0]
        links[name] = fields[fields.index("link/ether") + 1] if "link/ether" in fields else ""
    return links


def test_sysfs_is_the_sandboxes_own(live: Live) -> None:
    with sandbox(live) as sbx:
        code, out = run(sbx, PROBE, user="root")
        own = _links(f"sandhive-{sbx.sandbox_id}")
    host = _links()
    nets, block_count, mac, rest = (part.strip() for part in out.split("---"))
    inside = set(nets.split())
    host_only = set(host) - set(own)
    assert host_only, "the host has no interface of its own to compare with"
    assert not inside & host_only, f"host interfaces visible in the sandbox's sysfs: {inside & host_only}"
    assert inside <= set(own), inside
    if mac:  # the sandbox's eth0, not the host's interface of the same name
        assert mac == own["eth0"] and mac != host.get("eth0"), (mac, own, host.get("eth0"))
    if live.server.backend == "container":
        assert inside == {"lo", "eth0"}, inside
    assert block_count == "0", f"host block devices visible in the sandbox: {out}"
    assert "WROTE" not in rest, out
    mount = rest.splitlines()[-1].split()
    assert "ro" in mount[3].split(","), f"/sys is mounted writable: {mount}"
