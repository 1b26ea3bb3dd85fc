"""The registry's changes to built templates: delete, aliases (unique), tags (`name:tag`). No build needed:
the templates here are directories with a template.json and an empty rootfs."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from sandhive.templates.info import TemplateInfo
from sandhive.templates.registry import TemplateRegistry, tags_of


def fake(data_dir: Path, template_id: str, *aliases: str) -> TemplateInfo:
    directory = data_dir / "templates" / template_id
    (directory / "rootfs").mkdir(parents=True)
    info = TemplateInfo(id=template_id, aliases=aliases)
    info.write(directory)
    return info


def test_aliases_are_replaced_atomically_and_unique(tmp_path: Path) -> None:
    fake(tmp_path, "one", "one")
    fake(tmp_path, "two", "second")
    registry = TemplateRegistry(tmp_path)
    updated = registry.set_aliases("one", ["one", "first", "first"])
    assert updated.aliases == ("one", "first") and registry.get("first").id == "one"
    assert json.loads((tmp_path / "templates/one/template.json").read_text())["aliases"] == ["one", "first"]
    assert not [p for p in (tmp_path / "templates/one").iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(ValueError, match="already used by template 'two'"):
        registry.set_aliases("one", ["second"])
    with pytest.raises(ValueError, match="already used by template 'two'"):
        registry.set_aliases("one", ["two"])  # another template's id
    with pytest.raises(ValueError, match="invalid alias"):
        registry.set_aliases("one", ["Not Valid"])
    with pytest.raises(LookupError):
        registry.set_aliases("missing", ["x"])


def test_tags_resolve_name_colon_tag(tmp_path: Path) -> None:
    fake(tmp_path, "app", "app", "my-app")
    registry = TemplateRegistry(tmp_path)
    assert tags_of(registry.get("app")) == ["default"]
    assert registry.get("app:default").id == "app" and registry.get("app:v1") is None
    registry.set_tags("app", ["v1", "stable"])
    assert registry.get("my-app:v1").id == "app" and registry.get("app:stable").id == "app"
    assert registry.get("app:default") is None
    with pytest.raises(ValueError, match="invalid tag"):
        registry.set_tags("app", ["Bad Tag"])


async def test_delete_removes_the_template_and_its_name(tmp_path: Path) -> None:
    fake(tmp_path, "gone", "gone-alias")
    registry = TemplateRegistry(tmp_path)
    assert (await registry.resolve("gone-alias")).template_id == "gone"
    info = registry.delete("gone")
    assert info.id == "gone" and not (tmp_path / "templates/gone").exists()
    assert [p.name for p in (tmp_path / "templates").iterdir() if not p.name.startswith(".lock")] == []
    with pytest.raises(LookupError):
        await registry.resolve("gone-alias")
    with pytest.raises(LookupError):
        registry.delete("gone")


def test_concurrent_alias_changes_leave_a_readable_template(tmp_path: Path) -> None:
    fake(tmp_path, "busy", "busy")
    registry = TemplateRegistry(tmp_path)
    errors: list[BaseException] = []

    def change(n: int) -> None:
        try:
            for i in range(20):
                TemplateRegistry(tmp_path).set_aliases("busy", ["busy", f"name-{n}-{i}"])
        except BaseException as exc:  # pragma: no cover — reported below
            errors.append(exc)

    threads = [threading.Thread(target=change, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    final = TemplateInfo.read(tmp_path / "templates/busy")
    assert final.aliases[0] == "busy" and len(final.aliases) == 2 and registry.get("busy") is not None
