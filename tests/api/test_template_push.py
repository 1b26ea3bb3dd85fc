"""One host with `sandhive serve --template-registry`: builds run here as before, then the template is pushed to the
registry (as nodes would pull it), with its template.json as the image's label (templates/oci_registry.py)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandhive.templates import oci_registry, pull
from sandhive.templates.oci_registry import TemplateRegistryRef
from tests.api.rig import Server, container_server
from tests.registry_rig import loopback_registry, skip_unless_possible

TEAM = "pushes"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemplateRegistryRef]:
    with loopback_registry(tmp_path_factory.mktemp("registry")) as ref:
        yield ref


@pytest.fixture(scope="module")
def live(registry: TemplateRegistryRef) -> Iterator[Server]:
    with container_server("push", TEAM, "--template-registry", registry.host, "--template-registry-insecure") as s:
        yield s


@pytest.mark.needs_backend
@pytest.mark.timeout(600)
def test_a_build_on_one_host_is_pushed_and_pulls_back_the_same(live: Server, registry: TemplateRegistryRef,
                                                                 tmp_path: Path) -> None:
    skip_unless_possible()
    from e2b import Template

    template = Template().from_image("debian:bookworm-slim").run_cmd("echo pushed-from-one-host > /built.txt",
                                                                     user="root")
    logs: list = []
    info = Template.build(template, "pushed:v1", cpu_count=1, memory_mb=256, on_build_logs=logs.append,
                          api_key=live.key(TEAM), domain=None, api_url=live.url)
    assert any(f"pushed to {registry.reference(info.template_id)}" in e.message for e in logs)
    found = oci_registry.lookup(registry, info.template_id)
    assert found is not None and found[1].id == info.template_id and found[1].build["tags"] == ["v1"]
    assert oci_registry.head_digest(registry, info.template_id, info.build_id) == found[0]  # tagged with its build
    # What a node would do with it: the same tree, owned by the template range
    data_dir = Path(tempfile.mkdtemp(dir=tmp_path))
    pulled = pull.pull(data_dir, registry, info.template_id, tmp_path / "cache", log=lambda _line: None)
    rootfs = data_dir / "templates" / info.template_id / "rootfs"
    assert (rootfs / "built.txt").read_text() == "pushed-from-one-host\n"
    assert pulled.build[pull.DIGEST_KEY] == found[0]
