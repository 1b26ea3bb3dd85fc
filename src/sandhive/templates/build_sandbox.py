"""Where a template build runs: a user namespace of the BUILD range, its own mounts and PIDs, a cgroup, a timeout.

A Dockerfile is untrusted code, and so is every image it pulls. buildah itself (not only its RUN steps)
runs as root of a user namespace whose ids 0..65535 are host ids `userns.BUILD_BASE`.. (see `userns_exec`),
in its own mount and PID namespaces, in the build's network namespace (or an empty one), inside one cgroup
per build with memory, pids and CPU limits, under a wall-clock timeout that freezes and kills the cgroup.
Whatever a RUN step, a COPY, a pull or a bug in buildah does (CVE-2024-1753's bind of `/`), it does as an
unprivileged host uid: host root's files (`<data_dir>/secret`, 0600) can be neither read nor written.

Host paths a build has no business seeing are covered with empty tmpfs inside buildah's mount namespace
(`HIDDEN`); what stays visible is read-only to the BUILD range by plain permissions: world-readable files
under /usr, /etc, /var and /sys (see docs/templates.md).

The exported tree is written by the root of a second user namespace, mapped to the canonical template
range `userns.BASE`, so no host root process ever writes into, or follows a link of, an untrusted tree.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..node import userns

Log = Callable[[str], None]
log = logging.getLogger("sandhive.templates.build")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "sandhive-builds"
CONTROLLERS = ("memory", "pids", "cpu", "freezer")
CGROUP_GONE_WITHIN = 30  # seconds a killed build's processes get to leave its cgroup (a loaded host is slow)
# /var/lib/containers is host root's containers state (0700): unreadable to the BUILD range, and
# containers/image reads signatures from its `sigstore` by default, so a registry pull failed there with
# "reading signatures: ... permission denied" (a missing directory just means "no signatures").
HIDDEN = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/root", "/home", "/srv", "/mnt", "/media", "/var/lib/containers")
REGISTRIES_CONF_ENV = "CONTAINERS_REGISTRIES_CONF"  # containers-registries.conf(5): the operator's, passed on
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_running: set[subprocess.Popen] = set()  # helpers in flight, for `stop_all` at server stop
_running_lock = threading.Lock()


@dataclass(frozen=True)
class Limits:
    """What one build may use. The defaults fit a 2-core host that also runs sandboxes."""

    memory_mb: int = 4096
    cpus: float = 2.0
    pids: int = 4096
    timeout_seconds: int = 1800
    min_free_disk_mb: int = 2048


class LimitExceeded(Exception):
    """The build went over one of its limits: the user's to fix (a smaller step, a bigger limit)."""


