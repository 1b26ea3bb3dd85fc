"""Issue 13 item 11: the README's first command works where you are root and there is no sudo (minimal Debian,
containers): it is `make up`, and the text around it says to run it as root."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_first_command_is_make_up_as_root() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert first_block is not None
    first_command = first_block.group(1).splitlines()[0].split("#")[0].strip()
    assert first_command == "make up"
    assert "as root" in readme[:first_block.start()].lower()


def test_no_doc_or_message_asks_for_sudo_make_up() -> None:
    places = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "src").rglob("*.py")]
    offenders = [str(path.relative_to(ROOT)) for path in places if "sudo make up" in path.read_text()]
    assert offenders == []
