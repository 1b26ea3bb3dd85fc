"""A hostile image in the template registry: a node that pulls it must not write outside the template's tree, nor as
host root (templates/pull.py unpacks with umoci as root of a user namespace mapped to the template range).

The image is made here by hand, as someone who can push to the registry would make it: a layer with `../` and
absolute member names, a symlink to a directory outside followed by a member through it, and a setuid file owned
by root. Debian's docker-registry runs on loopback for the test (storage in a temp dir), stopped by PID.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandhive.node import userns
from sandhive.templates import pull
from sandhive.templates.info import TemplateInfo
from sandhive.templates.oci_registry import INFO_LABEL, RegistryError, TemplateRegistryRef
from tests.registry_rig import loopback_registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemplateRegistryRef]:
    with loopback_registry(tmp_path_factory.mktemp("registry")) as ref:
        yield ref


def _member(tar: tarfile.TarFile, name: str, *, data: bytes = b"x", mode: int = 0o644, uid: int = 0,
            kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.linkname = kind, mode, uid, uid, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _push_image(ref: TemplateRegistryRef, template_id: str, label_id: str, layer: bytes, work: Path) -> None:
    """An OCI image with `layer` and a template.json label saying `label_id`, pushed as templates/<template_id>."""
    (work / "layer.tar").write_bytes(layer)
    image = f"{work}/oci:latest"
    for argv in (["umoci", "init", "--layout", f"{work}/oci"], ["umoci", "new", "--image", image],
                 ["umoci", "raw", "add-layer", "--image", image, f"{work}/layer.tar"],
                 ["umoci", "config", "--image", image, "--config.label",
                  f"{INFO_LABEL}={TemplateInfo(id=label_id).to_json()}"],
                 ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{image}",
                  f"docker://{ref.reference(template_id)}"]):
        subprocess.run(argv, check=True, capture_output=True)


def test_a_hostile_layer_lands_inside_the_tree_and_never_as_host_root(registry: TemplateRegistryRef,
                                                                       tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o777)  # writable by anyone: only the unpacker's confinement keeps the layer out
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _member(tar, "etc", kind=tarfile.DIRTYPE, mode=0o755)
        _member(tar, "etc/ok", data=b"fine\n")
        _member(tar, "../../../../../../../.." + str(outside / "dotdot"))
        _member(tar, str(outside / "absolute"))
        _member(tar, "up", kind=tarfile.SYMTYPE, link=str(outside))
        _member(tar, "up/through-link")
        _member(tar, "evil-su", data=b"#!/bin/sh\n", mode=0o4755, uid=0)
    work = tmp_path / "image"
    work.mkdir()
    _push_image(registry, "hostile", "hostile", buffer.getvalue(), work)

    data_dir = tmp_path / "data"
    try:
        info = pull.pull(data_dir, registry, "hostile", tmp_path / "cache", log=lambda _line: None)
    except (RegistryError, OSError):
        info = None  # refusing the image is as good as taming it
    assert sorted(p.name for p in outside.iterdir()) == [], "the layer wrote outside the template's tree"
    if info is not None:
        rootfs = data_dir / "templates" / "hostile" / "rootfs"
        assert (rootfs / "etc" / "ok").read_text() == "fine\n"
        for path in [rootfs, *rootfs.rglob("*")]:
            st = path.lstat()
            assert userns.BASE <= st.st_uid < userns.BASE + userns.SIZE, f"{path} is owned by host uid {st.st_uid}"
        su = (rootfs / "evil-su").lstat()
        assert su.st_uid == userns.BASE  # "root" of the image is the template range's, not the host's


def test_an_image_claiming_another_template_id_is_refused(registry: TemplateRegistryRef, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _member(tar, "marker")
    work = tmp_path / "image"
    work.mkdir()
    _push_image(registry, "impostor", "base", buffer.getvalue(), work)
    with pytest.raises(RegistryError, match="says it is template 'base'"):
        pull.pull(tmp_path / "data", registry, "impostor", tmp_path / "cache", log=lambda _line: None)
    assert not (tmp_path / "data" / "templates" / "base").exists()
