"""Paused sandboxes and snapshots survive a host reboot (issue 14; released `e2b` SDK, container backend, a server
of its own). The server is SIGKILLed, a reboot is simulated by removing what one removes (`simulate_host_reboot`),
and a server started on the same data dir resumes each paused sandbox on `connect`: a memory pause with its
process and in-memory state, a filesystem pause with its files; one of them on its old slot, the others on another
one because a different sandbox took theirs meanwhile; a volume is bound again. A snapshot taken before the
reboot still restores."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import Sandbox, Volume

from sandhive.node import cgroups, mounts, network
from tests.api.rig import Server, container_server, start_server
from tests.helpers import wait_until

from .conftest import counter, start_counter

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]
TEAM = "persistence-reboot"
SQUATTER = "reboot-squatter"  # a stand-in for a sandbox that took a paused sandbox's slot after the reboot


@pytest.fixture(scope="module")
def rebootable() -> Iterator[Server]:
    with container_server("persistence-reboot", TEAM, "--pool-size", "0", backend="container") as server:
        yield server


@pytest.fixture(autouse=True)
def e2b_env(rebootable: Server, monkeypatch: pytest.MonkeyPatch) -> None:  # overrides the session server's
    monkeypatch.setenv("E2B_API_URL", rebootable.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", rebootable.url)
    monkeypatch.setenv("E2B_VOLUME_API_URL", rebootable.url)
    monkeypatch.setenv("E2B_API_KEY", rebootable.key(TEAM))


def slot_of(sandbox_id: str) -> int:
    """The network slot a sandbox holds: the file under /run/sandhive/net-slots that names it."""
    for entry in network.HOST_SLOTS_DIR.iterdir():  # host-wide: other servers' slots come and go meanwhile
        with contextlib.suppress(FileNotFoundError):
            if entry.read_text() == sandbox_id:
                return int(entry.name)
    raise AssertionError(f"sandbox {sandbox_id} holds no slot")


def simulate_host_reboot(data_dir: Path, sandbox_ids: list[str]) -> None:
    """Remove, for the paused sandboxes `sandbox_ids` of the `container` backend, exactly what a host reboot
    removes; what is on disk (the data dir's files) stays.

    A reboot empties /run and the kernel's state. For each sandbox: the host mounts of its disk (the overlay
    root, the idmapped template view and the ext4 writable layer under `<data-dir>/sandboxes/<id>/`, with its
    loop device) and of its volume views (`.../volumes/<n>`), its network namespace (/run/netns/sandhive-<id>),
    its slot's claim (/run/sandhive/net-slots/<n>), its cgroup (`sandhive/<id>` in each hierarchy) and runc's
    record of a live container (`<data-dir>/runc/<id>`, which would be stale). A paused sandbox has no netns,
    cgroup or runc container left (the pause removed them), so those three go only if present; the mounts and
    the slot are checked to be there first, so that the test notices if the node stops keeping them while
    paused (this simulation would then prove nothing). For the data dir: each volume's host mount
    (`<data-dir>/volumes/<id>/fs`). And the file systems themselves, flushed (see the wait at the end)."""
    for sandbox_id in sandbox_ids:
        sandbox_dir = data_dir / "sandboxes" / sandbox_id
        views = sorted((sandbox_dir / "volumes").iterdir()) if (sandbox_dir / "volumes").is_dir() else []
        for target in [*views, sandbox_dir / "rootfs", sandbox_dir / "lower", sandbox_dir / "rw"]:
            assert mounts.is_mounted(str(target)), f"{target} is not mounted: nothing for a reboot to take"
            subprocess.run(["umount", str(target)], check=True)  # the overlay before the two it stands on
        (network.HOST_SLOTS_DIR / str(slot_of(sandbox_id))).unlink()
        if (network.NETNS_DIR / network.netns_name(sandbox_id)).exists():
            subprocess.run(["ip", "netns", "del", network.netns_name(sandbox_id)], check=True)
        subprocess.run(["rm", "-rf", "--", str(data_dir / "runc" / sandbox_id)], check=True)
        for hierarchy in cgroups.V1.iterdir():
            cgroup = hierarchy / "sandhive" / sandbox_id
            if cgroup.is_dir():
                cgroup.rmdir()
    for fs in (data_dir / "volumes").glob("*/fs"):
        if mounts.is_mounted(str(fs)):
            subprocess.run(["umount", str(fs)], check=True)
    # A reboot ends those file systems, flushed. An unmount here only detaches our view of one: a mount namespace
    # copied meanwhile (any `ip netns exec` on the host) keeps it alive, unflushed, until it ends. So wait until
    # the kernel has let go of each image (its loop device detached by itself).
    images = [*(data_dir / "sandboxes" / i / "disk.ext4" for i in sandbox_ids), *data_dir.glob("volumes/*/volume.ext4")]
    for image in images:
        wait_until(lambda image=image: not subprocess.run(["losetup", "-j", str(image)], capture_output=True,
                                                          text=True, check=True).stdout, 60, f"{image} to be let go")


def squat(index: int) -> Path:
    """Take slot `index` for another sandbox, as one created after the reboot might have."""
    path = network.HOST_SLOTS_DIR / str(index)
    with open(path, "x") as f:
        f.write(SQUATTER)
    return path


def test_paused_sandboxes_and_a_snapshot_survive_a_host_reboot(rebootable: Server) -> None:
    volume = Volume.create(f"reboot-{uuid.uuid4().hex[:8]}")
    in_place = Sandbox.create(timeout=300)  # memory pause; its slot is free again after the reboot
    moved = Sandbox.create(timeout=300, volume_mounts={"/mnt/data": volume})  # memory pause; its slot is taken
    on_disk = Sandbox.create(timeout=300)  # filesystem pause; its slot is taken after the reboot
    sandboxes = (in_place, moved, on_disk)
    squatted: list[Path] = []
    snapshot_id = None
    try:
        for sandbox in sandboxes:
            start_counter(sandbox)
        moved.commands.run("echo on the volume > /mnt/data/note.txt")
        before = {s.sandbox_id: wait_until(lambda s=s: counter(s) >= 3 and counter(s), 30, "the counter to count")
                  for s in sandboxes}
        snapshot_id = in_place.create_snapshot().snapshot_id
        at_pause = {}
        for sandbox in (in_place, moved):  # read just before its pause: the loop counts on until the dump
            at_pause[sandbox.sandbox_id] = counter(sandbox)
            assert sandbox.pause() is True
        assert on_disk.pause(mode="filesystem") is True
        slots = {s.sandbox_id: slot_of(s.sandbox_id) for s in sandboxes}

        os.kill(rebootable.proc.pid, signal.SIGKILL)
        rebootable.proc.wait(10)
        simulate_host_reboot(rebootable.data_dir, [s.sandbox_id for s in sandboxes])
        squatted = [squat(slots[moved.sandbox_id]), squat(slots[on_disk.sandbox_id])]
        port = int(rebootable.url.rsplit(":", 1)[1])
        restarted = start_server(rebootable.data_dir, "--pool-size", "0", backend="container", port=port,
                                 timeout=300)
        rebootable.proc, rebootable.log = restarted.proc, restarted.log
        # The server is up, its warm shell filling: the paused sandbox holds its free slot again by now (before
        # any shell or pool could take it). Only another server on this shared host may have been quicker.
        in_place_slot = network.HOST_SLOTS_DIR / str(slots[in_place.sandbox_id])
        holder = in_place_slot.read_text() if in_place_slot.exists() else None
        if holder != in_place.sandbox_id:  # (None: taken and given back by another server meanwhile)
            assert holder is None or not (rebootable.data_dir / "sandboxes" / holder).exists(), \
                f"{holder}, a sandbox of this server (a shell's or pool's), took the paused sandbox's slot"
            print(f"slot {slots[in_place.sandbox_id]} was taken by {holder} of another server on this host")

        for sandbox in (in_place, moved):  # memory: the loop goes on from its in-memory count
            assert Sandbox.get_info(sandbox.sandbox_id).state.value == "paused"
            resumed = Sandbox.connect(sandbox.sandbox_id, timeout=120)
            after = counter(resumed)
            assert at_pause[sandbox.sandbox_id] <= after < at_pause[sandbox.sandbox_id] + 20, (at_pause, after)
            wait_until(lambda r=resumed, a=after: counter(r) > a, 30, "the counter to go on counting")
            assert resumed.files.read("/home/user/kept.txt") == "kept"
            assert resumed.commands.run("id -un", user="user").stdout.strip() == "user"

        assert moved.commands.run("cat /mnt/data/note.txt").stdout == "on the volume\n"  # bound again
        moved.commands.run("echo after > /mnt/data/after.txt", user="user")
        assert volume.read_file("/after.txt") == "after\n"

        resumed = Sandbox.connect(on_disk.sandbox_id, timeout=120)  # filesystem: the files, no process
        assert resumed.files.read("/home/user/kept.txt") == "kept"
        resumed.files.write("/home/user/after.txt", "written after the reboot")  # its files are still its own
        assert resumed.commands.run("cat /home/user/after.txt", user="user").stdout == "written after the reboot"
        first = counter(resumed)
        time.sleep(0.5)
        assert counter(resumed) == first  # the loop did not survive: only the files did

        if holder == in_place.sandbox_id:
            assert slot_of(in_place.sandbox_id) == slots[in_place.sandbox_id]
        for sandbox in (moved, on_disk):  # another slot, and the store knows it
            new_slot = slot_of(sandbox.sandbox_id)
            assert new_slot != slots[sandbox.sandbox_id]
            record = rebootable.store.get_sandbox(sandbox.sandbox_id)
            assert record is not None and record.runtime_state["slot"] == new_slot
            assert record.address == network.Slot(new_slot).sandbox_ip

        copy = Sandbox.create(snapshot_id, timeout=120)  # a snapshot stands on the data dir alone
        try:
            assert before[in_place.sandbox_id] <= counter(copy)
            assert copy.files.read("/home/user/kept.txt") == "kept"
        finally:
            copy.kill()
    except BaseException:
        print(rebootable.output()[-6000:])
        raise
    finally:
        for sandbox in sandboxes:
            Sandbox.kill(sandbox.sandbox_id)
        if snapshot_id is not None:
            Sandbox.delete_snapshot(snapshot_id)
        Volume.destroy(volume.volume_id)
        for path in squatted:
            if path.exists() and path.read_text() == SQUATTER:
                path.unlink()
