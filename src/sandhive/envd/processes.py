"""Processes envd starts: spawning, output fan-out with bounded buffers, stdin, signals and PTYs.

Output flows from the child's pipes (or PTY master) into one bounded backlog per process. Every
attached stream reads it through its own cursor. When streams are attached, a slow reader slows the
child (the reader stops draining the pipe: real backpressure). When none is attached, the backlog
keeps the newest output up to its bound so a client that reconnects while the process runs gets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import struct
import subprocess
import termios
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

from .process_limits import USER_OOM_SCORE_ADJ
from .reaper import Reaper, describe_status
from .system_shell import find_spawn_helper
from .users import Credentials

CHUNK = 32 * 1024  # E2B's envd sends output in data events of at most 32 KiB
BACKLOG_LIMIT = 4 * 1024 * 1024  # bytes of output held per process


@dataclass
class Output:
    """One chunk of output: `stream` is "stdout", "stderr" or "pty"."""

    seq: int
    stream: str
    data: bytes


@dataclass
class Ending:
    exit_code: int
    exited: bool
    status: str
    error: str | None


@dataclass
class Spec:
    """What was asked for, reported back by List."""

    cmd: str
    args: list[str]
    envs: dict[str, str]
    cwd: str | None
    tag: str | None
    pty_size: tuple[int, int] | None  # (cols, rows)
    stdin: bool


class ProcessGone(LookupError):
    """The selected process does not exist (or has ended)."""


class ManagedProcess:
    """A child process and everything needed to stream it to any number of clients.

    It owns its file descriptors: `readers` (stdout/stderr pipes, or the PTY master) and the
    stdin side (a pipe, or again the PTY master).
    """

    def __init__(self, popen: subprocess.Popen[bytes], spec: Spec, readers: dict[int, str],
                 stdin_fd: int | None, master_fd: int | None) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.spec = spec
        self._master_fd = master_fd
        self._stdin_fd = stdin_fd
        self._readers = dict(readers)
        self._backlog: deque[Output] = deque()
        self._backlog_bytes = 0
        self._next_seq = 0
        self._first_unread = 0  # the oldest seq no attached stream has been given yet
        self._cursors: dict[int, int] = {}  # subscriber id -> next seq it will read
        self._next_subscriber = 0
        self._changed = asyncio.Event()
        self._paused = False
        self._exit_status: int | None = None
        self.ending: Ending | None = None
        self.ended = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        for fd in self._readers:
            os.set_blocking(fd, False)
            self._loop.add_reader(fd, self._on_readable, fd)
        if stdin_fd is not None:
            os.set_blocking(stdin_fd, False)

    # ---- output ---------------------------------------------------------------------------
    def _on_readable(self, fd: int) -> None:
        self._read_once(fd)

    def _read_once(self, fd: int) -> bool:
        """Read one chunk from `fd`. False when nothing more can be read now (full, empty or closed)."""
        if self._backlog_bytes >= BACKLOG_LIMIT and not self._trim_for_space():
            self._pause()
            return False
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return False
        except OSError as exc:  # EIO: every holder of the PTY's other side is gone
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self._close_reader(fd)
            return False
        self._append(self._readers[fd], data)
        return True

    def _append(self, stream: str, data: bytes) -> None:
        self._backlog.append(Output(self._next_seq, stream, data))
        self._next_seq += 1
        self._backlog_bytes += len(data)
        self._wake()

    def _trim_for_space(self) -> bool:
        """With no stream attached, drop the oldest output to make room; else only what all have read."""
        low = min(self._cursors.values(), default=None)
        while self._backlog and self._backlog_bytes >= BACKLOG_LIMIT:
            oldest = self._backlog[0]
            if low is not None and oldest.seq >= low:
                break
            self._backlog.popleft()
            self._backlog_bytes -= len(oldest.data)
            self._first_unread = max(self._first_unread, oldest.seq + 1)
        return self._backlog_bytes < BACKLOG_LIMIT

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            for fd in self._readers:
                self._loop.remove_reader(fd)

    def _resume(self) -> None:
        if self._paused and self._backlog_bytes < BACKLOG_LIMIT:
            self._paused = False
            for fd in self._readers:
                self._loop.add_reader(fd, self._on_readable, fd)
            if self._exit_status is not None:
                self._drain_after_exit()

    def _close_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is None:
            return
        self._loop.remove_reader(fd)
        if fd != self._master_fd:  # the PTY master also carries input; closed in _finish
            os.close(fd)
        self._maybe_finish()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- lifecycle ------------------------------------------------------------------------
    @property
    def exited(self) -> bool:
        """The process is gone (its `end` may still wait for a slow stream to take its output)."""
        return self._exit_status is not None

    def on_exit(self, status: int) -> None:
        """Called by the reaper. Output already written is still delivered before `end`."""
        self._exit_status = status
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        self._drain_after_exit()

    def _drain_after_exit(self) -> None:
        """Read what the exited process left in its pipes, then stop listening.

        Descendants that outlive it may hold the pipes open; like Go's exec (and E2B's envd) their
        later output is not waited for, so a finished command ends promptly.
        """
        for fd in list(self._readers):
            while self._read_once(fd):
                pass
            if self._paused:
                return  # the backlog is full: _resume calls back here once readers caught up
        for fd in list(self._readers):
            self._close_reader(fd)
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self._exit_status is None or self._readers or self.ending is not None:
            return
        code, exited, text = describe_status(self._exit_status)
        self.ending = Ending(code, exited, text, None if code == 0 and exited else text)
        self._close_stdin_fd()
        if self._master_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._master_fd)
            self._master_fd = None
        self.ended.set()
        self._wake()

    # ---- streaming to clients -------------------------------------------------------------
    async def follow(self) -> AsyncIterator[Output | Ending]:
        """Yield output not yet given to any stream, then new output, then the ending."""
        sub = self._next_subscriber
        self._next_subscriber += 1
        self._cursors[sub] = self._first_unread
        try:
            while True:
                item = self._item_at(self._cursors[sub])
                if item is not None:
                    yield item
                    # Counted as delivered only when the consumer asks for more: a stream closed while
                    # holding this item (its client went away) leaves it for the next client.
                    self._cursors[sub] = item.seq + 1
                    self._first_unread = max(self._first_unread, item.seq + 1)
                    self._release()
                    continue
                if self.ending is not None:
                    yield self.ending
                    return
                await self._changed.wait()
        finally:
            del self._cursors[sub]
            self._release()

    def _item_at(self, seq: int) -> Output | None:
        if not self._backlog or seq > self._backlog[-1].seq:
            return None
        start = self._backlog[0].seq
        return self._backlog[max(seq, start) - start]

    def _release(self) -> None:
        """Drop output that every attached stream has read, and let a paused reader go on."""
        low = min(self._cursors.values(), default=self._first_unread)
        while self._backlog and self._backlog[0].seq < low:
            self._backlog_bytes -= len(self._backlog.popleft().data)
        self._resume()

    # ---- input, signals, pty --------------------------------------------------------------
    async def write_input(self, data: bytes, pty: bool) -> None:
        if self.ending is not None:
            raise ProcessGone(f"process with pid {self.pid} has ended")
        if pty != (self._master_fd is not None):
            raise ValueError("this process has a PTY: send pty input" if self._master_fd is not None
                             else "this process has no PTY: send stdin input")
        fd = self._stdin_fd
        if fd is None:
            raise ValueError("stdin is closed or was not enabled for this process (start it with stdin=True)")
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                await _writable(self._loop, fd)
            except BrokenPipeError as exc:
                raise ValueError("the process closed its stdin") from exc

    def close_stdin(self) -> None:
        if self._master_fd is not None:
            raise ValueError("a PTY process has no separate stdin: send Ctrl-D (0x04) instead")
        self._close_stdin_fd()

    def _close_stdin_fd(self) -> None:
        if self._stdin_fd is not None and self._stdin_fd != self._master_fd:
            with contextlib.suppress(OSError):
                os.close(self._stdin_fd)
        self._stdin_fd = None

    def signal(self, sig: int) -> None:
        """Signal the whole process group, so `bash -c` pipelines stop with their shell."""
        if self.exited:
            raise ProcessGone(f"process with pid {self.pid} has ended")
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def resize(self, cols: int, rows: int) -> None:
        if self._master_fd is None:
            raise ValueError("this process has no PTY to resize")
        set_winsize(self._master_fd, cols, rows)
        self.spec.pty_size = (cols, rows)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    fut: asyncio.Future[None] = loop.create_future()
    loop.add_writer(fd, _wake, fut)
    try:
        await fut
    finally:
        loop.remove_writer(fd)


def _deprioritise_for_oom(pid: int) -> None:
    """Make a process started without the spawn helper the OOM killer's choice before envd, just after it
    started (the helper sets it before its command runs). Raising a score needs no privilege (lowering
    envd's own would, and some hosts withhold it)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/oom_score_adj", "w") as f:
        f.write(str(USER_OOM_SCORE_ADJ))


def _make_controlling_tty() -> None:
    """Runs in the child (PTY only, no spawn helper): the new session takes the PTY as its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _spawn(argv: list[str], env: dict[str, str], cwd: str, stdio: dict[str, int],
           credentials: Credentials | None, pty: bool, helper: str | None) -> subprocess.Popen[bytes]:
    """Start `argv` as a new session's leader, as `credentials`' user, with a PTY as controlling terminal.

    CPython spawns with vfork only when the child changes no credentials and runs no preexec_fn;
    otherwise it forks envd's whole address space, and the copy-on-write faults that follow cost tens of
    milliseconds per command in gVisor. So when either is needed and the system image's spawn helper is
    there, envd vforks the helper, which does both and execs the command. Without the helper (envd
    outside a system image) CPython does it itself.
    """
    stdin, stdout, stderr = stdio["stdin"], stdio["stdout"], stdio["stderr"]
    if helper is None or (credentials is None and not pty):
        # None is Popen's default for each of these: with neither a PTY nor credentials, CPython still vforks.
        return subprocess.Popen(argv, env=env, cwd=cwd, start_new_session=True, close_fds=True, stdin=stdin,
                                stdout=stdout, stderr=stderr, preexec_fn=_make_controlling_tty if pty else None,
                                user=credentials.uid if credentials else None,
                                group=credentials.gid if credentials else None,
                                extra_groups=list(credentials.groups) if credentials else None)
    options = ["--ctty"] if pty else []
    options.append(f"--oom-score-adj={USER_OOM_SCORE_ADJ}")
    if credentials is not None:
        options += credentials.helper_options()
    status_r, status_w = os.pipe()
    try:
        try:
            popen = subprocess.Popen([helper, f"--status-fd={status_w}", *options, "--", *argv], env=env, cwd=cwd,
                                     start_new_session=True, close_fds=True, stdin=stdin, stdout=stdout,
                                     stderr=stderr, pass_fds=(status_w,))
        finally:
            os.close(status_w)
        report = _read_to_end(status_r)
    finally:
        os.close(status_r)
    if report:
        popen.wait()  # it exited 127 right after reporting; reaped here, envd's reaper never learns of it
        raise _helper_error(report, argv[0], cwd)
    return popen


def _read_to_end(fd: int) -> bytes:
    """The helper's report: EOF with nothing read means its exec of the command succeeded.

    Blocking, like CPython's own wait for its child's exec (the helper's steps take well under a
    millisecond of its own).
    """
    chunks = []
    while chunk := os.read(fd, 256):
        chunks.append(chunk)
    return b"".join(chunks)


def _helper_error(report: bytes, program: str, cwd: str) -> OSError:
    """The error CPython would have raised for the same failure in its own child.

    A failed exec names the program (`[Errno 2] No such file or directory: 'nope'`); a failure before
    it (the credential switch, TIOCSCTTY) names the cwd, as CPython 3.11 reports any failure before exec.
    """
    stage, _, number = report.decode(errors="replace").strip().partition(" ")
    try:
        err = int(number)
    except ValueError:
        return OSError(f"the spawn helper failed: {report.decode(errors='replace').strip()}")
    if stage == "exec":
        return OSError(err, os.strerror(err), program)
    return OSError(err, os.strerror(err), cwd)


@dataclass
class ProcessTable:
    """All processes envd started that have not ended, by pid and by tag."""

    reaper: Reaper
    by_pid: dict[int, ManagedProcess] = field(default_factory=dict)
    # The system image's `sandhive-spawn` (None outside one): spawns with credentials or a PTY stay vforks.
    spawn_helper: str | None = field(default_factory=find_spawn_helper)

    def spawn(self, spec: Spec, argv: list[str], env: dict[str, str], cwd: str,
              credentials: Credentials | None) -> ManagedProcess:
        """Run `argv` for `spec` as a new session (its own process group), with pipes or a PTY envd owns."""
        if spec.tag is not None and self.find_tag(spec.tag) is not None:
            raise FileExistsError(f"a running process already has tag {spec.tag!r}")
        parent_fds: list[int] = []
        child_fds: list[int] = []
        try:
            if spec.pty_size is not None:
                master_fd, slave_fd = os.openpty()
                parent_fds.append(master_fd)
                child_fds.append(slave_fd)
                set_winsize(slave_fd, *spec.pty_size)
                stdio = {"stdin": slave_fd, "stdout": slave_fd, "stderr": slave_fd}
                readers, stdin_fd = {master_fd: "pty"}, master_fd
            else:
                out_r, out_w = os.pipe()
                err_r, err_w = os.pipe()
                parent_fds += [out_r, err_r]
                child_fds += [out_w, err_w]
                stdin_fd = None
                stdin: int = subprocess.DEVNULL
                if spec.stdin:
                    in_r, stdin_fd = os.pipe()
                    parent_fds.append(stdin_fd)
                    child_fds.append(in_r)
                    stdin = in_r
                stdio = {"stdin": stdin, "stdout": out_w, "stderr": err_w}
                readers, master_fd = {out_r: "stdout", err_r: "stderr"}, None
            for fd in parent_fds:
                os.set_inheritable(fd, False)
            popen = _spawn(argv, env, cwd, stdio, credentials, spec.pty_size is not None, self.spawn_helper)
        except BaseException:
            for fd in parent_fds:
                os.close(fd)
            raise
        finally:
            for fd in child_fds:
                os.close(fd)
        if cast(list[str], popen.args)[0] != self.spawn_helper:  # _spawn passes a list
            _deprioritise_for_oom(popen.pid)
        proc = ManagedProcess(popen, spec, readers, stdin_fd, master_fd)
        self.by_pid[proc.pid] = proc
        self.reaper.watch(proc.pid, lambda status: self._exited(proc, status))
        return proc

    def _exited(self, proc: ManagedProcess, status: int) -> None:
        proc.on_exit(status)

        async def forget() -> None:
            await proc.ended.wait()
            self.by_pid.pop(proc.pid, None)

        asyncio.get_running_loop().create_task(forget())

    def find_tag(self, tag: str) -> ManagedProcess | None:
        return next((p for p in self.by_pid.values() if p.spec.tag == tag and not p.exited), None)

    def select(self, pid: int | None, tag: str | None, *, draining: bool = False) -> ManagedProcess:
        """The running process with this pid or tag; with `draining`, also one whose output is still unread."""
        if pid is not None:
            proc = self.by_pid.get(pid)
        else:
            proc = next((p for p in self.by_pid.values() if p.spec.tag == tag and p.ending is None), None)
        if proc is None or proc.ending is not None or (proc.exited and not draining):
            what = f"pid {pid}" if pid is not None else f"tag {tag!r}"
            raise ProcessGone(f"process with {what} not found")
        return proc

    def running(self) -> list[ManagedProcess]:
        return [p for p in self.by_pid.values() if not p.exited]

    def kill_all(self) -> None:
        for proc in self.running():
            with contextlib.suppress(ProcessGone, OSError):
                proc.signal(signal.SIGKILL)
