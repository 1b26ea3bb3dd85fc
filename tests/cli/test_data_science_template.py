"""The seed's data-science flow as a user types it: build `data-science-sandbox` from the e2b.Dockerfile in
examples/data_science_template with the CLI, then run.py's `Sandbox(template='data-science-sandbox')` prints
pandas' `describe()` table, with nothing installed at run time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import Cli

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(1200)]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "data_science_template"


def test_build_the_template_then_run_pandas_in_it(cli: Cli) -> None:
    sandhive = Path(sys.executable).with_name("sandhive")
    build = subprocess.run([str(sandhive), "template", "build", "--name", "data-science-sandbox"], cwd=EXAMPLE,
                           env=cli.env, capture_output=True, text=True, timeout=1100)
    assert build.returncode == 0, build.stderr[-3000:]
    template_id = build.stdout.strip()  # the template's own id; its name resolves to it for this team
    info = subprocess.run([str(sandhive), "template", "info", "data-science-sandbox", "--json"], env=cli.env,
                          capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and template_id in info.stdout, info.stdout + info.stderr

    run = subprocess.run([sys.executable, str(EXAMPLE / "run.py")], env=cli.env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    header, *rows = [line.split() for line in run.stdout.strip().splitlines()]
    assert header == ["temperature", "humidity"]
    assert [r[0] for r in rows] == ["count", "mean", "std", "min", "25%", "50%", "75%", "max"]
    assert rows[1][1:] == ["22.750000", "48.500000"]
