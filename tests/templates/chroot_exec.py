"""Run a command in a template rootfs the way a sandbox would see it, from the host, leaving nothing.

Run as `unshare --mount --pid --uts --fork --kill-child python chroot_exec.py [--userns] [--user UID]
ROOTFS SCRATCH -- ARGV...` (see `run_in_rootfs` in conftest.py): it is PID 1 of its own PID namespace in
a private mount namespace, so every mount below and every process started inside vanish when it exits.
Like a container runtime it sets the hostname and binds the host's /etc/resolv.conf over the rootfs's.

The rootfs is the lower layer of an overlay whose upper layer lives in SCRATCH: a check may write
(pip install, touch ~/x) without changing the template. With `--userns` the command runs in a user
namespace mapping uid/gid 0..65535 to the host's 100000.., the sandbox range the tree is shifted into,
so files owned by host uid 101000 are the user's (uid 1000) inside, and setuid-root `sudo` works.

util-linux 2.38's `unshare --map-users` goes through shadow's newuidmap, which refuses ranges that
/etc/subuid does not grant root; so the maps are written here, as host root, by the parent process.
A process must not exec before its maps exist (exec would drop its capabilities in the new
namespace), so the child unshares, waits for the parent to write them, and only then execs.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
from pathlib import Path

CLONE_NEWUSER = 0x10000000
RANGE_BASE, RANGE_SIZE = 100_000, 65_536
HOSTNAME = "sandbox"  # what the template's /etc/hosts names
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def mount_rootfs(lower: Path, scratch: Path) -> Path:
    """overlay(lower, scratch/upper) at scratch/merged, with /proc of this PID namespace and the host's /dev."""
    upper, work, merged = scratch / "upper", scratch / "work", scratch / "merged"
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    os.chown(upper, RANGE_BASE, RANGE_BASE)  # the merged root keeps the template's owner: sandbox root
    upper.chmod(0o755)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)], check=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(merged / "proc")], check=True)
    subprocess.run(["mount", "--rbind", "/dev", str(merged / "dev")], check=True)
    subprocess.run(["mount", "--bind", "/etc/resolv.conf", str(merged / "etc/resolv.conf")], check=True)
    subprocess.run(["hostname", HOSTNAME], check=True)  # our own UTS namespace
    return merged


def enter(root: Path, uid: int, gid: int, argv: list[str], env: dict[str, str]) -> None:
    os.chroot(root)
    os.chdir("/")
    os.setgroups([gid])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    home = env.get("HOME", "/")
    if os.path.isdir(home):
        os.chdir(home)
    os.execvpe(argv[0], argv, env)


def run_in_userns(root: Path, uid: int, argv: list[str], env: dict[str, str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            if libc.unshare(CLONE_NEWUSER) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER)")
            os.write(ready_w, b"x")
            if os.read(go_r, 1) != b"x":
                raise RuntimeError("parent did not write the id maps")
            os.setgroups([])
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            enter(root, uid, uid, argv, env)
        except BaseException as exc:  # never return into the parent's code in the child
            print(f"chroot_exec: {exc}", file=sys.stderr, flush=True)
        os._exit(127)
    os.read(ready_r, 1)
    # /proc of our PID namespace is the one mounted in the rootfs: the child's pid is valid there.
    for name in ("uid_map", "gid_map"):
        (root / f"proc/{pid}/{name}").write_text(f"0 {RANGE_BASE} {RANGE_SIZE}\n")
    os.write(go_w, b"x")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--userns", action="store_true")
    parser.add_argument("--user", type=int, default=0, help="uid (and gid) inside")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("rootfs", type=Path)
    parser.add_argument("scratch", type=Path)
    parser.add_argument("argv", nargs="+")
    args = parser.parse_args()
    if os.getpid() != 1:
        print("chroot_exec: run me under `unshare --mount --pid --uts --fork`", file=sys.stderr)
        return 2
    env = {"PATH": PATH, "HOME": "/root" if args.user == 0 else "/home/user", "LANG": "C.UTF-8"}
    env.update(item.split("=", 1) for item in args.env)
    root = mount_rootfs(args.rootfs, args.scratch)
    sys.stdout.flush()
    if args.userns:
        return run_in_userns(root, args.user, args.argv, env)
    pid = os.fork()
    if pid == 0:
        try:
            enter(root, args.user, args.user, args.argv, env)
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
