"""The host's Debian package sources, as one-line apt entries for mmdebstrap.

Image builds must fetch from the mirror the host is configured with (a local mirror, a snapshot, a
proxy), never from a hard-coded deb.debian.org, and must verify with the keyring the host names.
Both the deb822 `*.sources` files and the classic one-line `*.list` format are read.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

APT_DIR = Path("/etc/apt")


def host_sources(suites: Iterable[str], apt_dir: Path = APT_DIR) -> dict[str, list[str]]:
    """For each of `suites`, the `deb [signed-by=...] URI SUITE COMPONENTS` lines the host has for it
    (an empty list when it has none)."""
    entries: dict[str, list[str]] = {suite: [] for suite in suites}
    for uri, suite, components, keyring in _entries(apt_dir):
        if suite in entries:
            options = f"[signed-by={keyring}] " if keyring else ""
            line = f"deb {options}{uri} {suite} {' '.join(components)}"
            if line not in entries[suite]:
                entries[suite].append(line)
    return entries


def _entries(apt_dir: Path) -> Iterable[tuple[str, str, list[str], str | None]]:
    """(uri, suite, components, keyring path) of every enabled binary source the host lists."""
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in _deb822_stanzas(path.read_text()):
            if "deb" not in stanza.get("types", "").split() or stanza.get("enabled", "yes") == "no":
                continue
            signed_by = stanza.get("signed-by", "").strip()
            keyring = signed_by if signed_by.startswith("/") and "\n" not in signed_by else None
            for uri in stanza.get("uris", "").split():
                for suite in stanza.get("suites", "").split():
                    yield uri, suite, stanza.get("components", "").split(), keyring
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if path.is_file():
            for line in path.read_text().splitlines():
                parsed = _one_line(line)
                if parsed is not None:
                    yield parsed


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    """Paragraphs of `Key: value` fields (lower-cased keys; continuation lines joined with newlines)."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = None
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, None
        elif line[0] in " \t" and key is not None:
            current[key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            current[key] = value.strip()
    return stanzas


def _one_line(line: str) -> tuple[str, str, list[str], str | None] | None:
    """Parse `deb [opt=val ...] URI SUITE COMPONENT...`; None for comments, deb-src and blanks."""
    words = line.split("#", 1)[0].split()
    if not words or words[0] != "deb":
        return None
    words = words[1:]
    keyring = None
    if words and words[0].startswith("["):
        options: list[str] = []
        while words:
            word = words.pop(0)
            options.append(word.strip("[]"))
            if word.endswith("]"):
                break
        for option in options:
            if option.startswith("signed-by="):
                keyring = option.split("=", 1)[1]
    if len(words) < 2:
        return None
    return words[0], words[1], words[2:], keyring
