"""`sandhive template build-builtin NAME` on the server's host: the built-in templates built into a data dir ahead
of their first use (from the host's tree cache when an earlier build left one there: seconds), the template's
directory on stdout and the progress on stderr; `python -m sandhive.templates.base build` is the same entry."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandhive.images.debian import remove_tree
from tests.api.rig import SANDHIVE
from tests.cli.conftest import clean_env

pytestmark = [pytest.mark.timeout(900)]  # an empty tree cache means base's build from the mirror (about a minute)


@pytest.fixture()
def data_dir(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("building a template needs root")
    path = tmp_path / "data"
    try:
        yield path
    finally:
        remove_tree(path)


def build(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = clean_env(home)
    env.pop("SANDHIVE_DATA_DIR", None)
    return subprocess.run([str(SANDHIVE), "template", "build-builtin", *args], capture_output=True, text=True,
                          timeout=800, env=env)


def test_base_is_built_once_and_reported(data_dir: Path, tmp_path: Path) -> None:
    first = build("base", "--data-dir", str(data_dir), home=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(data_dir / "templates" / "base")
    assert "Template base is ready" in first.stderr and "Traceback" not in first.stderr
    assert (data_dir / "templates" / "base" / "rootfs" / "usr" / "bin" / "python3").exists()
    again = build("base", "--data-dir", str(data_dir), home=tmp_path)
    assert again.returncode == 0 and "base: built" in again.stderr  # nothing to do the second time
    module = subprocess.run([sys.executable, "-m", "sandhive.templates.base", "build", "--data-dir", str(data_dir)],
                            capture_output=True, text=True, timeout=60)
    assert module.returncode == 0 and module.stdout.strip() == first.stdout.strip(), module.stderr


def test_an_unknown_name_is_a_usage_error(tmp_path: Path) -> None:
    proc = build("python", "--data-dir", str(tmp_path / "data"), home=tmp_path)
    assert proc.returncode == 2 and "code-interpreter" in proc.stderr
    assert not (tmp_path / "data").exists()
