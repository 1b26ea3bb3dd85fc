"""envd's spawn helper (`sandhive-spawn`, images/spawn_helper.c): real spawns as another uid, PTYs, errors.

The helper is compiled here exactly as the system image build compiles it. The same spawns also go
through CPython's own credential switch (envd's path without the helper), and both must give the
child the same identity and the caller the same errors. Last, an envd whose system root holds the
helper is driven by the released e2b SDK and by Sandhive's generated client.
"""

from __future__ import annotations

import base64
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from connectrpc.errors import ConnectError
from e2b import CommandExitException, PtySize, Sandbox

from sandhive.envd.processes import _spawn
from sandhive.envd.system_shell import SPAWN_HELPER, find_spawn_helper
from sandhive.envd.users import Credentials
from sandhive.images.system_image import compile_spawn_helper
from tests.helpers import stop_process_group

from .conftest import USER_UID, Envd, start_envd

UID = USER_UID
CREDS = Credentials(UID, UID, (UID, 5, 20))
PT_INTERP = 3


@pytest.fixture(scope="module")
def system_root() -> Iterator[Path]:
    """A stand-in system root holding only the helper, in a directory every uid may traverse."""
    if os.geteuid() != 0:
        pytest.skip("spawning as another user needs root")
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (apt-get install gcc libc6-dev): the helper cannot be compiled")
    root = Path(tempfile.mkdtemp(prefix="sandhive-spawn-test-", dir="/var/tmp"))
    root.chmod(0o755)
    try:
        compile_spawn_helper(root / SPAWN_HELPER)
        yield root
    finally:
        shutil.rmtree(root)


@pytest.fixture(scope="module")
def helper(system_root: Path) -> str:
    found = find_spawn_helper(str(system_root))
    assert found == str(system_root / SPAWN_HELPER)
    return found


def _run(argv: list[str], creds: Credentials | None, helper: str | None, *, pty: bool = False,
         env: dict[str, str] | None = None, cwd: str = "/") -> tuple[int, str]:
    """Spawn as envd does, wait, and return (exit code, everything the child wrote)."""
    env = env or {"PATH": "/usr/bin:/bin"}
    if pty:
        master, slave = os.openpty()
        stdio = {"stdin": slave, "stdout": slave, "stderr": slave}
    else:
        master, slave = os.pipe()
        stdio = {"stdin": subprocess.DEVNULL, "stdout": slave, "stderr": slave}
    try:
        try:
            popen = _spawn(argv, env, cwd, stdio, creds, pty, helper)
        finally:
            os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the PTY's other side is closed
                break
            if not chunk:
                break
            out += chunk
        return popen.wait(), out.decode()
    finally:
        os.close(master)


def _zombie_children() -> list[int]:
    zombies = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == os.getpid():
                zombies.append(int(entry.name))
    return zombies


def test_helper_is_a_static_binary(helper: str) -> None:
    """No program interpreter: exec'ing it maps no ld.so and no libc (the point, in gVisor)."""
    data = Path(helper).read_bytes()
    assert data[:4] == b"\x7fELF"
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    assert PT_INTERP not in types
    assert os.stat(helper).st_mode & 0o777 == 0o755


IDENTITY = ["/bin/sh", "-c", "grep -E '^(Uid|Gid|Groups):' /proc/self/status; pwd"]


def test_user_identity_matches_cpythons_switch(helper: str) -> None:
    via_helper = _run(IDENTITY, CREDS, helper, cwd="/tmp")
    via_cpython = _run(IDENTITY, CREDS, None, cwd="/tmp")
    assert via_helper == via_cpython
    code, out = via_helper
    lines = dict(line.split(":", 1) for line in out.splitlines()[:3])
    assert code == 0
    assert lines["Uid"].split() == [str(UID)] * 4  # real, effective, saved, filesystem
    assert lines["Gid"].split() == [str(UID)] * 4
    assert sorted(map(int, lines["Groups"].split())) == sorted(CREDS.groups)
    assert out.splitlines()[3] == "/tmp"


def test_no_credentials_and_no_pty_skips_the_helper() -> None:
    """Root without a PTY needs nothing the helper does: plain Popen (already a vfork), so even a
    helper that does not exist is never run."""
    assert _run(["/bin/sh", "-c", "id -u"], None, "/no/such/helper") == (0, "0\n")
    with pytest.raises(FileNotFoundError):
        _run(["/bin/sh", "-c", "id -u"], CREDS, "/no/such/helper")


