"""The registry: names to TemplateImage, base built on first use exactly once, and the build CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandhive.images.debian import remove_tree
from sandhive.templates import base
from sandhive.templates.info import TemplateInfo
from sandhive.templates.registry import TemplateRegistry

from .conftest import BuiltBase


def test_concurrent_first_uses_build_once(base_built: BuiltBase) -> None:
    builds = [line for line in base_built.logs if "building the base template in" in line]
    assert len(builds) == 1, base_built.logs
    assert len(base_built.images) == 3
    assert all(image == base_built.images[0] for image in base_built.images)
    # progress is visible: steps with their elapsed time, mmdebstrap's phases, the total
    assert any("mmdebstrap: installing remaining packages" in line for line in base_built.logs)
    assert any(line.startswith("base: [") and "built in" in line for line in base_built.logs)
    leftovers = [p.name for p in (base_built.data_dir / "templates").iterdir() if not p.name.startswith(".lock")]
    assert leftovers == ["base"]
    print(f"first use (build) took {base_built.seconds:.1f}s")


async def test_resolve_base_gives_the_template_image(base_built: BuiltBase) -> None:
    registry = TemplateRegistry(base_built.data_dir)
    image = await registry.resolve("base")
    assert image.template_id == "base"
    assert image.default_user == "user"
    assert image.default_workdir == "/home/user"
    assert image.env["PIP_BREAK_SYSTEM_PACKAGES"] == "1"
    assert image.rootfs == base_built.data_dir / "templates/base/rootfs"
    assert (image.rootfs / "usr/bin/python3").exists()
    assert image.cpu_count >= 1 and image.memory_mb >= 128 and image.disk_mb > 0
    assert image == base_built.images[0]


def test_template_json_and_list(base_built: BuiltBase) -> None:
    registry = TemplateRegistry(base_built.data_dir)
    (info,) = registry.list()
    assert info.id == "base" and "base" in info.aliases
    assert info == TemplateInfo.read(base_built.data_dir / "templates/base")
    assert info.envd["version"] and info.envd["system_image_mountpoint"] == "/.sandhive"
    assert info.build["seconds"] > 0 and info.build["size_bytes"] > 50_000_000
    assert info.build["recipe"] == base.recipe_key(info.build["sources"])
    assert info.created_at.endswith("Z")
    print(f"base: built in {info.build['seconds']}s, {info.build['size_bytes'] / 1e6:.0f} MB, "
          f"steps {info.build['steps']}")


async def test_unknown_name_raises_lookup_error(tmp_path: Path) -> None:
    registry = TemplateRegistry(tmp_path / "data")
    with pytest.raises(LookupError) as raised:
        await registry.resolve("nope")
    assert str(raised.value) == "template 'nope' not found"
    assert registry.list() == []
    assert not (tmp_path / "data" / "templates" / "base").exists(), "an unknown name must not trigger a build"


async def test_unknown_name_next_to_a_built_base(base_built: BuiltBase) -> None:
    with pytest.raises(LookupError, match="template 'nope' not found"):
        await TemplateRegistry(base_built.data_dir).resolve("nope")


async def test_a_template_added_later_is_found(tmp_path: Path) -> None:
    """Templates appear by rename into the templates directory; a live registry notices."""
    registry = TemplateRegistry(tmp_path)
    with pytest.raises(LookupError):
        await registry.resolve("later")
    for name in ("later", "broken"):
        (tmp_path / "templates" / name / "rootfs").mkdir(parents=True)
    (tmp_path / "templates/broken/template.json").write_text("{not json")
    TemplateInfo(id="later", aliases=("my-alias",), default_user="root").write(tmp_path / "templates/later")
    await asyncio.sleep(0)
    image = await registry.resolve("my-alias")
    assert image.template_id == "later" and image.default_user == "root"
    assert [info.id for info in registry.list()] == ["later"]


async def test_another_data_dir_gets_a_copy_from_the_tree_cache(base_built: BuiltBase, cache_dir: Path,
                                                               work_root: Path) -> None:
    logs: list[str] = []
    registry = TemplateRegistry(work_root / "data2", cache_dir, log=logs.append)
    image = await registry.resolve("base")
    (info,) = registry.list()
    assert "from_cache" in info.build, logs
    assert info.build["seconds"] < 30, logs
    assert info.build["recipe"] == TemplateRegistry(base_built.data_dir).list()[0].build["recipe"]
    original = base_built.rootfs
    for rel in ("usr/bin/sudo", "etc/passwd", "home/user", "usr/local/bin/npm"):
        a, b = os.lstat(original / rel), os.lstat(image.rootfs / rel)
        assert (a.st_uid, a.st_gid, a.st_mode) == (b.st_uid, b.st_gid, b.st_mode), rel
    assert os.stat(image.rootfs.parent).st_mode & 0o777 == 0o700, "templates are root-only (setuid inside)"
    print(f"base from the tree cache: {info.build['seconds']}s")
    remove_tree(work_root / "data2")


def test_build_cli_reuses_the_built_template(base_built: BuiltBase) -> None:
    result = subprocess.run([sys.executable, "-m", "sandhive.templates.base", "build",
                             "--data-dir", str(base_built.data_dir)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(base_built.data_dir / "templates/base")
    assert "base: built" in result.stderr
    assert "building the base template" not in result.stderr
