"""A control plane's templates with a template registry (cluster/remote_node.RemoteTemplates over
cluster/remote_builds.RegistryTemplates), and a node build's answer stream, without processes or a registry."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sandhive.cluster import models as m
from sandhive.cluster.remote_builds import RegistryTemplates
from sandhive.cluster.remote_node import RemoteNodes, RemoteTemplates
from sandhive.errors import NodeError
from sandhive.templates import oci_registry
from sandhive.templates.info import TemplateInfo
from sandhive.templates.oci_registry import RegistryError, TemplateRegistryRef

REF = TemplateRegistryRef("registry.test:5000")


class FakeRegistry:
    """`oci_registry.lookup` as a dict; counts lookups and can fail."""

    def __init__(self) -> None:
        self.images: dict[str, TemplateInfo] = {}
        self.lookups = 0
        self.down = False

    def lookup(self, ref: TemplateRegistryRef, template_id: str, tag: str = "latest",
               ) -> tuple[str, TemplateInfo] | None:
        self.lookups += 1
        if self.down:
            raise RegistryError("registry.test:5000 cannot be reached")
        info = self.images.get(template_id)
        return ("sha256:" + "0" * 64, info) if info is not None else None


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeRegistry:
    registry = FakeRegistry()
    monkeypatch.setattr(oci_registry, "lookup", registry.lookup)
    return registry


def templates() -> RemoteTemplates:
    return RemoteTemplates(RemoteNodes(["http://node.test:3100"], "t" * 64), registry=RegistryTemplates(REF))


def test_a_built_template_resolves_from_the_registry_without_a_node(fake: FakeRegistry) -> None:
    fake.images["abc"] = TemplateInfo(id="abc", env={"A": "1"}, cpu_count=1, build={"tags": ["v1"]})
    t = templates()
    image = asyncio.run(t.resolve("abc"))  # no node is live: the registry alone answers
    assert (image.template_id, image.env, image.cpu_count) == ("abc", {"A": "1"}, 1)
    assert [i.id for i in t.matching("abc:v1")] == ["abc"] and t.matching("abc:v2") == []
    assert t.get("my-alias") is None  # names are the store's; the registry holds ids only


def test_lookups_are_cached_briefly_and_a_build_forgets_them(fake: FakeRegistry) -> None:
    t = templates()
    assert t.get("abc") is None
    assert t.get("abc") is None and fake.lookups == 1  # a miss is kept for a moment
    fake.images["abc"] = TemplateInfo(id="abc")
    t.forget("abc")  # what a finished build does
    assert t.get("abc") is not None and fake.lookups == 2


def test_a_registry_outage_serves_what_was_seen_and_hides_nothing_else(fake: FakeRegistry) -> None:
    fake.images["abc"] = TemplateInfo(id="abc")
    registry = RegistryTemplates(REF, ttl=0.0)
    assert registry.get("abc") is not None
    fake.down = True
    assert registry.get("abc") is not None  # as last seen
    assert registry.get("other") is None  # built-ins still resolve through the nodes


def test_tags_and_aliases_stay_as_built(fake: FakeRegistry) -> None:
    fake.images["abc"] = TemplateInfo(id="abc", aliases=("name",), build={"tags": ["v1"]})
    t = templates()
    assert t.set_tags("abc", ["v1"]).id == "abc"  # what every build's end asks: no change
    with pytest.raises(NodeError) as refused:
        t.set_tags("abc", ["v1", "v2"])
    assert refused.value.status == 409
    with pytest.raises(NodeError):
        t.set_aliases("abc", ["other"])
    with pytest.raises(LookupError):
        t.set_tags("missing", ["v1"])


def test_without_a_registry_builds_are_refused() -> None:
    t = RemoteTemplates(RemoteNodes(["http://node.test:3100"], "t" * 64))
    assert t.get("abc") is None and t.list() == []
    with pytest.raises(NodeError) as refused:
        t.delete("abc")
    assert refused.value.status == 409 and "--template-registry" in refused.value.message


def test_a_node_build_answer_round_trips(tmp_path: Path) -> None:
    info = TemplateInfo(id="abc", build={"tags": ["default"]})
    event = m.BuildEvent(info=json.loads(info.to_json()), digest="sha256:" + "1" * 64)
    back = m.BuildEvent.model_validate_json(event.model_dump_json(exclude_defaults=True))
    assert TemplateInfo.from_json(json.dumps(back.info)) == info
    failed = m.BuildEvent.model_validate_json(m.BuildEvent(error="RUN failed", step="step 2",
                                                           log_tail=["boom"]).model_dump_json(exclude_defaults=True))
    assert (failed.error, failed.step, failed.log_tail, failed.info) == ("RUN failed", "step 2", ["boom"], None)
