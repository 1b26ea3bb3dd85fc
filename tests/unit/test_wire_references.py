"""Every wire fact a comment or doc cites resolves inside the repository: `docs/wire.md §N.M` names a section
that docs/wire.md has, and nothing points outside the repo (`../shared/e2b-wire.md`)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WIRE = REPO / "docs" / "wire.md"
CITATION = re.compile(r"wire\.md\)? §(\d+(?:\.\d+)?)(?:[–-]§?(\d+(?:\.\d+)?))?")


def _sources() -> list[Path]:
    files = [*(REPO / "src" / "sandhive").rglob("*.py"), *(REPO / "tests").rglob("*.py"), *(REPO / "docs").glob("*.md"),
             REPO / "README.md"]
    return [f for f in files if f != Path(__file__).resolve() and "rpc" not in f.relative_to(REPO).parts[:3]]


def test_cited_sections_exist_in_docs_wire_md() -> None:
    headings = {m.group(1) for m in re.finditer(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", WIRE.read_text(), re.M)}
    cited: dict[str, list[str]] = {}
    for path in _sources():
        for match in CITATION.finditer(path.read_text()):
            for section in filter(None, match.groups()):
                cited.setdefault(section, []).append(str(path.relative_to(REPO)))
    assert cited, "no citation found: the pattern no longer matches how the code cites docs/wire.md"
    missing = {section: where for section, where in cited.items() if section not in headings}
    assert not missing, f"sections cited but not in docs/wire.md: {missing}"


def test_nothing_cites_the_wire_facts_outside_the_repo() -> None:
    outside = [str(p.relative_to(REPO)) for p in _sources() if re.search(r"e2b-wire\.md|\.\./shared/", p.read_text())]
    assert not outside, f"these cite wire facts outside the repository (use docs/wire.md): {outside}"
