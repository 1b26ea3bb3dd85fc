"""Volumes end to end: the released e2b SDK's `Volume`, unchanged, against `sandhive serve` with each OCI backend.

A volume outlives the sandboxes that mount it: a file one sandbox writes is read by a second one created after
the first was killed, and by the content API without any sandbox. Deleting it is refused (409) while a sandbox
mounts it, and works once none does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from e2b import Sandbox, Volume

from tests.api.rig import BACKENDS, Server, cli, container_server
from tests.api.volume_rig import delete_team_volumes

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]
TEAM = "volumes"


@pytest.fixture(scope="module", params=BACKENDS)
def live(request: pytest.FixtureRequest) -> Iterator[Server]:
    with container_server("volumes", TEAM, "--volume-size-mb", "64", backend=request.param) as server:
        try:
            yield server
        finally:
            delete_team_volumes(server, TEAM)



@pytest.fixture(scope="module", autouse=True)
def e2b_env(live: Server) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("E2B_API_URL", live.url)
        mp.setenv("E2B_SANDBOX_URL", live.url)
        mp.setenv("E2B_VOLUME_API_URL", live.url)
        mp.setenv("E2B_API_KEY", live.key(TEAM))
        mp.delenv("E2B_DEBUG", raising=False)
        mp.delenv("E2B_DOMAIN", raising=False)
        yield


@pytest.fixture()
def volume() -> Iterator[Volume]:
    vol = Volume.create(f"data-{uuid.uuid4().hex[:8]}")
    try:
        yield vol
    finally:
        Volume.destroy(vol.volume_id)


def test_a_volume_outlives_its_sandboxes(volume: Volume) -> None:
    mounts = {"/mnt/data": volume}
    first = Sandbox.create(timeout=120, volume_mounts=mounts)
    try:
        result = first.commands.run("echo kept > /mnt/data/note.txt && id -u && stat -c %U /mnt/data/note.txt")
        assert result.stdout.split() == ["1000", "user"]
    finally:
        first.kill()
    second = Sandbox.create(timeout=120, volume_mounts=mounts)
    try:
        assert second.commands.run("cat /mnt/data/note.txt").stdout == "kept\n"
        assert second.files.read("/mnt/data/note.txt") == "kept\n"
    finally:
        second.kill()
    # and without a sandbox, through the content API
    assert volume.read_file("/note.txt") == "kept\n"
    info = volume.get_info("/note.txt")
    assert (info.type.value, info.size, info.uid) == ("file", 5, 1000)


def test_delete_is_refused_while_mounted(volume: Volume) -> None:
    sandbox = Sandbox.create(timeout=120, volume_mounts={"/data": volume})
    try:
        with pytest.raises(Exception, match="mounted by sandbox"):
            Volume.destroy(volume.volume_id)
    finally:
        sandbox.kill()
    assert Volume.destroy(volume.volume_id) is True
    assert volume.volume_id not in [v.volume_id for v in Volume.list()]
    assert Volume.destroy(volume.volume_id) is False  # gone: 404


def test_volume_api_list_get_and_names() -> None:
    name = f"n-{uuid.uuid4().hex[:8]}"
    vol = Volume.create(name)
    try:
        assert (vol.name, bool(vol.token)) == (name, True)
        assert any(v.volume_id == vol.volume_id and v.name == name for v in Volume.list())
        assert Volume.get_info(vol.volume_id).token == vol.token
        with pytest.raises(Exception, match="already exists"):
            Volume.create(name)
    finally:
        Volume.destroy(vol.volume_id)


def test_content_api_round_trip(volume: Volume) -> None:
    volume.make_dir("/a/b", force=True)
    volume.write_file("/a/b/c.bin", b"\x00\x01" * 1000, mode=0o600)
    assert volume.read_file("/a/b/c.bin", format="bytes") == b"\x00\x01" * 1000
    names = sorted(e.path for e in volume.list("/", depth=3))
    assert names == ["/a", "/a/b", "/a/b/c.bin"]
    entry = volume.update_metadata("/a/b/c.bin", mode=0o640, uid=0)
    assert (entry.mode, entry.uid, entry.gid) == (0o640, 0, 1000)
    assert volume.exists("/a/b/c.bin")
    volume.remove("/a")
    assert not volume.exists("/a/b/c.bin")


def test_sandhive_sdk_and_cli(live: Server) -> None:
    """Sandhive's own SDK (`sandhive.Volume`, `Sandbox.create(volume_mounts=...)`) and `sandhive volume ...`."""
    import sandhive

    opts = {"api_key": live.key(TEAM), "api_url": live.url}
    name = f"cli-{uuid.uuid4().hex[:8]}"
    env = {"SANDHIVE_API_KEY": live.key(TEAM), "SANDHIVE_API_URL": live.url}
    volume_id = cli("volume", "create", name, env=env).stdout.strip()
    try:
        assert f"{volume_id}  {name}" in cli("volume", "list", env=env).stdout
        vol = sandhive.Volume.connect(volume_id, **opts)
        vol.write_file("/in/hello.txt", "from outside")
        with sandhive.Sandbox.create(volume_mounts={"/work": vol}, timeout=120, **opts) as sbx:
            assert sbx.commands.run("cat /work/in/hello.txt && echo back > /work/out.txt").stdout == "from outside"
        assert vol.read_file("/out.txt") == "back\n"
        assert sorted(vol.list("/")) == ["/in", "/out.txt"]
        assert name in {v.name for v in sandhive.Volume.list(**opts)}
    finally:
        assert f"Deleted {volume_id}" in cli("volume", "delete", volume_id, env=env).stdout
    missing = cli("volume", "delete", volume_id, env=env, check=False)
    assert missing.returncode == 3 and "not found" in missing.stderr
