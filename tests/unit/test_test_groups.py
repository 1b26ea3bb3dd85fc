"""`make test` runs the integration suites in groups side by side (Makefile GROUP_*): a directory of tests/ left
out of every group would silently never run in CI, and one in two groups would run twice, against itself."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OWN_TARGETS = {"tests/unit", "tests/microvm", "tests/cluster"}  # unit tier, `make test-microvm`, `make test-cluster`


def groups() -> dict[str, list[str]]:
    text = (ROOT / "Makefile").read_text()
    return {name: paths.split() for name, paths in re.findall(r"^GROUP_(\w+) := (.+)$", text, re.M)}


def suites() -> set[str]:
    """Every directory under tests/ that holds a test module (at any depth below it)."""
    return {f"tests/{p.relative_to(ROOT / 'tests').parts[0]}" for p in (ROOT / "tests").rglob("test_*.py")
            if len(p.relative_to(ROOT / "tests").parts) > 1}


def test_every_suite_is_in_exactly_one_group() -> None:
    listed = Counter(path for paths in groups().values() for path in paths)
    assert len(groups()) >= 2, "the Makefile's GROUP_* lines were not found"
    assert [path for path, n in listed.items() if n > 1] == []
    assert sorted(suites() - OWN_TARGETS - set(listed)) == []
    assert sorted(set(listed) - suites()) == []  # a group names no directory that is gone


def test_each_group_is_run_by_make_test() -> None:
    text = (ROOT / "Makefile").read_text()
    recipe = text.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    for name in groups():
        assert f"$(GROUP_{name})" in recipe, f"GROUP_{name} is defined but `make test` does not run it"
