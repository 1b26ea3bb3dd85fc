"""The `base` template is rebuilt when it was built from another recipe (issue 13 item 9: a host that upgrades
Sandhive must get `python` in its base without deleting anything by hand). The mirror build is replaced by a stub;
what is checked is the decision to rebuild, and that a current base is kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandhive.templates import base, layout
from sandhive.templates.info import ROOTFS, TemplateInfo

SOURCES = ["deb http://mirror.invalid/debian bookworm main"]


@pytest.fixture()
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stub the mirror build: it records the recipe it built and writes a tiny rootfs."""
    built: list[str] = []
    monkeypatch.setattr(base, "host_apt_sources", lambda: SOURCES)

    def fake_build(tmp: Path, cache_dir: Path, log: object, use_cache: bool) -> TemplateInfo:
        (tmp / ROOTFS / "usr/bin").mkdir(parents=True)
        key = base.recipe_key(SOURCES)
        built.append(key)
        return TemplateInfo(id=base.TEMPLATE_ID, aliases=base.ALIASES, default_user=base.USER,
                            default_workdir="/home/user", env={}, envd={}, build={"recipe": key})

    monkeypatch.setattr(base, "_build", fake_build)
    return built


def _install(data_dir: Path, recipe: str) -> None:
    directory = layout.template_dir(data_dir, base.TEMPLATE_ID)
    (directory / ROOTFS).mkdir(parents=True)
    TemplateInfo(id=base.TEMPLATE_ID, aliases=base.ALIASES, default_user=base.USER, default_workdir="/home/user",
                 env={}, envd={}, build={"recipe": recipe}).write(directory)


def test_a_base_from_an_older_recipe_is_rebuilt(tmp_path: Path, builds: list[str]) -> None:
    _install(tmp_path, "recipe-of-an-older-sandhive")
    info = base.build(tmp_path, tmp_path / "cache", log=lambda _: None)
    assert builds == [base.recipe_key(SOURCES)]
    assert info.build["recipe"] == base.recipe_key(SOURCES)
    assert layout.read_built(tmp_path, base.TEMPLATE_ID) == info


def test_a_current_base_is_kept(tmp_path: Path, builds: list[str]) -> None:
    _install(tmp_path, base.recipe_key(SOURCES))
    info = base.build(tmp_path, tmp_path / "cache", log=lambda _: None)
    assert builds == [] and info.build["recipe"] == base.recipe_key(SOURCES)


def test_the_recipe_names_python() -> None:
    """`python` comes from Debian's python-is-python3, and the smoke test runs it."""
    assert "python-is-python3" in base.PACKAGES and "python --version" in base.SMOKE_TEST