@pytest.mark.parametrize("creds", [None, CREDS], ids=["root", "user"])
def test_pty_is_the_controlling_terminal(helper: str, creds: Credentials | None) -> None:
    """The command leads a new session whose controlling terminal is the PTY, as with preexec_fn."""
    script = ("read -r _ _ _ _ pgrp session tty _ < /proc/self/stat; "
              "echo \"$$ $pgrp $session $tty\"; : < /dev/tty && echo ctty-ok; id -u")
    for via in (helper, None):
        code, out = _run(["/bin/bash", "-c", script], creds, via, pty=True)
        lines = out.replace("\r", "").split("\n")
        pid, pgrp, session, tty = (int(x) for x in lines[0].split())
        assert code == 0, out
        assert pid == pgrp == session and tty != 0, out
        assert lines[1:3] == ["ctty-ok", str(creds.uid if creds else 0)], out


def _error(argv: list[str], helper: str | None, env: dict[str, str]) -> BaseException:
    with pytest.raises(OSError) as info:
        _run(argv, CREDS, helper, env=env)
    return info.value


@pytest.fixture
def exec_cases(system_root: Path) -> Iterator[Path]:
    """Programs that cannot be run: not executable, not an executable format, in a locked directory."""
    work = Path(tempfile.mkdtemp(prefix="sandhive-spawn-cases-", dir="/var/tmp"))
    work.chmod(0o755)
    (work / "plain").write_text("just text\n")
    (work / "garbage").write_bytes(b"\x00\x01garbage")
    (work / "garbage").chmod(0o755)
    (work / "locked").mkdir(mode=0o700)
    (work / "locked" / "tool").write_text("#!/bin/sh\n")
    (work / "locked" / "tool").chmod(0o755)
    try:
        yield work
    finally:
        shutil.rmtree(work)


@pytest.mark.parametrize("argv, path", [
    (["/no/such/program"], "/usr/bin:/bin"),
    (["no-such-program-anywhere"], "/usr/bin:/bin"),
    (["{work}/plain"], "/usr/bin:/bin"),
    (["{work}/garbage"], "/usr/bin:/bin"),
    (["tool"], "{work}/locked:/usr/bin:/bin"),  # EACCES in the first directory wins over a later ENOENT
    (["true"], "{work}/locked:/usr/bin:/bin"),  # ... but a later success wins over both
    (["relative-tool"], ""),
])
def test_errors_match_cpythons(helper: str, exec_cases: Path, argv: list[str], path: str) -> None:
    """Same exception type and text with and without the helper, and no zombie left behind."""
    argv = [a.format(work=exec_cases) for a in argv]
    env = {"PATH": path.format(work=exec_cases)}
    if argv == ["true"]:
        assert _run(argv, CREDS, helper, env=env) == _run(argv, CREDS, None, env=env) == (0, "")
        return
    via_helper, via_cpython = _error(argv, helper, env), _error(argv, None, env)
    assert type(via_helper) is type(via_cpython)
    assert str(via_helper) == str(via_cpython)
    assert _zombie_children() == []


def test_a_failed_credential_switch_matches_cpythons(helper: str) -> None:
    """envd without the right to switch (here: a child that dropped to uid 2000 first) gets the
    same error from the helper as from CPython's own setgroups/setresuid."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(UID, UID, UID)
            os.setresuid(UID, UID, UID)
            results = []
            for via in (helper, None):
                try:
                    _run(["/bin/true"], Credentials(UID + 1, UID + 1, (UID + 1,)), via)
                    results.append("started")
                except OSError as exc:
                    results.append(f"{type(exc).__name__}: {exc}")
            os.write(write_end, "\n".join(results).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        via_helper, via_cpython = f.read().split("\n")
    assert os.waitpid(pid, 0)[1] == 0
    assert via_helper == via_cpython == "PermissionError: [Errno 1] Operation not permitted: '/'"


def test_missing_cwd_is_still_reported_by_popen(helper: str) -> None:
    with pytest.raises(FileNotFoundError) as via_helper:
        _run(["/bin/true"], CREDS, helper, cwd="/no/such/dir")
    with pytest.raises(FileNotFoundError) as via_cpython:
        _run(["/bin/true"], CREDS, None, cwd="/no/such/dir")
    assert str(via_helper.value) == str(via_cpython.value)


def test_helper_reports_bad_usage(helper: str) -> None:
    for args in (["--", ], ["--uid=notanumber", "--", "/bin/true"], ["--bogus", "--", "/bin/true"],
                 ["--groups=1,,2", "--", "/bin/true"]):
        result = subprocess.run([helper, *args], capture_output=True, text=True)
        assert result.returncode == 127, args
        assert result.stderr.startswith("sandhive-spawn: "), args


SPAWN_SCRIPT = """
import subprocess, sys
from sandhive.envd.processes import _spawn
from sandhive.envd.users import Credentials
helper = sys.argv[1] if sys.argv[1] != "-" else None
null = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
assert _spawn(["/bin/true"], {"PATH": "/bin"}, "/", null, Credentials(UID, UID, (UID,)), False, helper).wait() == 0
""".replace("UID", str(UID))


def _process_creations(helper: str | None, tmp: Path) -> list[str]:
    trace = tmp / f"trace-{'helper' if helper else 'cpython'}"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=fork,vfork,clone,clone3", "-o", str(trace),
                    sys.executable, "-c", SPAWN_SCRIPT, helper or "-"], check=True, capture_output=True)
    return [line for line in trace.read_text().splitlines() if "fork(" in line or "clone" in line]


def test_spawning_as_another_user_is_a_vfork(helper: str, tmp_path: Path) -> None:
    """The point of the helper: envd's address space is not copied (CPython's own switch does copy it)."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed: cannot see which system call creates the child")
    with_helper = _process_creations(helper, tmp_path)
    without = _process_creations(None, tmp_path)
    assert with_helper and all("vfork(" in line or "CLONE_VFORK" in line for line in with_helper), with_helper
    assert without and not any("vfork(" in line or "CLONE_VFORK" in line for line in without), without


