"""Run one command as root of a user namespace whose ids are an unprivileged host range (a build's helper).

`python -m sandhive.templates.userns_exec SPEC_JSON -- ARGV...` is started by `build_sandbox` as host root.
It is single-threaded on purpose: forking a thread-rich server to write id maps is unsafe, forking this is not.

In order:
1. join the build's cgroups (memory, pids, CPU, freezer): everything below is limited and killed with it;
2. enter the build's network namespace (or, without one, get a new empty one below);
3. open the working directory (`cwd`) as host root, so a path under a root-only data dir can be used by fd;
4. fork: the child unshares user (+ mount, PID, network) namespaces and waits; this process, still host
   root, writes the child's uid_map/gid_map (`0 <base> 65536`: no /etc/subuid entry, no newuidmap);
5. the child becomes uid/gid 0 inside, makes its mounts private, puts fresh tmpfs over the host paths a
   build has no business reading or writing (`hide`), forks PID 1 of the new PID namespace with its own
   /proc, enters `cwd` (and chroots there if asked) and execs the command.
This process waits and exits with the command's status, so callers see an ordinary child process.

It imports nothing heavy: it is paid for on every buildah command of a build.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 0x40000
SIZE = 65_536

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), data.encode() if data else None), f"mount {target}")


def _child(spec: dict, argv: list[str], ready_w: int, go_r: int, cwd_fd: int | None) -> None:
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID
    if not spec.get("netns"):
        flags |= CLONE_NEWNET  # nothing to reach: an empty namespace with loopback down
    _check(_libc.unshare(flags), "unshare")
    os.write(ready_w, b"1")
    os.close(ready_w)
    if os.read(go_r, 1) != b"1":
        os._exit(125)
    os.setresgid(0, 0, 0)
    os.setgroups([])
    os.setresuid(0, 0, 0)
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    for path in spec.get("hide", []):
        if os.path.isdir(path) and not os.path.islink(path):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64m")
    pid = os.fork()  # PID 1 of the new PID namespace: when it exits, the kernel kills all that is left
    if pid == 0:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        if cwd_fd is not None:
            os.fchdir(cwd_fd)
            os.close(cwd_fd)
            if spec.get("chroot"):
                os.chroot(".")
        if spec.get("finalize"):  # in-process: a chroot into an image tree has no Python to exec
            from pathlib import Path

            from .finalize import finalize

            args = spec["finalize"]
            user = finalize(Path("/"), args["user"], args["workdir"], args["mountpoint"])
            print(json.dumps({"user": user}), flush=True)
            os._exit(0)
        env = spec.get("env") or {}
        os.execvpe(argv[0], argv, env)
    _relay(pid)


def _relay(pid: int) -> None:
    """Wait for `pid` and leave the way it left: its exit status, or the signal that killed it."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: os.kill(pid, signal.SIGKILL))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            os._exit(125)
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


def main(spec: dict, argv: list[str]) -> None:
    if spec.get("finalize"):
        from . import finalize  # noqa: F401 - loaded now: after the chroot there is nothing to load it from
    for procs in spec.get("cgroups", []):
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    if spec.get("netns"):
        fd = os.open(spec["netns"], os.O_RDONLY | os.O_CLOEXEC)
        _check(_libc.setns(fd, CLONE_NEWNET), "setns")
        os.close(fd)
    cwd_fd = None
    if spec.get("cwd"):
        cwd_fd = os.open(spec["cwd"], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)  # CLOEXEC: gone at exec
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        try:
            _child(spec, argv, ready_w, go_r, cwd_fd)
        except BaseException as exc:  # noqa: BLE001 - the child must never return into the parent's code
            print(f"sandhive build sandbox: {exc}", file=sys.stderr, flush=True)
        os._exit(126)
    os.close(ready_w)
    os.close(go_r)
    if cwd_fd is not None:
        os.close(cwd_fd)
    if os.read(ready_r, 1) == b"1":
        base = int(spec["base"])
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(f"0 {base} {SIZE}\n")
        os.write(go_w, b"1")
    os.close(go_w)
    _relay(pid)


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: python -m sandhive.templates.userns_exec SPEC_JSON -- ARGV...")
    main(json.loads(sys.argv[1]), sys.argv[3:])
