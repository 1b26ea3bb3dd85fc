"""Reading the host's apt sources: image builds must use the host's mirror and keyring."""

from __future__ import annotations

from pathlib import Path

from sandhive.images.apt_sources import host_sources

KEY = "/usr/share/keyrings/debian-archive-keyring.gpg"


def test_deb822_and_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(f"""\
Types: deb deb-src
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: {KEY}

Types: deb
URIs: http://mirror.example/debian
Suites: bookworm-backports
Components: main
Enabled: no
""")
    (tmp_path / "sources.list").write_text(
        "deb-src http://mirror.example/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian-security bookworm-security main # x\n")

    found = host_sources(["bookworm", "bookworm-updates", "bookworm-security", "bookworm-backports"], tmp_path)

    assert found == {
        "bookworm": [f"deb [signed-by={KEY}] http://mirror.example/debian bookworm main contrib"],
        "bookworm-updates": [f"deb [signed-by={KEY}] http://mirror.example/debian bookworm-updates main contrib"],
        "bookworm-security": ["deb [signed-by=/k.gpg] http://mirror.example/debian-security bookworm-security main"],
        "bookworm-backports": [],
    }
