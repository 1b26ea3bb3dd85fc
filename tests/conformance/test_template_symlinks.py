"""Issue 13 item 7: a template build context with an absolute symlink is accepted, and the link arrives in the
template as a link, never followed (E2B's SDK uploads symlinks as they are; E2B copies them as links). That the
host never follows it while unpacking is tests/hostile/test_upload_tar.py and test_build_context_merge.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from e2b import Sandbox, Template

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]


def test_an_absolute_symlink_in_the_context_arrives_as_a_link(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello.txt").write_text("hello\n")
    os.symlink("/etc/shadow", data / "absolute")  # if followed on the host, the host's shadow file would leak
    os.symlink("hello.txt", data / "relative")
    template = (Template(file_context_path=str(tmp_path)).from_image("debian:bookworm-slim")
                .copy("data/", "/opt/data/"))
    info = Template.build(template, "symlink-context:v1", cpu_count=1, memory_mb=512)
    sbx = Sandbox.create(info.template_id, timeout=120)
    try:
        result = sbx.commands.run("cd /opt/data && test -L absolute && test -L relative "
                                  "&& readlink absolute && readlink relative && cat relative")
    finally:
        sbx.kill()
    assert result.stdout.splitlines() == ["/etc/shadow", "hello.txt", "hello"]
