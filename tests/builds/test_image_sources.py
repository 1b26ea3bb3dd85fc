"""FROM beyond the local Debian bases: a registry the test runs itself, a docker-archive tarball, a template.

The registry runs in a network namespace the test creates (tests/lan.py), on a private address the host routes
to, as an operator's registry on the LAN would: a build reaches it through the host's forwarding whether its FROM
pull runs on the host or in the build's own network namespace, where host loopback is out of reach and private
ranges are dropped unless allowed. So the fixture allows that one address (as `--egress-allow` would) and marks
the registry insecure (plain HTTP) in a registries.conf of its own. The grant is `network.allow_egress`, which
a server starting on the same host must not take away (it replaces only `--egress-allow`).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandhive.node import network
from sandhive.templates import builder, layout
from sandhive.templates.builder import BuildRequest, build_template
from tests.helpers import free_port
from tests.lan import lan_namespace

from .conftest import write_context

REGISTRY_CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 0.0.0.0:{port}
"""
REGISTRY_PORT = 5000  # the namespace is the test's own: nothing else listens there


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry (plain HTTP) on a private address in a network namespace of the test's own."""
    if subprocess.run(["sh", "-c", "command -v docker-registry"], capture_output=True).returncode != 0:
        pytest.skip("docker-registry is not installed (make debian-packages)")
    root = tmp_path_factory.mktemp("registry")
    root.chmod(0o755)
    config = root / "config.yml"
    config.write_text(REGISTRY_CONFIG.format(root=root / "data", port=REGISTRY_PORT))
    with lan_namespace(extra=()) as lan, pytest.MonkeyPatch.context() as mp:
        address = f"{lan.link_ip}:{REGISTRY_PORT}"
        registries = root / "registries.conf"
        registries.write_text(f'[[registry]]\nlocation = "{address}"\ninsecure = true\n')
        mp.setenv("CONTAINERS_REGISTRIES_CONF", str(registries))
        lan.spawn(["docker-registry", "serve", str(config)], stderr=(root / "registry.log").open("w"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://{address}/v2/", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"docker-registry did not start: {(root / 'registry.log').read_text()}")
        asyncio.run(network.prepare_host())  # the egress table exists, the server's allowances kept
        asyncio.run(network.allow_egress([f"{lan.link_ip}/32"]))
        try:
            yield address
        finally:
            asyncio.run(network.revoke_egress([f"{lan.link_ip}/32"]))


def _build(data_dir: Path, template_id: str, dockerfile: str, context: Path):
    return build_template(data_dir, BuildRequest(template_id=template_id, dockerfile=dockerfile, context=context),
                          log=lambda _line: None)


@pytest.fixture(scope="module")
def marked(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A template whose image carries a marker file: the image the other sources hand around."""
    context = write_context(tmp_path_factory.mktemp("ctx"), {})
    _build(data_dir, "marked", "FROM debian:bookworm-slim\nRUN echo marker > /marker\nENV MARKED=1\n", context)
    return builder.image_name(data_dir, "marked")


def test_from_a_local_registry(data_dir: Path, registry: str, marked: str, tmp_path: Path) -> None:
    pushed = f"{registry}/sandhive-test/marked:1"
    # Another server starting on this host meanwhile replaces `--egress-allow` (here: with nothing). The
    # registry's grant must outlive that: it once did not, and the push hung on dropped packets.
    asyncio.run(network.prepare_host(egress_allow=[]))
    host, port = registry.rsplit(":", 1)
    with builder.storage_session() as buildah, builder.blocking_build_network() as netns:
        buildah.sandbox.netns = netns
        buildah.sandbox.run(["timeout", "10", "bash", "-c", f"exec 3<>/dev/tcp/{host}/{port}"], network=True,
                            what="connecting from the build network to the registry")
        buildah.run("push", "--tls-verify=false", marked, f"docker://{pushed}", network=True)
        buildah.remove_image(pushed)  # the build must pull it, not find it
    info = _build(data_dir, "from-registry", f"FROM {pushed}\nRUN cat /marker > /seen\n",
                  write_context(tmp_path / "ctx", {}))
    rootfs = layout.template_dir(data_dir, "from-registry") / "rootfs"
    assert (rootfs / "seen").read_text() == "marker\n"
    assert info.env["MARKED"] == "1"
    assert info.build["bases"] == [pushed]


def test_from_a_docker_archive_in_the_context(data_dir: Path, marked: str, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {})
    with builder.storage_session() as buildah:  # written by the BUILD range in its scratch dir, copied out
        buildah.run("push", marked, f"docker-archive:{buildah.sandbox.scratch / 'image.tar'}")
        shutil.copyfile(buildah.sandbox.scratch / "image.tar", context / "image.tar")
    _build(data_dir, "from-archive", "FROM docker-archive:image.tar\nRUN cat /marker > /seen\n", context)
    assert (layout.template_dir(data_dir, "from-archive") / "rootfs/seen").read_text() == "marker\n"


def test_from_another_template(data_dir: Path, marked: str, tmp_path: Path) -> None:
    _build(data_dir, "from-template", "FROM marked\nRUN cat /marker > /seen\n", write_context(tmp_path / "c", {}))
    assert (layout.template_dir(data_dir, "from-template") / "rootfs/seen").read_text() == "marker\n"


def test_unreachable_registry_is_a_clear_error(data_dir: Path, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(builder.TemplateBuildError) as caught:
        _build(data_dir, "nowhere", f"FROM 127.0.0.1:{port}/no/such:1\n", write_context(tmp_path / "c", {}))
    assert f"cannot get base image '127.0.0.1:{port}/no/such:1'" in caught.value.message
    assert caught.value.step == f"line 1: FROM 127.0.0.1:{port}/no/such:1"
