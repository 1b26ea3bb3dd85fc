"""The on-disk protocol: a template appears complete or not at all, one build at a time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from sandhive.templates import layout
from sandhive.templates.info import ROOTFS, TemplateInfo


def _fill(tmp: Path, marker: str = "x") -> None:
    (tmp / ROOTFS / "etc").mkdir(parents=True)
    (tmp / ROOTFS / "etc/marker").write_text(marker)


def test_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def failing(tmp: Path) -> TemplateInfo:
        _fill(tmp)
        raise RuntimeError("step 3 failed")

    with pytest.raises(RuntimeError, match="step 3 failed"):
        layout.build_into_place(tmp_path, "demo", failing)
    assert [p.name for p in (tmp_path / "templates").iterdir()] == [".lock-demo"]
    assert layout.read_built(tmp_path, "demo") is None


def test_leftovers_of_an_interrupted_build_are_removed_by_the_next(tmp_path: Path) -> None:
    stale = tmp_path / "templates" / ".tmp-demo-999-abcd" / ROOTFS
    stale.mkdir(parents=True)

    def ok(tmp: Path) -> TemplateInfo:
        _fill(tmp)
        return TemplateInfo(id="demo")

    info = layout.build_into_place(tmp_path, "demo", ok)
    assert info.id == "demo"
    assert sorted(p.name for p in (tmp_path / "templates").iterdir()) == [".lock-demo", "demo"]
    assert (tmp_path / "templates/demo/rootfs/etc/marker").read_text() == "x"
    assert layout.read_built(tmp_path, "demo") == info


def test_concurrent_builds_build_once_and_force_replaces(tmp_path: Path) -> None:
    calls: list[str] = []

    def slow(tmp: Path) -> TemplateInfo:
        calls.append(tmp.name)
        time.sleep(0.3)
        _fill(tmp, str(len(calls)))
        return TemplateInfo(id="demo")

    results: list[TemplateInfo] = []
    threads = [threading.Thread(target=lambda: results.append(layout.build_into_place(tmp_path, "demo", slow)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 3
    assert all(r == results[0] for r in results)

    layout.build_into_place(tmp_path, "demo", slow, force=True)
    assert len(calls) == 2
    assert (tmp_path / "templates/demo/rootfs/etc/marker").read_text() == "2"
    assert sorted(p.name for p in (tmp_path / "templates").iterdir()) == [".lock-demo", "demo"]


def test_template_json_round_trip_ignores_unknown_keys() -> None:
    info = TemplateInfo(id="t1", aliases=("a", "b"), env={"K": "V"}, start_cmd="sleep 1", build={"seconds": 1.5})
    text = info.to_json().replace('"id"', '"from_the_future": 1, "id"')
    assert TemplateInfo.from_json(text) == info
    with pytest.raises(ValueError):
        TemplateInfo(id="../etc")
