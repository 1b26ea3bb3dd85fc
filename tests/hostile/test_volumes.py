"""Attacks on volumes: through another team's key, through names and paths, and from inside a sandbox that mounts
one. Checked from the host: no host file read, written, chmodded or removed; the volume fills at its own size.

The content API works on the volume as host root, and everything in a volume may have been planted by sandboxed
code (symlinks to /etc/shadow, to host directories, FIFOs). Promises: docs/security.md 24-25.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import CommandExitException, Sandbox, Volume

from tests.api.rig import BACKENDS, Server, container_server
from tests.api.volume_rig import delete_team_volumes

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]
TEAM, OTHER = "vol-owner", "vol-other"
SIZE_MB = 32
BASE = 100_000  # userns.BASE: the canonical range volumes store files in


@pytest.fixture(scope="module", params=BACKENDS)
def live(request: pytest.FixtureRequest) -> Iterator[Server]:
    with container_server("hostile-volumes", TEAM, "--volume-size-mb", str(SIZE_MB), "--team-volume-mb", "100",
                          backend=request.param) as server:
        try:
            yield server
        finally:
            delete_team_volumes(server, TEAM, OTHER, "vol-quota")


@pytest.fixture(scope="module", autouse=True)
def e2b_env(live: Server) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_VOLUME_API_URL"):
            mp.setenv(name, live.url)
        mp.setenv("E2B_API_KEY", live.key(TEAM))
        mp.delenv("E2B_DEBUG", raising=False)
        mp.delenv("E2B_DOMAIN", raising=False)
        yield


@pytest.fixture(scope="module")
def volume(live: Server) -> Iterator[Volume]:
    vol = Volume.create(f"victim-{uuid.uuid4().hex[:6]}")
    try:
        yield vol
    finally:
        Volume.destroy(vol.volume_id)


@pytest.fixture(scope="module")
def planted(volume: Volume, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A host file outside the volume (a stand-in for /etc/shadow that may be written), and links to it and to host
    directories planted in the volume from inside a sandbox."""
    host_dir = Path(f"/tmp/sandhive-volume-target-{uuid.uuid4().hex[:8]}")
    host_dir.mkdir(mode=0o700)
    target = host_dir / "secret"
    target.write_text("host secret\n")
    target.chmod(0o600)
    sandbox = Sandbox.create(timeout=120, volume_mounts={"/mnt/v": volume})
    try:
        sandbox.commands.run(
            f"cd /mnt/v && ln -s /etc/shadow shadow && ln -s {target} abs && ln -s ../../../../../..{target} rel "
            f"&& ln -s {host_dir} hostdir && ln -s /etc etc && mkfifo fifo && mkdir d && echo ok > d/f")
    finally:
        sandbox.kill()
    try:
        yield target
    finally:
        target.unlink(missing_ok=True)
        host_dir.rmdir()


def test_another_team_sees_nothing(live: Server, volume: Volume) -> None:
    """Promise 24: another team gets 404 for the volume's id and name, and no token of its own opens it."""
    other = live.key(OTHER)
    with live.client(other) as c:
        assert c.get(f"/volumes/{volume.volume_id}").status_code == 404
        assert c.delete(f"/volumes/{volume.volume_id}").status_code == 404
        assert volume.volume_id not in {v["volumeID"] for v in c.get("/volumes").json()}
        created = c.post("/v2/sandboxes", json={"templateID": "base", "timeout": 60,
                                                "volumeMounts": [{"name": volume.name, "path": "/mnt/x"}]})
        assert created.status_code == 404 and "not found" in created.json()["message"]
        own = c.post("/volumes", json={"name": volume.name})  # the same name is free in another team
        assert own.status_code == 201, own.text
        try:
            own_token = own.json()["token"]
            with httpx.Client(base_url=live.url, trust_env=False) as anon:
                for token in (own_token, "none", "x" * 64):
                    r = anon.get(f"/volumecontent/{volume.volume_id}/dir", params={"path": "/"},
                                 headers={"Authorization": f"Bearer {token}"})
                    assert r.status_code == 401 and set(r.json()) >= {"code", "message"}
        finally:
            assert c.delete(f"/volumes/{own.json()['volumeID']}").status_code == 204
    assert Volume.get_info(volume.volume_id).name == volume.name  # untouched


@pytest.mark.parametrize("name", ["../x", "a/b", ".", "..", "x" * 64, "", "-x", "a\0b", "é"])
def test_volume_names_are_plain(live: Server, name: str) -> None:
    with live.client(live.key(TEAM)) as c:
        r = c.post("/volumes", json={"name": name})
        assert r.status_code == 400 and "invalid volume name" in r.json()["message"], r.text


@pytest.mark.parametrize("path", ["relative", "/", "/proc", "/proc/self", "/sys/x", "/dev", "/.sandhive",
                                  "/mnt/../etc", "/mnt/./x", "/etc", "/etc/hosts"])
