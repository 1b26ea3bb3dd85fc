"""`sandhive serve --backend`: `auto` picks the strongest backend that works here and `/health` says which;
an unknown or unavailable backend is a clear error at start, not a failure at the first create."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox

from tests.api.rig import SANDHIVE, Server, container_backend_missing, remove_unless_mounted, start_server

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def data_root() -> Iterator[Path]:
    """Under /tmp with o+x: sandboxes' unprivileged host uids must reach their root filesystems."""
    root = Path(tempfile.mkdtemp(prefix="sandhive-backends-", dir="/tmp"))
    root.chmod(0o711)
    yield root
    remove_unless_mounted(root)


def serve_fails(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`sandhive serve ARGS`, which must exit by itself (it never gets to listen)."""
    return subprocess.run([str(SANDHIVE), "serve", "--port", "1", "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def test_auto_picks_the_strongest_backend_that_works_and_health_says_so(data_root: Path) -> None:
    if container_backend_missing("container"):
        pytest.skip(f"no OCI backend can run here: {container_backend_missing('container')}")
    expected = "gvisor" if container_backend_missing("gvisor") is None else "container"
    server: Server = start_server(data_root / "auto", "--pool-size", "0", backend="auto", timeout=900)
    try:
        health = httpx.get(f"{server.url}/health", trust_env=False).json()
        assert health["status"] == "ok" and health["backend"] == expected
        assert (health["platform"] in ("systrap", "ptrace")) if expected == "gvisor" else health["platform"] is None
        assert health["accelerator"] is None  # only a microvm backend has one
        log = server.output()
        assert f"backend {expected}: chosen" in log
        assert "backend microvm: skipped" in log  # the stronger tier was considered, and why not is said
        key = server.key("backends")
        sandbox = Sandbox.create(timeout=120, api_key=key, api_url=server.url, sandbox_url=server.url)
        try:
            assert sandbox.commands.run("echo hi").stdout == "hi\n"
            uname = sandbox.commands.run("uname -r").stdout.strip()
            assert (uname != os.uname().release) == (expected == "gvisor")  # gVisor answers with its own kernel
        finally:
            sandbox.kill()
    finally:
        server.stop()


def test_unknown_backend_is_a_usage_error(data_root: Path) -> None:
    proc = serve_fails(data_root / "unknown", "--backend", "vmware")
    assert proc.returncode == 2
    assert "'vmware' is not one of" in proc.stderr and "gvisor" in proc.stderr and "Traceback" not in proc.stderr


def test_unavailable_backend_says_why_and_what_to_do(data_root: Path, tmp_path: Path) -> None:
    # A PATH without runsc: the gvisor backend is genuinely unavailable to this server.
    proc = serve_fails(data_root / "unavailable", "--backend", "gvisor", env={"PATH": str(tmp_path)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    message = " ".join(proc.stderr.split())
    assert "the gvisor backend cannot run on this host: runsc is not installed" in message
    assert "--backend none" in message
