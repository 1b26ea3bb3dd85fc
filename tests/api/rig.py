"""A real `sandhive serve` in a temp data dir, the `sandhive` CLI, and sandbox rows put straight into the store."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from sandhive.store import SandboxRecord, Store
from tests.helpers import free_port, stop_process_group

SANDHIVE = Path(sys.executable).with_name("sandhive")  # the console script `pip install -e .` wrote
_counter = iter(range(10**9))


def cli(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `sandhive ARGS`; with `check`, fail showing its output when it exits non-zero."""
    if not SANDHIVE.exists():
        raise RuntimeError(f"{SANDHIVE} is missing: run `make venv` (pip install -e .)")
    proc = subprocess.run([str(SANDHIVE), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"sandhive {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def create_key(data_dir: Path, team: str = "default", *extra: str) -> str:
    return cli("keys", "create", "--quiet", "--team", team, "--data-dir", str(data_dir), *extra).stdout.strip()


@dataclass
class Server:
    """One `sandhive serve` process (its own session, stopped by PID) and its data dir."""

    url: str
    data_dir: Path
    proc: subprocess.Popen
    log: Path
    database_url: str | None = None
    backend: str = "none"
    _store: Store | None = field(default=None, repr=False)

    def client(self, key: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        kwargs.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, headers=headers, trust_env=False, **kwargs)

    @property
    def store(self) -> Store:
        """The server's own database, opened a second time (SQLite WAL or PostgreSQL: both are multi-process)."""
        if self._store is None:
            self._store = Store.open(self.data_dir, self.database_url)
        return self._store

    def key(self, team: str = "default") -> str:
        args = ("--database-url", self.database_url) if self.database_url else ()
        return create_key(self.data_dir, team, *args)

    def stop(self) -> None:
        if self._store is not None:
            self._store.close()
        stop_process_group(self.proc)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


EGRESS_ALLOW_LOCK = Path("/run/sandhive-tests/egress-allow.lock")
_holding_egress_allow = False  # this process holds EGRESS_ALLOW_LOCK exclusively (its own starts go ahead)


@contextlib.contextmanager
def egress_allow_lock(exclusive: bool) -> Iterator[None]:
    """Host-wide, across the test groups `make test` runs side by side: `--egress-allow` is host-wide and every
    server start replaces it (docs/security.md), so a server starting in another group would take away the
    range a test's server just allowed. Starts hold this shared until healthy (the replacing is done by then);
    a test of `--egress-allow` holds it exclusively for as long as it needs its range."""
    global _holding_egress_allow
    if _holding_egress_allow:
        yield
        return
    EGRESS_ALLOW_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with EGRESS_ALLOW_LOCK.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        _holding_egress_allow = exclusive
        try:
            yield
        finally:
            _holding_egress_allow = False
            fcntl.flock(f, fcntl.LOCK_UN)


def start_server(data_dir: Path, *args: str, backend: str = "none", database_url: str | None = None,
                 port: int | None = None, timeout: float = 120.0) -> Server:
    """Start `sandhive serve` (on a free port unless told) and wait until `GET /health` answers 200."""
    with egress_allow_lock(exclusive=False):
        return _start_server(data_dir, *args, backend=backend, database_url=database_url, port=port,
                             timeout=timeout)


def _start_server(data_dir: Path, *args: str, backend: str, database_url: str | None, port: int | None,
                  timeout: float) -> Server:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = data_dir.parent / f"serve-{port}.log"
    cmd = [str(SANDHIVE), "serve", "--port", str(port), "--data-dir", str(data_dir), "--backend", backend, *args]
    if database_url:
        cmd += ["--database-url", database_url]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", data_dir, proc, log, database_url, backend)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"sandhive serve exited with {proc.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=1, trust_env=False).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise TimeoutError(f"sandhive serve not healthy after {timeout}s:\n{server.output()}")
        time.sleep(0.05)


def module_server(name: str, *args: str, **kwargs: object) -> object:
    """A module-scoped `server` fixture: one `sandhive serve` (args as `start_server`'s) in a temp dir named
    `name`, stopped after the module. Use as `server = module_server("bodies")` in a conftest or test module."""

    @pytest.fixture(scope="module")
    def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
        srv = start_server(tmp_path_factory.mktemp(name) / "data", *args, **kwargs)  # type: ignore[arg-type]
        try:
            yield srv
        finally:
            srv.stop()

    return server


def insert_sandbox(store: Store, team_id: str, **fields: object) -> SandboxRecord:
    """A sandbox row as the API would write it after a create; `fields` override the defaults."""
    n = next(_counter)
    now = datetime.now(UTC)
    values: dict[str, object] = dict(
        sandbox_id=f"irow{n:04d}{os.getpid() % 10000:04d}abcdefghi"[:21], team_id=team_id, template_id="base",
        alias=None, client_id="sandhive", state="running", started_at=now - timedelta(seconds=1000 - n),
        end_at=now + timedelta(minutes=10), meta={}, env_vars={}, cpu_count=2, memory_mb=512, disk_mb=1024,
        envd_version="0.6.4", envd_access_token="t" * 64, allow_internet_access=True, backend="none",
        address="127.0.0.9", runtime_state={})
    values.update(fields)
    record = SandboxRecord(**values)
    store.add_sandbox(record)
    return record


BACKENDS = ("container", "gvisor")  # every live-server suite runs once on each ([container], [gvisor])
_backend_missing: dict[str, str | None] = {}


def container_backend_missing(backend: str = "container") -> str | None:
    """Why sandboxes of `backend` cannot run here (then tests that need them skip, saying so), or None.
    For gvisor that includes runsc finding no platform (`runsc do /bin/true`), probed once per test run."""
    if backend in _backend_missing:
        return _backend_missing[backend]
    reason = None
    for module in (f"sandhive.node.{'gvisor' if backend == 'gvisor' else 'container'}", "sandhive.templates.registry"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            reason = f"{module} cannot be imported ({exc})"
    if reason is None and os.geteuid() != 0:
        reason = f"the {backend} backend needs root"
    if reason is None and backend == "gvisor":
        from sandhive.node.gvisor import probe_platform

        if shutil.which("runsc") is None:
            reason = "runsc (gVisor) is not installed (make debian-packages)"
        else:
            probe = asyncio.run(probe_platform())
            reason = None if probe.platform else f"runsc runs on no platform here ({probe.why_not()})"
    _backend_missing[backend] = reason
    return reason


@contextlib.contextmanager
def container_server(prefix: str, team: str, *args: str, backend: str = "container") -> Iterator[Server]:
    """A server with `backend` (an OCI backend: container or gvisor; and `sandhive serve ARGS`) in a fresh data
    dir; at the end every sandbox of `team` is killed, the server stopped and the data dir removed (unless
    something is still mounted in it, which is reported).

    The data dir is not under pytest's private (0700) temp dir: sandboxes' unprivileged host uids must be
    able to walk down to their root filesystems. Where sandboxes cannot run, the caller's tests are skipped
    with the reason printed.
    """
    reason = container_backend_missing(backend)
    if reason:
        print(f"skipping tests that need a live server with {backend} sandboxes ({prefix}): {reason}")
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix=f"sandhive-{prefix}-{backend}-", dir="/tmp"))
    root.chmod(0o711)
    try:
        server = start_server(root / "data", *args, backend=backend, timeout=900)
        try:
            yield server
        finally:
            try:
                kill_team_sandboxes(server, server.key(team))
            finally:
                server.stop()
    finally:
        remove_unless_mounted(root)


def kill_team_sandboxes(server: Server, key: str) -> None:
    """Sandboxes outlive a server by design, so a test run ends its own."""
    with server.client(key) as c:
        for sandbox in c.get("/v2/sandboxes", params={"limit": 100}).json():
            c.delete(f"/sandboxes/{sandbox['sandboxID']}")


def remove_unless_mounted(root: Path) -> None:
    """Delete a test's data dir, unless something is still mounted inside it (then say so and keep it)."""
    with open("/proc/self/mounts") as f:
        mounted = [line.split()[1] for line in f if line.split()[1].startswith(str(root))]
    if mounted:
        print(f"not removing {root}: still mounted inside it: {mounted}")
        return
    shutil.rmtree(root, ignore_errors=True)
