"""The files a gVisor pause keeps are unpacked inside a sandbox, never by the host (docs/security.md promise 37).

By default a gvisor pause reads the sandbox's changes out through the sandbox itself (`node/gvisor_files.py`):
the stream in `files.tar` is written by a program that sandboxed code, root inside, can subvert. Here it is
replaced by a forged one — members climbing out with `..`, a symlink to a host directory and a file written
through it, an absolute path naming a host file, the deletion of a host file — and the sandbox is resumed from
it as after a host reboot. On the host nothing is written or removed; the sandbox comes up, and what the
stream said landed inside it. A stream larger than the cap is refused at the pause, and the sandbox runs on.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandhive.node import gvisor_files
from sandhive.node.errors import BackendError, BackendUnavailable
from sandhive.node.gvisor import GVisorRuntime
from sandhive.node.gvisor_pause import FILES
from sandhive.node.node import Node
from sandhive.node.request import CreateRequest, Identity
from sandhive.node.runtime import SandboxHandle, SandboxSpec, TemplateImage
from tests.helpers import stop_adopting_orphans
from tests.node.conftest import make_busybox_rootfs, requirements

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
async def gvisor(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[GVisorRuntime, TemplateImage]]:
    reason = requirements() or (None if shutil.which("runsc") else "runsc (gVisor) is not installed")
    if reason:
        print(f"skipping the gvisor kept-files attacks: {reason}")
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="sandhive-hostile-files-", dir="/var/tmp"))
    root.chmod(0o711)  # sandboxes' unprivileged uids walk down to their roots
    rootfs = root / "template" / "rootfs"
    make_busybox_rootfs(rootfs)
    rt = GVisorRuntime(root / "data", files_on_disk=False)
    try:
        await rt.prepare()
    except BackendUnavailable as exc:
        await rt.close()
        shutil.rmtree(root, ignore_errors=True)
        print(f"skipping the gvisor kept-files attacks: {exc}")
        pytest.skip(f"gvisor cannot run here: {exc}")
    yield rt, TemplateImage("busybox", rootfs, default_user="root", default_workdir="/root")
    leftovers = await rt.running_ids()
    await rt.close()
    stop_adopting_orphans()
    shutil.rmtree(root, ignore_errors=True)
    assert not leftovers, f"gvisor sandboxes left behind: {leftovers}"


async def _start(rt: GVisorRuntime, template: TemplateImage) -> SandboxHandle:
    return await Node(rt).create(CreateRequest(template, cpu_count=1, memory_mb=256, disk_mb=64,
                                               allow_internet_access=False), Identity(default_user="root"))


def _spec(handle: SandboxHandle, template: TemplateImage) -> SandboxSpec:
    return SandboxSpec(handle.sandbox_id, template, cpu_count=1, memory_mb=256, disk_mb=64,
                       allow_internet_access=False)


def _forged(marker: Path) -> bytes:
    """What subverted code could make the save program write instead of the sandbox's changes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, data: bytes = b"", **fields: object) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            for key, value in fields.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data))
        add("deleted", f"{marker}/victim\0/../../..{marker}/victim".encode())
        add("files/../../../../../../climbed", b"climbed")
        add("files/root/link", type=tarfile.SYMTYPE, linkname=str(marker))
        add("files/root/link/through", b"through")
        add(f"files{marker}/absolute", b"absolute")
        add("files/root/hard", type=tarfile.LNKTYPE, linkname=f"../../..{marker}/victim")
    return out.getvalue()


async def test_a_forged_file_stream_is_unpacked_inside_the_sandbox_only(
        gvisor: tuple[GVisorRuntime, TemplateImage], tmp_path: Path) -> None:
    rt, template = gvisor
    marker = Path(tempfile.mkdtemp(prefix="sandhive-hostile-marker-", dir="/var/tmp"))
    (marker / "victim").write_text("host file")
    handle = await _start(rt, template)
    try:
        saved = await rt.pause(handle, "memory", tmp_path / "paused")
        (saved.directory / FILES).write_bytes(_forged(marker))
        await rt.stop_saved(saved)  # the reboot: the frozen sandbox is gone

        handle = await rt.resume(saved, _spec(handle, template))
        assert sorted(p.name for p in marker.iterdir()) == ["victim"]  # nothing written on the host
        assert (marker / "victim").read_text() == "host file"  # nor removed or changed
        proc = await asyncio.create_subprocess_exec(
            *rt._exec_argv(handle.sandbox_id), "cat", "/climbed", f"{marker}/absolute", stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert out == b"climbedabsolute"  # what the stream said, inside the sandbox's own root
    finally:
        await rt.stop(handle)
        shutil.rmtree(marker, ignore_errors=True)


async def test_a_stream_past_the_cap_is_refused_and_the_sandbox_runs_on(
        gvisor: tuple[GVisorRuntime, TemplateImage], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rt, template = gvisor
    handle = await _start(rt, template)
    try:
        proc = await asyncio.create_subprocess_exec(*rt._exec_argv(handle.sandbox_id), "sh", "-c",
                                                    "head -c 3000000 /dev/urandom > /root/big")
        assert await proc.wait() == 0
        monkeypatch.setattr(gvisor_files, "cap", lambda disk_bytes: 1 << 20)
        with pytest.raises(BackendError, match="more than"):
            await rt.pause(handle, "memory", tmp_path / "paused")
        assert not (tmp_path / "paused").exists()
        assert await rt.is_running(handle)
    finally:
        await rt.stop(handle)
