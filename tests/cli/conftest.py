"""The CLI as a user runs it: the `sandhive` console script in a subprocess, against a live `sandhive serve` with
each OCI backend (one server per backend for the whole `tests/cli` package: every test runs as [container] and
[gvisor]).

Every run gets an environment of its own: no SANDHIVE_* or E2B_* variable from the outside, and HOME and
XDG_CONFIG_HOME in a temp dir, so neither the developer's config file nor their exported key can leak in.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.api.rig import BACKENDS, SANDHIVE, Server, container_server

TEAM = "cli"
CLEARED = ("SANDHIVE_", "E2B_")  # prefixes of variables a run never inherits


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of one CLI run: ours minus SANDHIVE_*/E2B_*, a private HOME and config dir, `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED)}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), COLUMNS="200")
    env.update(extra)
    return env


def run(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`sandhive ARGS`; never raises on a non-zero exit (tests check the code), and never shows a traceback."""
    proc = subprocess.run([str(SANDHIVE), *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert "Traceback" not in proc.stderr, f"sandhive {' '.join(args)} crashed:\n{proc.stderr}"
    return proc


@dataclass
class Cli:
    """Runs `sandhive` pointed at the live server (by SANDHIVE_* variables) and kills what it created."""

    server: Server
    key: str
    home: Path
    created: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return clean_env(self.home, SANDHIVE_API_URL=self.server.url, SANDHIVE_API_KEY=self.key)

    def __call__(self, *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess[str]:
        return run(*args, env={**self.env, **extra}, timeout=timeout)

    def ok(self, *args: str, **extra: str) -> str:
        """stdout of a run that must succeed."""
        proc = self(*args, **extra)
        assert proc.returncode == 0, f"sandhive {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        return proc.stdout

    def create(self, *args: str) -> str:
        """A new sandbox's id (killed at the end of the test)."""
        sandbox_id = self.ok("sandbox", "create", "--timeout", "300", *args).strip()
        self.created.append(sandbox_id)
        return sandbox_id

    def kill_created(self) -> None:
        with self.server.client(self.key) as c:
            for sandbox_id in self.created:
                c.delete(f"/sandboxes/{sandbox_id}")


@pytest.fixture(scope="package", params=BACKENDS)
def live(request: pytest.FixtureRequest) -> Iterator[Server]:
    with container_server("cli", TEAM, backend=request.param) as server:
        yield server


@pytest.fixture(scope="package")
def key(live: Server) -> str:
    return live.key(TEAM)


@pytest.fixture()
def cli(live: Server, key: str, tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(live, key, tmp_path / "home")
    runner.home.mkdir()
    try:
        yield runner
    finally:
        runner.kill_created()


@pytest.fixture()
def sandbox_id(cli: Cli) -> str:
    return cli.create()
