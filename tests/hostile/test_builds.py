"""Template builds are untrusted code: what a Dockerfile tries against the host, checked from the host side.

Through the API of a live server (as an API key holder would): the CVE-2024-1753 bind of `/` (refused at parse
time, and read-only and writable variants the user namespace must stop by itself), an image whose /etc/passwd
and /etc/sudoers.d are symlinks to host paths, `FROM` a registry on host loopback, and `FROM docker-archive:`
as a host path oracle. Through the builder: a build over its memory or time limit fails as the user's error and
leaves no process, cgroup, mount or network namespace. Promises: docs/templates.md "How a build runs".
"""

from __future__ import annotations

import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandhive.templates import builder, dockerfile
from tests.api.rig import Server, container_backend_missing, container_server
from tests.builds import storage

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]
TEAM = "hostile-builds"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    reason = container_backend_missing("container")
    if reason:
        print(f"SKIP hostile builds: {reason}")
        pytest.skip(reason)
    with container_server("hostile-builds", TEAM) as live:
        yield live


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A host directory outside every data dir, for the attacks to aim at (world-traversable, as /var/tmp is)."""
    path = Path(tempfile.mkdtemp(prefix="sandhive-hostile-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def build(server: Server, dockerfile_text: str, *, wait: float = 600, team: str = TEAM) -> dict:
    """Build through the API; the final status body (with the log's last lines)."""
    started = start_build(server, dockerfile_text, team=team)
    if isinstance(started, dict):
        return started
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        status = build_status(server, started, team=team)
        if status["status"] not in ("waiting", "building"):
            return status
        time.sleep(0.5)
    raise AssertionError("the build did not finish")


def start_build(server: Server, dockerfile_text: str, *, team: str = TEAM) -> tuple[str, str] | dict:
    """A build started through the API: its (template id, build id), or the final status of one refused."""
    with server.client(server.key(team)) as client:
        ids = client.post("/v3/templates", json={"name": f"hb-{secrets.token_hex(4)}"})
        assert ids.status_code == 202, ids.text
        template_id, build_id = ids.json()["templateID"], ids.json()["buildID"]
        started = client.post(f"/v2/templates/{template_id}/builds/{build_id}", json={"dockerfile": dockerfile_text})
        if started.status_code == 400:  # refused before it starts (the Dockerfile check): E2B's error body
            return {"status": "error", "reason": {"message": started.json()["message"]}}
        assert started.status_code == 202, started.text
        return template_id, build_id


def build_status(server: Server, ids: tuple[str, str], *, team: str = TEAM) -> dict:
    with server.client(server.key(team)) as client:
        return client.get(f"/templates/{ids[0]}/builds/{ids[1]}/status", params={"limit": 100}).json()


def reason_of(status: dict) -> str:
    reason = status.get("reason") or {}
    message = str(reason.get("message")).split("\n")[0]  # the reason itself, not the log's last lines
    return f"{message} ({reason.get('step')})"


def text_of(status: dict) -> str:
    lines = [entry["message"] for entry in status.get("logEntries", [])]
    return "\n".join([*lines, str(status.get("reason") or "")])


CVE = """\
FROM debian:bookworm-slim AS base
RUN ln -s / /rootdir
FROM debian:bookworm-slim
RUN --mount=type=bind,{mode}from=base,source=/rootdir,target=/mnt \\
    (ls /mnt; cat /mnt{secret}; echo pwned > /mnt{target}) 2>&1 | base64 -w0; echo; true
"""


def test_cve_2024_1753_rw_bind_of_a_stage_symlink_is_refused(server: Server, host_dir: Path) -> None:
    """The attack of issue 12: a writable bind of stage 1's symlink to `/`. Refused at parse time, naming the line;
    the host's secret is not in the log and no file appears on the host."""
    secret = server.data_dir / "secret"
    target = host_dir / "pwned"
    status = build(server, CVE.format(mode="rw,", secret=secret, target=target))
    assert not target.exists()
    assert_secret_not_in(text_of(status), secret)
    assert status["status"] == "error", status
    assert "line 4" in text_of(status) and "read-only" in text_of(status)


def test_read_only_bind_of_a_stage_symlink_reaches_nothing_of_the_host(server: Server, host_dir: Path) -> None:
    """The read-only form is allowed by the Dockerfile check; the build's user namespace alone must hold: the
    secret (0600 host root) is not read, and nothing is written on the host."""
    secret = server.data_dir / "secret"
    target = host_dir / "pwned"
    status = build(server, CVE.format(mode="", secret=secret, target=target))
    assert_secret_not_in(text_of(status), secret)
    assert not target.exists()


def test_rw_bind_without_the_dockerfile_check_still_holds(host_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Defense in depth: with the --mount check switched off, buildah 1.28 binds what it sees as `/` writable.
    It runs as the BUILD range's root: a root-only host file stays unread, no host file is written."""
    reason = container_backend_missing("container")
    if reason:
        pytest.skip(reason)
    monkeypatch.setattr(dockerfile, "_check_run_flags", lambda *_args: None, raising=False)
    secret = host_dir / "secret"
    secret.write_bytes(secrets.token_hex(16).encode())
    secret.chmod(0o600)
    victim = host_dir / "victim"
    victim.write_text("host\n")
    victim.chmod(0o666)  # even a world-writable host file must not be reachable
    data_dir = Path(tempfile.mkdtemp(prefix="sandhive-hostile-data-", dir="/var/tmp"))
    text = CVE.format(mode="rw,", secret=secret, target=host_dir / "pwned").replace(
        "; true", f"; echo x >> /mnt{victim}; true")
    lines: list[str] = []
    try:  # the build may fail or succeed: what counts is the host side
        builder.build_template(data_dir, builder.BuildRequest(template_id="cve", dockerfile=text, context=tmp_path),
                               log=lines.append)
    except builder.TemplateBuildError as exc:
        lines.append(str(exc))
    finally:
        builder.remove_image(data_dir, "cve")
        subprocess.run(["rm", "-rf", "--one-file-system", str(data_dir)], check=False)
    assert_secret_not_in("\n".join(lines), secret)
    assert not (host_dir / "pwned").exists()
    assert victim.read_text() == "host\n"


def assert_secret_not_in(log: str, secret: Path) -> None:
    import base64

    value = secret.read_bytes().strip()
    decoded = ""
    for line in log.splitlines():
        try:
            decoded += base64.b64decode(line.strip(), validate=True).decode(errors="replace")
        except ValueError:
            continue
    assert value.decode(errors="replace") not in log + decoded


def test_symlinked_passwd_and_sudoers_do_not_reach_host_files(server: Server, host_dir: Path) -> None:
    """The export adds a login user to /etc/passwd and a sudoers entry: with those being symlinks to host paths,
    host root used to append to the host's files. The host files stay unchanged."""
    passwd = host_dir / "passwd"
    passwd.write_text("root:x:0:0::/root:/bin/sh\n")
    sudoers = host_dir / "sudoers.d"
    sudoers.mkdir()
    status = build(server, "FROM debian:bookworm-slim\n"
                           f"RUN mkdir -p /etc/sudoers.d && rm -rf /etc/sudoers.d /etc/passwd && "
                           f"ln -s {passwd} /etc/passwd && ln -s {sudoers} /etc/sudoers.d\n")
    assert passwd.read_text() == "root:x:0:0::/root:/bin/sh\n", status
    assert list(sudoers.iterdir()) == []


class _Listener:
    """A TCP listener on host loopback that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def test_from_a_host_loopback_registry_never_connects(server: Server) -> None:
    """`FROM 127.0.0.1:PORT/x` is pulled from the build's network namespace: the host listener sees nothing."""
    listener = _Listener()
    try:
        status = build(server, f"FROM 127.0.0.1:{listener.port}/probe/image:1\n", wait=300)
    finally:
        listener.close()
    assert status["status"] == "error", status
    assert listener.accepted == 0


def test_docker_archive_is_no_host_path_oracle(server: Server) -> None:
    """An absolute `docker-archive:` path gets the same error whether the host file exists or not."""
    existing = build(server, "FROM docker-archive:/etc/hostname\n", wait=120)
    missing = build(server, "FROM docker-archive:/no/such/file.tar\n", wait=120)
    assert existing["status"] == missing["status"] == "error"
    first = reason_of(existing).replace("/etc/hostname", "PATH")
    second = reason_of(missing).replace("/no/such/file.tar", "PATH")
    assert first == second
    assert "relative path inside the build context" in first


def _build_state() -> tuple[set[str], set[str], int, set[str]]:
    cgroups = {str(p) for p in Path("/sys/fs/cgroup").glob("*/sandhive-builds/*") if p.is_dir()}
    netns = {line.split()[0] for line in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                           text=True).stdout.splitlines()
             if re.fullmatch(r"sandhive-b[0-9a-f]{16}", line.split()[0])}  # build networks only (others come and go)
    mounts = sum("buildah-userns" in line for line in Path("/proc/self/mountinfo").read_text().splitlines())
    return cgroups, netns, mounts, storage.containers()


@pytest.mark.parametrize(("limits", "step", "message"), [
    ({"memory_mb": 256}, "RUN head -c 1500m /dev/zero | tail -n 1 > /dev/null",
     "a RUN step ran out of memory (limit 256 MB)"),
    ({"timeout_seconds": 20}, "RUN echo started && sleep 300", "the build exceeded its 20-second limit"),
], ids=["memory", "timeout"])
def test_a_build_over_its_limit_fails_and_leaves_nothing(limits: dict, step: str, message: str,
                                                         tmp_path: Path) -> None:
    reason = container_backend_missing("container")
    if reason:
        pytest.skip(reason)
    from sandhive.templates.build_sandbox import Limits

    data_dir = Path(tempfile.mkdtemp(prefix="sandhive-hostile-limits-", dir="/var/tmp"))
    cgroups, netns, mounts, containers = _build_state()
    started = time.monotonic()
    try:
        with pytest.raises(builder.TemplateBuildError) as caught:
            builder.build_template(data_dir, builder.BuildRequest(
                template_id="over", dockerfile=f"FROM debian:bookworm-slim\n{step}\n", context=tmp_path,
                limits=Limits(**limits)), log=lambda _line: None)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(data_dir)], check=False)
    assert message in caught.value.message
    assert time.monotonic() - started < 200
    with storage.no_build_running():  # other test groups build side by side
        after = _build_state()
    assert after[0] - cgroups == set()
    assert after[1] - netns == set()
    assert after[2] <= mounts
    assert after[3] - containers == set()  # buildah's working containers of the killed step
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 300" not in ps and "head -c 1500m" not in ps


