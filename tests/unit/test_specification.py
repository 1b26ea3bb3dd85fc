"""Every written promise names a test or benchmark, and that test or benchmark exists (issue 13).

Promises are the numbered items of docs/specification.md and of docs/security.md's "Threat model and promises"
section. A reference is a backticked `tests/….py`, `tests/….py::test_name` (optionally with a parameter id,
`::test_name[gvisor]`) or `bench/….py`; a named test must be a function defined in that file, so renaming or
deleting a test without mending the promise fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = re.compile(r"`((?:tests|bench)/[\w/.-]+\.py)(?:::(\w+)(?:\[[\w.,-]+\])?)?`")
PROMISE = re.compile(r"^(\d+)\. ")


def promises(text: str) -> dict[str, str]:
    """Numbered items (`1. …` at the start of a line, with their indented continuation lines), by number."""
    found: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        start = PROMISE.match(line)
        if start:
            current = start.group(1)
            found[current] = line
        elif current and line.startswith("   ") and line.strip():
            found[current] += " " + line.strip()
        elif not line.strip() or line.startswith("#"):
            current = None
    return found


def section(text: str, heading: str) -> str:
    """The part of a markdown page under `## heading`, up to the next `## ` heading."""
    start = text.index(f"## {heading}")
    rest = text[start + 3:]
    end = rest.find("\n## ")
    return rest if end < 0 else rest[:end]


def defined_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def pages() -> dict[str, dict[str, str]]:
    specification = (ROOT / "docs/specification.md").read_text()
    security = section((ROOT / "docs/security.md").read_text(), "Threat model and promises")
    return {"docs/specification.md": promises(specification), "docs/security.md": promises(security)}


def test_the_parser_reads_numbered_items_with_continuations() -> None:
    text = "intro\n\n1. **One.** `tests/a.py`\n   more `tests/b.py::test_x`\n2. Two.\n\n# h\n3. Three\n"
    assert promises(text) == {"1": "1. **One.** `tests/a.py` more `tests/b.py::test_x`", "2": "2. Two.",
                              "3": "3. Three"}


def test_a_reference_may_name_one_parameter_case() -> None:
    assert REFERENCE.findall("`tests/a.py::test_x[gvisor]`, `tests/b.py::test_y`, `bench/c.py`") == [
        ("tests/a.py", "test_x"), ("tests/b.py", "test_y"), ("bench/c.py", "")]


@pytest.mark.parametrize("page", ["docs/specification.md", "docs/security.md"])
def test_every_promise_names_a_test_or_benchmark_that_exists(page: str) -> None:
    found = pages()[page]
    assert len(found) >= 15, f"{page}: expected its numbered promises, found {sorted(found)}"
    problems = []
    for number, text in found.items():
        references = REFERENCE.findall(text)
        if not references:
            problems.append(f"{page} promise {number} names no test or benchmark")
        for file, name in references:
            path = ROOT / file
            if not path.is_file():
                problems.append(f"{page} promise {number}: {file} does not exist")
            elif name and name not in defined_functions(path):
                problems.append(f"{page} promise {number}: {file} defines no {name}")
    assert not problems, "\n".join(problems)