# ---- through envd ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def envd_with_helper(system_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envd]:
    """envd as the system image starts it: SANDHIVE_SYSTEM_ROOT names a root that holds the helper."""
    saved = os.environ.get("SANDHIVE_SYSTEM_ROOT")
    os.environ["SANDHIVE_SYSTEM_ROOT"] = str(system_root)
    try:
        server = start_envd(tmp_path_factory.mktemp("envd-helper"))
    finally:
        if saved is None:
            del os.environ["SANDHIVE_SYSTEM_ROOT"]
        else:
            os.environ["SANDHIVE_SYSTEM_ROOT"] = saved
    yield server
    stop_process_group(server.proc)


def test_commands_as_user_through_envd(envd_with_helper: Envd) -> None:
    sbx: Sandbox = envd_with_helper.sdk()
    result = sbx.commands.run("id -u; id -g; echo $HOME; cat /proc/$$/status | grep ^Uid", user="user")
    lines = result.stdout.splitlines()
    assert lines[:3] == [str(UID), str(UID), "/home/user"]
    assert lines[3].split()[1:] == [str(UID)] * 4
    assert sbx.commands.run("id -u", user="root").stdout == "0\n"


@pytest.mark.parametrize("user", ["root", "user"])
def test_pty_through_envd(envd_with_helper: Envd, user: str) -> None:
    """A PTY shell as either user has the PTY as its controlling terminal (/dev/tty opens), at its size."""
    sbx: Sandbox = envd_with_helper.sdk()
    chunks: list[bytes] = []
    handle = sbx.pty.create(PtySize(rows=24, cols=80), user=user)
    sbx.pty.send_stdin(handle.pid, b": </dev/tty && echo tty-$(id -u)-$(stty size | tr ' ' x); exit 3\n")
    with pytest.raises(CommandExitException) as info:
        handle.wait(on_pty=chunks.append)
    assert info.value.exit_code == 3
    uid = 0 if user == "root" else UID
    assert f"tty-{uid}-24x80" in b"".join(chunks).decode(errors="replace")


def _start_error(envd: Envd, cmd: str, user: str) -> str:
    from sandhive.rpc.process import process_connect, process_pb

    client = process_connect.ProcessClientSync(envd.url)
    auth = "Basic " + base64.b64encode(f"{user}:".encode()).decode()
    request = process_pb.StartRequest(process=process_pb.ProcessConfig(cmd=cmd, args=[]), stdin=False)
    with pytest.raises(ConnectError) as info:
        list(client.start(request, headers={"Authorization": auth}))
    return f"{info.value.code.name}: {info.value.message}"


def test_start_errors_through_envd_are_unchanged(envd_with_helper: Envd, envd: Envd) -> None:
    """What a client sees for a program that cannot run is the same with and without the helper."""
    for cmd in ("/no/such/program", "no-such-program-anywhere", "/etc"):
        with_helper = _start_error(envd_with_helper, cmd, "user")
        assert with_helper == _start_error(envd, cmd, "user")
        assert with_helper.startswith("INVALID_ARGUMENT: cannot start "), with_helper
