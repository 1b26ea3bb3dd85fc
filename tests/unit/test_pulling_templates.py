"""A create that waits for a template pull is told so (templates/pull.py `resolve_for_create`), with the registry's
lookup and the pull itself replaced by fakes (tests/cluster pulls from a real registry)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from sandhive.node.runtime import TemplateImage
from sandhive.templates import pull as pull_module
from sandhive.templates.info import TemplateInfo
from sandhive.templates.oci_registry import TemplateRegistryRef
from sandhive.templates.pull import DIGEST_KEY, PullingTemplates

DIGEST = "sha256:" + "ab" * 32


class FakeLocal:
    """A node's own templates: what has been pulled into its data dir."""

    def __init__(self) -> None:
        self.infos: dict[str, TemplateInfo] = {}

    def get(self, name: str) -> TemplateInfo | None:
        return self.infos.get(name)

    async def resolve(self, name: str) -> TemplateImage:
        if name not in self.infos:
            raise LookupError(name)
        return self.infos[name].image(Path("/t") / name)

    def changed(self) -> None:
        pass

    def list(self) -> list[TemplateInfo]:
        return list(self.infos.values())


def test_the_create_that_pulled_a_template_is_told_which_image_and_how_long(monkeypatch: pytest.MonkeyPatch,
                                                                             tmp_path: Path) -> None:
    local = FakeLocal()
    pulls: list[str] = []

    def lookup(ref: TemplateRegistryRef, template_id: str) -> tuple[str, TemplateInfo] | None:
        return (DIGEST, TemplateInfo(template_id)) if template_id == "tpl" else None

    def pull(data_dir: Path, ref: TemplateRegistryRef, template_id: str, cache: Path, log: object,
             found: tuple[str, TemplateInfo]) -> TemplateInfo:
        pulls.append(template_id)
        info = replace(found[1], build={DIGEST_KEY: found[0]})
        local.infos[template_id] = info
        return info

    monkeypatch.setattr(pull_module, "lookup", lookup)
    monkeypatch.setattr(pull_module, "pull", pull)
    templates = PullingTemplates(local, tmp_path, TemplateRegistryRef.parse("reg:5000"), tmp_path / "cache")  # type: ignore[arg-type]

    async def creates() -> list:
        return [await templates.resolve_for_create("tpl"), await templates.resolve_for_create("tpl")]

    (first, pulled), (second, again) = asyncio.run(creates())
    assert first.template_id == second.template_id == "tpl" and pulls == ["tpl"]
    assert pulled is not None and again is None  # the second create found it here
    assert (pulled.template_id, pulled.registry, pulled.digest) == ("tpl", "reg:5000", DIGEST)
    assert pulled.seconds >= 0 and DIGEST in pulled.message() and "reg:5000" in pulled.message()
    assert pulled.fields()["digest"] == DIGEST and [t.id for t in templates.list()] == ["tpl"]
