"""Uploads merged into one build context must never write through a link an earlier upload left (issue 12).

A build that COPYs from several uploads gets one context, laid out by host root. An upload may hold absolute
symlinks (kept as links, as E2B keeps them). Before the fix the layout was `cp -a -l`, falling back to `cp -a`
when hard links failed (the uploads on another file system than the context): the copy then wrote a later
upload's file *through* an earlier upload's symlink at the same path, as host root, anywhere on the host.

The uploads sit on a tmpfs the test mounts, so hard links fail as on a split data dir. The check is on the host:
the link's target is unchanged, and nothing appeared in the directory the other link named.

Promise: laying out a build context follows no link, on either side (docs/security.md).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandhive.templates.build_service import _merge_contexts

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (needs root)")


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "uploads"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_later_upload_never_writes_through_an_earlier_uploads_link(tmp_path: Path, other_fs: Path) -> None:
    outside = tmp_path / "host"
    outside.mkdir()
    secret = outside / "secret"
    secret.write_text("host file\n")
    first, second = other_fs / "first", other_fs / "second"
    (second / "dir").mkdir(parents=True)
    first.mkdir()
    (first / "f").symlink_to(secret)  # absolute links, as a user's upload may hold them
    (first / "dir").symlink_to(outside)
    (second / "f").write_text("written by an upload\n")
    (second / "dir" / "x").write_text("written by an upload\n")

    context = tmp_path / "context"
    _merge_contexts([first, second], context)

    assert secret.read_text() == "host file\n", "the layout wrote through an upload's symlink onto a host file"
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    # the later upload wins, as real files in the context
    assert not (context / "f").is_symlink() and (context / "f").read_text() == "written by an upload\n"
    assert not (context / "dir").is_symlink() and (context / "dir" / "x").read_text() == "written by an upload\n"


def test_links_are_kept_as_links(tmp_path: Path, other_fs: Path) -> None:
    upload = other_fs / "one"
    upload.mkdir()
    (upload / "hostname").symlink_to("/etc/hostname")
    (upload / "app.py").write_text("print(1)\n")
    context = tmp_path / "context"
    _merge_contexts([upload], context)
    assert os.readlink(context / "hostname") == "/etc/hostname"
    assert (context / "app.py").read_text() == "print(1)\n"
