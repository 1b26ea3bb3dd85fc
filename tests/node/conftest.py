"""The OCI backends on this host — `container` (runc) and `gvisor` (runsc) — with a busybox template built by
the test (seconds, no network). Every test here runs once per backend ([container] and [gvisor]).

Sandboxes are real: runc or runsc, user namespaces, network namespaces, overlay on tmpfs, cgroups. Everything
a test starts is stopped by the runtime, and each backend's run checks nothing is left behind. A backend
that cannot run here (runsc not installed, no gVisor platform works) is skipped with the reason printed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from e2b import ConnectionConfig, Sandbox
from packaging.version import Version

from sandhive.envd import ENVD_VERSION
from sandhive.node import userns
from sandhive.node.container import ContainerRuntime
from sandhive.node.errors import BackendUnavailable
from sandhive.node.gvisor import GVisorRuntime
from sandhive.node.node import Node
from sandhive.node.oci_runtime import OciRuntime
from sandhive.node.request import CreateRequest, Identity
from sandhive.node.runtime import SandboxHandle, TemplateImage
from tests.helpers import stop_adopting_orphans


def make_busybox_rootfs(root: Path) -> None:
    """A rootfs of Debian's static busybox, with root and `user`, shifted into the sandbox uid range."""
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "home/user", "root", "mnt"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", root / "bin/busybox")
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", root / "bin" / applet)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nuser:x:1000:\n")
    os.chown(root / "home/user", 1000, 1000)
    os.chmod(root / "tmp", 0o1777)
    userns.shift_tree(root)


def requirements() -> str | None:
    if os.geteuid() != 0:
        return "container sandboxes need root"
    for tool in ("runc", "nft", "ip", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make debian-packages)"
    return None


@pytest.fixture(scope="package")
def busybox_template(tmp_path_factory: pytest.TempPathFactory) -> TemplateImage:
    root = tmp_path_factory.mktemp("busybox-template") / "rootfs"
    make_busybox_rootfs(root)
    return TemplateImage("busybox", root, default_user="root", default_workdir="/root")


@pytest.fixture(scope="package")
def data_dir() -> Iterator[Path]:
    """Under /var/tmp, not pytest's 0700 tmp: sandboxes' unprivileged uid must walk down to their root."""
    reason = requirements()
    if reason:
        pytest.skip(reason)
    path = Path(tempfile.mkdtemp(prefix="sandhive-node-", dir="/var/tmp"))
    path.chmod(0o711)  # each backend's data dir is below it
    yield path
    shutil.rmtree(path, ignore_errors=True)


BACKENDS = {"container": ContainerRuntime, "gvisor": GVisorRuntime}


@pytest.fixture(scope="package", params=list(BACKENDS))
async def runtime(request: pytest.FixtureRequest, data_dir: Path) -> AsyncIterator[OciRuntime]:
    """One runtime per backend, each in a data dir of its own, prepared on the session's event loop (the one
    every test here runs on: a runtime belongs to the loop it was prepared on)."""
    name = request.param
    if name == "gvisor" and shutil.which("runsc") is None:
        reason = "runsc (gVisor) is not installed (make debian-packages)"
        print(f"skipping the gvisor node tests: {reason}")
        pytest.skip(reason)
    rt = BACKENDS[name](data_dir / name)
    try:
        await rt.prepare()
    except BackendUnavailable as exc:
        await rt.close()
        if name == "container":
            raise
        print(f"skipping the {name} node tests: {exc}")
        pytest.skip(f"{name} cannot run here: {exc}")
    yield rt
    leftovers = await rt.running_ids()
    await rt.close()  # the node closed it already; closing twice is fine
    stop_adopting_orphans()
    assert not leftovers, f"{name} sandboxes left behind: {leftovers}"


@pytest.fixture
def backend(runtime: OciRuntime) -> str:
    return runtime.name


@pytest.fixture(scope="package")
async def node(runtime: OciRuntime) -> AsyncIterator[Node]:
    """The backend's node for the whole session: it owns the runtime and closes it at the end."""
    n = Node(runtime)
    yield n
    await n.close()


class Started:
    """Sandboxes a test started; all are stopped when it ends, whatever happened."""

    def __init__(self, node: Node, template: TemplateImage) -> None:
        self.node, self.template, self.handles = node, template, []

    async def start(self, *, memory_mb: int = 256, disk_mb: int = 64, cpu_count: int = 1,
                    internet: bool = True) -> SandboxHandle:
        request = CreateRequest(self.template, cpu_count=cpu_count, memory_mb=memory_mb, disk_mb=disk_mb,
                                allow_internet_access=internet)
        handle = await self.node.create(request, Identity(default_user="root"))
        self.handles.append(handle)
        return handle


@pytest.fixture
async def sandboxes(node: Node, busybox_template: TemplateImage) -> AsyncIterator[Started]:
    started = Started(node, busybox_template)
    yield started
    for handle in started.handles:
        await node.kill(handle)


def sdk(handle: SandboxHandle) -> Sandbox:
    """The released e2b SDK talking straight to a sandbox's envd (no API server involved)."""
    return Sandbox(sandbox_id=handle.sandbox_id, sandbox_domain=None, envd_version=Version(ENVD_VERSION),
                   envd_access_token=None, traffic_access_token=None,
                   connection_config=ConnectionConfig(debug=True, sandbox_url=handle.envd_url))
