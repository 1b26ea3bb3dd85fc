"""Helpers for hostile tests that drive sandboxes through the released e2b SDK against the shared `live` server,
and look at them from the host (their processes, their files)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from e2b import CommandExitException, Sandbox

from .conftest import Live


@contextmanager
def sandbox(live: Live) -> Iterator[Sandbox]:
    """A sandbox of the `base` template for the attacking team, killed at the end whatever happened."""
    sbx = Sandbox.create(timeout=120, api_key=live.key, api_url=live.url, sandbox_url=live.url)
    try:
        yield sbx
    finally:
        sbx.kill()


def run(sbx: Sandbox, cmd: str, user: str = "user") -> tuple[int, str]:
    """Exit code and stdout+stderr of `cmd` in the sandbox (a non-zero exit is a result, not an error)."""
    try:
        r = sbx.commands.run(cmd, user=user, timeout=60)
        return r.exit_code, r.stdout + r.stderr
    except CommandExitException as exc:
        return exc.exit_code, exc.stdout + exc.stderr


def sandbox_dir(live: Live, sandbox_id: str) -> Path:
    """The sandbox's state directory in the server's data dir (its `pid`, `config.json`, `rw/` layer)."""
    # Not a recursive glob: it would walk into other sandboxes' root filesystems while they come and go.
    data = live.server.data_dir
    found = [p for p in (data / "sandboxes" / sandbox_id, *data.glob(f"*/sandboxes/{sandbox_id}")) if p.is_dir()]
    assert found, f"no state directory for sandbox {sandbox_id} under {live.server.data_dir}"
    return found[0]


def host_uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