class CommandFailed(Exception):
    """A command inside the sandbox exited non-zero; `lines` is the tail of its output."""

    def __init__(self, message: str, lines: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.lines = lines


def stop_all() -> int:
    """Stop every sandboxed command this process runs (at server stop); each build then fails and cleans up."""
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return len(procs)


class Sandbox:
    """One build's isolation. Use as a context manager: on exit every process in it is dead, its cgroup,
    mounts and work dir are gone. `limited=False` (one-off storage commands such as removing an image) runs
    without a cgroup or timeout, still in the user namespace."""

    def __init__(self, cache_dir: Path, limits: Limits | None = None, *, limited: bool = True) -> None:
        self.limits = limits or Limits()
        self.home = Path(cache_dir) / "buildah-userns"
        self.storage = self.home / "storage"
        self.limited = limited
        self.id = "b" + secrets.token_hex(6)
        self.work = self.home / "work" / self.id  # root's (0755): what host root writes for the build
        self.scratch = self.work / "scratch"  # the BUILD range's (0700): context copy, imports, TMPDIR
        self.netns: str | None = None  # the build network's namespace path, once it has one
        self.deadline: float | None = None
        self.timed_out = False
        self._cgroups: list[Path] = []
        self._timer: threading.Timer | None = None
        self.registries_conf: Path | None = None  # the build's copy of the operator's registries.conf

    # ---- life cycle ------------------------------------------------------------------------------------
    def __enter__(self) -> Sandbox:
        prepare_storage(self.home)
        self.work.mkdir(mode=0o755)
        self.scratch.mkdir(mode=0o700)
        os.chown(self.scratch, userns.BUILD_BASE, userns.BUILD_BASE)
        try:
            self._copy_registries_conf()
            if self.limited:
                self._make_cgroups()
        except BaseException:
            self.__exit__()
            raise
        if self.limited:
            self.deadline = time.monotonic() + self.limits.timeout_seconds
            self._timer = threading.Timer(self.limits.timeout_seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.kill()
        # A killed process leaves its cgroup only once the kernel has torn it down, which on a loaded host can
        # take seconds (its memory freed, its files closed): wait for that rather than leave the cgroup behind.
        deadline = time.monotonic() + CGROUP_GONE_WITHIN
        for cgroup in self._cgroups:
            while True:
                try:
                    cgroup.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        log.warning("build cgroup %s is still busy after %d s; left behind", cgroup,
                                    CGROUP_GONE_WITHIN)
                        break
                    time.sleep(0.05)
        # Every process of the build is dead: nothing can change the tree while rm walks it (rm follows no links).
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(self.work)], check=False)

    def _copy_registries_conf(self) -> None:
        """The operator's registries.conf (`CONTAINERS_REGISTRIES_CONF` in the server's environment: mirrors,
        an insecure LAN registry) as the build's own copy: the BUILD range cannot read host root's files, and
        the build must not see where the operator keeps them."""
        source = os.environ.get(REGISTRIES_CONF_ENV)
        if not source:
            return
        try:
            text = Path(source).read_text()
        except OSError as exc:
            raise CommandFailed(f"cannot read {REGISTRIES_CONF_ENV}={source}: {exc.strerror}") from None
        copy = self.scratch / "registries.conf"
        copy.write_text(text)
        os.chown(copy, userns.BUILD_BASE, userns.BUILD_BASE)
        self.registries_conf = copy

    def _make_cgroups(self) -> None:
        mb = self.limits.memory_mb * 2**20
        values = {
            "memory": [("memory.limit_in_bytes", mb), ("memory.memsw.limit_in_bytes", mb)],
            "pids": [("pids.max", self.limits.pids)],
            "cpu": [("cpu.cfs_period_us", 100_000), ("cpu.cfs_quota_us", int(self.limits.cpus * 100_000))],
            "freezer": [],
        }
        for controller in CONTROLLERS:
            path = CGROUP_ROOT / controller / CGROUP_PARENT / self.id
            path.mkdir(parents=True)
            self._cgroups.append(path)
            for name, value in values[controller]:
                if (path / name).exists():
                    (path / name).write_text(str(value))

    def _cgroup(self, controller: str) -> Path | None:
        return next((p for p in self._cgroups if p.parent.parent.name == controller), None)

    def _expire(self) -> None:
        self.timed_out = True
        self.kill()

    def kill(self) -> None:
        """Kill every process in the build's cgroup (frozen first, so none can fork away meanwhile)."""
        freezer, pids = self._cgroup("freezer"), self._cgroup("pids")
        if pids is None:
            return
        deadline = time.monotonic() + CGROUP_GONE_WITHIN
        while time.monotonic() < deadline:
            procs = _read_pids(pids / "cgroup.procs")
            if not procs:
                return
            if freezer is not None:
                with contextlib.suppress(OSError):
                    (freezer / "freezer.state").write_text("FROZEN")
            for pid in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if freezer is not None:
                with contextlib.suppress(OSError):
                    (freezer / "freezer.state").write_text("THAWED")
            time.sleep(0.02)

    def out_of_memory(self) -> bool:
        memory = self._cgroup("memory")
        if memory is None:
            return False
        with contextlib.suppress(OSError):
            for line in (memory / "memory.oom_control").read_text().splitlines():
                if line.startswith("oom_kill ") and int(line.split()[1]) > 0:
                    return True
        return False

    def check_limits(self) -> None:
        """Raise LimitExceeded if the build went over its time or memory limit."""
        if self.timed_out or (self.deadline is not None and time.monotonic() > self.deadline):
            minutes = self.limits.timeout_seconds / 60
            span = f"{minutes:g}-minute" if minutes >= 1 else f"{self.limits.timeout_seconds}-second"
            raise LimitExceeded(f"the build exceeded its {span} limit")
        if self.out_of_memory():
            raise LimitExceeded(f"a RUN step ran out of memory (limit {self.limits.memory_mb} MB)")

    # ---- commands --------------------------------------------------------------------------------------
    def spawn(self, argv: list[str], *, base: int = userns.BUILD_BASE, network: bool = False,
              cwd: Path | None = None, chroot: bool = False, finalize: dict | None = None,
              stdin: int | IO | None = None, stdout: int | IO | None = subprocess.PIPE,
              stderr: int | IO | None = subprocess.STDOUT) -> subprocess.Popen:
        """Start `argv` as root of a user namespace mapped to `base` (the BUILD range, or `userns.BASE` for
        the side that writes a template's tree), in this build's cgroup."""
        import json

        self.check_limits()
        spec = {
            "base": base,
            "cgroups": [str(p / "cgroup.procs") for p in self._cgroups],
            "netns": self.netns if network else None,
            "cwd": str(cwd) if cwd else None,
            "chroot": chroot,
            "finalize": finalize,
            "hide": [] if finalize else self._hidden(),
            "env": {"PATH": PATH, "HOME": "/root", "XDG_CONFIG_HOME": "/root/.config", "LANG": "C.UTF-8",
                    "TMPDIR": str(self.scratch), "BUILDAH_FORMAT": "oci", "BUILDAH_ISOLATION": "chroot",
                    **({REGISTRIES_CONF_ENV: str(self.registries_conf)} if self.registries_conf else {})},
        }
        proc = subprocess.Popen([sys.executable, "-m", "sandhive.templates.userns_exec", json.dumps(spec), "--",
                                 *argv], stdin=stdin if stdin is not None else subprocess.DEVNULL, stdout=stdout,
                                stderr=stderr, start_new_session=True, cwd="/")
        with _running_lock:
            _running.add(proc)
        return proc

    def _hidden(self) -> list[str]:
        keep = [str(self.home.resolve())]
        return [p for p in HIDDEN if not any(k == p or k.startswith(p + "/") for k in keep)]

    def wait(self, proc: subprocess.Popen) -> int:
        try:
            return proc.wait()
        finally:
            with _running_lock:
                _running.discard(proc)

    def run(self, argv: list[str], *, on_line: Log | None = None, what: str | None = None, **kwargs) -> str:
        """Run `argv` (see `spawn`); its output, stdout and stderr merged, goes to `on_line` line by line and
        is returned. A limit breach raises LimitExceeded, a failure CommandFailed with the last lines."""
        proc = self.spawn(argv, **kwargs)
        lines: list[str] = []
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            lines.append(line)
            if on_line is not None:
                on_line(line)
        code = self.wait(proc)
        if code != 0:
            self.check_limits()
            raise CommandFailed(f"{what or argv[0]} failed (exit status {code})", tuple(lines[-30:]))
        return "\n".join(lines)

    def quiet(self, argv: list[str], **kwargs) -> str:
        """A short command whose stdout is the answer (stderr apart, so warnings do not spoil it)."""
        proc = self.spawn(argv, stderr=subprocess.PIPE, **kwargs)
        out, err = proc.communicate()
        code = self.wait(proc)
        if code != 0:
            self.check_limits()
            text = err.decode(errors="replace").strip()
            raise CommandFailed(f"{argv[0]} {argv[1] if len(argv) > 1 else ''} failed: {text[-2000:]}".strip(),
                                tuple(text.splitlines()[-10:]))
        return out.decode(errors="replace").strip()

    def pipe(self, producer: subprocess.Popen, argv: list[str], **kwargs) -> str:
        """Run `argv` with `producer`'s stdout as its stdin (a tar stream from one side to the other)."""
        assert producer.stdout is not None
        try:
            out = self.run(argv, stdin=producer.stdout, **kwargs)
        finally:
            producer.stdout.close()
            code = self.wait(producer)
        if code != 0:
            self.check_limits()
            args = producer.args
            name = os.fsdecode(args[-1]) if isinstance(args, list | tuple) and args else "producer"
            raise CommandFailed(f"{name} failed (exit status {code})")
        return out

    # ---- trees -----------------------------------------------------------------------------------------
    def receive(self, source: Path, *, trusted: bool, dest: str, keep_owners: bool = True) -> Path:
        """Copy `source` into `<work>/<dest>`, owned by the BUILD range, and return that path.

        `trusted=True` (the build context, a tree mmdebstrap made): host root only *reads* it with `tar -c`
        (tar never follows a symlink it archives; nothing runs in the tree meanwhile). Otherwise (a template's
        tree): it is read by the root of the template range. Either way the writing side is the BUILD range."""
        target = self.scratch / dest
        if trusted:
            producer = subprocess.Popen(["tar", "-c", "-f", "-", "--numeric-owner", "-C", str(source), "."],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd="/")
        else:
            producer = self.spawn(["tar", "-c", "-f", "-", "--numeric-owner", "."], base=userns.BASE, cwd=source,
                                  stderr=subprocess.DEVNULL)
        owners = "--numeric-owner" if keep_owners else "--no-same-owner"
        self.pipe(producer, ["sh", "-c", f'mkdir -p "$1" && exec tar -x -f - {owners} -C "$1"', "sh",
                             str(target)], what="unpacking")
        return target

    def export(self, buildah_argv: list[str], image: str, dest: Path) -> None:
        """Copy image `image`'s tree into `dest` (a new empty directory, made by the caller), owned by the
        template range: buildah mounts it and `tar -c`s it as the BUILD range, and `tar -x` runs as root of
        the template range with `dest` as its working directory. No host root process touches the tree."""
        os.chown(dest, userns.BASE, userns.BASE)
        os.chmod(dest, 0o755)
        script = ('set -e; c=$("$@" from --pull-never --quiet "$IMAGE"); trap \'"$@" rm "$c" >/dev/null\' EXIT; '
                  'm=$("$@" mount "$c"); tar -c -f - --numeric-owner -C "$m" .')
        producer = self.spawn(["env", f"IMAGE={image}", "sh", "-c", script, "export", *buildah_argv],
                              stderr=subprocess.PIPE)
        try:
            self.pipe(producer, ["tar", "-x", "-f", "-", "--numeric-owner", "--same-permissions"],
                      base=userns.BASE, cwd=dest, what="writing the template's tree")
        except CommandFailed as exc:
            err = producer.stderr.read().decode(errors="replace") if producer.stderr else ""
            raise CommandFailed(exc.message, tuple(err.splitlines()[-10:]) or exc.lines) from exc
        finally:
            if producer.stderr:
                producer.stderr.close()

    def finalize(self, tree: Path, user: str, workdir: str, mountpoint: str) -> str:
        """`finalize.finalize` in a chroot of `tree`, as root of the template range; returns the default user."""
        import json

        out = self.quiet(["finalize"], base=userns.BASE, cwd=tree, chroot=True,
                         finalize={"user": user, "workdir": workdir, "mountpoint": mountpoint})
        return json.loads(out.splitlines()[-1])["user"]


def prepare_storage(home: Path) -> None:
    """The BUILD range's buildah storage (BUILD-owned) and the builds' work dirs (under a root-owned `work`,
    so no build process can swap a path that host root later writes through)."""
    home.mkdir(parents=True, exist_ok=True, mode=0o755)
    (home / "work").mkdir(exist_ok=True, mode=0o711)
    storage = home / "storage"
    storage.mkdir(exist_ok=True, mode=0o700)
    st = storage.lstat()
    if (st.st_uid, st.st_gid) != (userns.BUILD_BASE, userns.BUILD_BASE):
        os.chown(storage, userns.BUILD_BASE, userns.BUILD_BASE)


def free_disk_mb(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // 2**20


def _read_pids(path: Path) -> list[int]:
    try:
        return [int(x) for x in path.read_text().split()]
    except (OSError, ValueError):
        return []


@contextmanager
def unlimited(cache_dir: Path) -> Iterator[Sandbox]:
    """A sandbox for one-off storage commands (no cgroup, no timeout)."""
    with Sandbox(cache_dir, limited=False) as sandbox:
        yield sandbox