def test_mount_paths_are_plain(live: Server, volume: Volume, path: str) -> None:
    with live.client(live.key(TEAM)) as c:
        r = c.post("/v2/sandboxes", json={"templateID": "base", "timeout": 60,
                                          "volumeMounts": [{"name": volume.name, "path": path}]})
        assert r.status_code == 400 and "mount path" in r.json()["message"], r.text


def test_content_paths_never_leave_the_volume(volume: Volume, planted: Path) -> None:
    """Promise 25: '..', absolute paths and planted symlinks resolve inside the volume or are refused."""
    for path in ("../../../../etc/shadow", "/../etc/passwd", "d/../../x"):
        with pytest.raises(Exception, match="not allowed"):
            volume.read_file(path)
    assert volume.read_file("/d/f") == "ok\n"  # absolute means from the volume's root
    assert not volume.exists("/passwd")
    for path in ("shadow", "abs", "rel", "hostdir/secret", "etc/passwd", "/etc/shadow", "/etc/passwd"):
        with pytest.raises(Exception, match="outside the volume|not found"):
            volume.read_file(path)
    assert volume.read_file("d/f") == "ok\n"
    # a symlink is described, never followed
    info = volume.get_info("abs")
    assert (info.type.value, info.target) == ("symlink", str(planted))
    # writes, chmods, mkdirs and removes through the links leave the host alone
    before = planted.stat()
    for call in (lambda: volume.write_file("abs", "pwned"), lambda: volume.write_file("hostdir/secret", "pwned"),
                 lambda: volume.write_file("hostdir/new", "pwned"), lambda: volume.make_dir("hostdir/new"),
                 lambda: volume.make_dir("etc/x/y", force=True), lambda: volume.remove("hostdir/secret"),
                 lambda: volume.remove("etc/hostname"), lambda: volume.update_metadata("hostdir/secret", mode=0o777)):
        with pytest.raises(Exception):  # noqa: B017 — any refusal will do; the host side is what is checked
            call()
    volume.update_metadata("abs", mode=0o777, uid=0)  # the link itself: lchown, and no chmod through it
    after = planted.stat()
    assert planted.read_text() == "host secret\n"
    assert (after.st_mode, after.st_uid, after.st_gid) == (before.st_mode, before.st_uid, before.st_gid)
    assert sorted(os.listdir(planted.parent)) == ["secret"]
    assert Path("/etc/hostname").exists()
    volume.remove("hostdir")  # removes the link, not the host directory
    assert planted.exists()


def test_a_planted_fifo_does_not_hang_the_api(live: Server, volume: Volume, planted: Path) -> None:
    fifo = live.data_dir / "volumes" / volume.volume_id / "fs" / "fifo"
    if not fifo.exists():  # gVisor keeps a FIFO made inside the sandbox in its own kernel: plant it from the host
        os.mkfifo(fifo)
    with pytest.raises(Exception, match="not a regular file"):
        volume.read_file("fifo", request_timeout=30)
    with pytest.raises(Exception, match="not a regular file|cannot be used"):
        volume.write_file("fifo", "x", request_timeout=30)


def test_a_filler_gets_enospc_at_the_volume_size(live: Server, volume: Volume) -> None:
    """Promise 25: the volume fills at its own size; the sandbox's writes are owned by the canonical range on the
    host, and the host mount is nosuid,nodev."""
    sandbox = Sandbox.create(timeout=300, volume_mounts={"/mnt/v": volume})
    try:
        with pytest.raises(CommandExitException) as failed:
            sandbox.commands.run("dd if=/dev/zero of=/mnt/v/fill bs=1M count=200", timeout=240)
        assert "No space left" in failed.value.stderr
        size = int(sandbox.commands.run("stat -c %s /mnt/v/fill").stdout)
        assert size <= SIZE_MB * 2**20
        sandbox.commands.run("rm /mnt/v/fill && touch /mnt/v/mine")
    finally:
        sandbox.kill()
    fs = live.data_dir / "volumes" / volume.volume_id / "fs"
    st = (fs / "mine").stat()
    assert (st.st_uid, st.st_gid) == (BASE + 1000, BASE + 1000)
    assert stat.S_IMODE(fs.parent.stat().st_mode) == 0o700
    options = next(line.split()[5] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                   if line.split()[4] == str(fs.resolve()))
    assert {"nosuid", "nodev"} <= set(options.split(","))
    image = fs.parent / "volume.ext4"
    assert image.stat().st_size == SIZE_MB * 2**20


def test_team_volume_quota(live: Server) -> None:
    """A team's volumes together stay under --team-volume-mb (429 beyond)."""
    key = live.key("vol-quota")
    with live.client(key) as c:
        made = []
        try:
            for n in range(10):
                r = c.post("/volumes", json={"name": f"q{n}"})
                if r.status_code != 201:
                    break
                made.append(r.json()["volumeID"])
            assert r.status_code == 429 and "quota" in r.json()["message"]
            assert len(made) == 100 // SIZE_MB
        finally:
            for volume_id in made:
                c.delete(f"/volumes/{volume_id}")