def test_another_teams_failing_build_leaves_a_running_build_alone(server: Server) -> None:
    """Every build on a host shares one buildah storage. A failing build used to remove every working container
    that had appeared while it ran: another team's live build's too, which then failed ("identifier is not a
    container"). So one team could break every other team's builds by failing its own. A failing build must
    leave other builds' containers alone (`templates.working_containers`)."""
    token = secrets.token_hex(4)  # no step of either build is a cache hit
    attacker = start_build(server, f"FROM debian:bookworm-slim\nRUN echo {token} started && sleep 15 && false\n",
                           team="hostile-builds-attacker")
    assert isinstance(attacker, tuple), attacker
    deadline = time.monotonic() + 300
    while f"{token} started" not in text_of(status := build_status(server, attacker, team="hostile-builds-attacker")):
        assert status["status"] in ("waiting", "building"), f"the attacker's build ended early: {text_of(status)}"
        assert time.monotonic() < deadline, "the attacker's build did not reach its RUN step in 300 s"
        time.sleep(0.2)
    victim = start_build(server, f"FROM debian:bookworm-slim\nRUN echo {token} one\nRUN sleep 40\n"
                                 f"RUN echo {token} two > /two\n")
    assert isinstance(victim, tuple), victim
    while (status := build_status(server, attacker, team="hostile-builds-attacker"))["status"] in ("waiting",
                                                                                                  "building"):
        assert time.monotonic() < deadline, "the attacker's build did not end"
        time.sleep(0.2)
    assert status["status"] == "error", status
    assert build_status(server, victim)["status"] == "building", \
        "the victim's build ended before the attacker's failed: the builds did not overlap, this proves nothing"
    deadline = time.monotonic() + 300
    while (status := build_status(server, victim))["status"] in ("waiting", "building"):
        assert time.monotonic() < deadline, "the victim's build did not end"
        time.sleep(0.5)
    assert status["status"] == "ready", text_of(status)
