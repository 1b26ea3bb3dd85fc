"""File operations performed with the requesting user's credentials, so the kernel does the permission checks.

envd runs as root, but a `/files` or Filesystem request names a user, and what that user may read, write,
list or watch is decided by the kernel against that user's uid, gid and supplementary groups. So each such
operation runs in a thread that switches its own credentials for the duration of the call and back after.

Linux keeps credentials per thread: glibc's `setresuid()` & co. broadcast the change to every thread of the
process (POSIX semantics), but the raw system calls change only the calling thread. So the switch uses
`syscall(SYS_setgroups/SYS_setresgid/SYS_setresuid)` directly. The real and saved uid stay 0, which is what
lets the thread switch back; the effective uid is the user's, so the thread's effective capabilities are
empty meanwhile (CAP_DAC_OVERRIDE, CAP_CHOWN, ... all gone) and files it creates belong to the user. gVisor
keeps credentials per task too and honours these raw calls (it has no `setfsuid`, hence not that call).
Measured cost of a switch and its restore: ~10 µs on the host, ~25 µs under gVisor (systrap).

Each change of a thread's effective ids also clears the process's "dumpable" flag (the kernel does so when
fs.suid_dumpable is 0), which then stays cleared: a non-dumpable envd may be opened through /proc or traced
only by a holder of CAP_SYS_PTRACE in the user namespace its memory was made in. For an envd started by
`exec` that is the sandbox's own namespace, but for one brought back by CRIU (a resumed or restored container
sandbox) it is the host's, whose memory CRIU's own process made: CRIU's next dump of it, which opens its
namespaces from inside the sandbox's user namespace, was refused ("Can't open <pid>/ns/net ... Permission
denied"; issue 14). So the switch back also sets the flag again, which is the state envd had at `exec`
and has until its first switch: nothing is opened up that a fresh envd does not already allow (a process of
the user's uid is still refused, the real and saved uid of envd being 0).

If a restore ever failed, the thread would go back to a pool still holding a user's identity, or a user's
request would run as another: envd aborts instead of carrying on with a thread in an unknown state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, TypeVar

from .users import User

T = TypeVar("T")

# x86_64 and aarch64 syscall numbers (the only architectures envd's system image is built for).
_SYSCALLS = {
    "x86_64": {"setgroups": 116, "setresuid": 117, "setresgid": 119},
    "aarch64": {"setgroups": 159, "setresuid": 147, "setresgid": 149},
}
_UNCHANGED = -1  # setres[ug]id: leave this id as it is
_PR_SET_DUMPABLE = 4

_numbers = _SYSCALLS.get(os.uname().machine, _SYSCALLS["x86_64"])


@functools.cache
def _ctypes() -> tuple[ModuleType, Any]:
    """ctypes and libc, loaded on the first switch rather than at envd's start (a shared library load is
    costly under gVisor, and a sandbox whose files are only touched as root never needs them)."""
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _syscall(name: str, *args: Any) -> None:
    ctypes, libc = _ctypes()
    converted = [a if isinstance(a, ctypes.c_void_p) else ctypes.c_long(a) for a in args]
    if libc.syscall(ctypes.c_long(_numbers[name]), *converted) == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _set_groups(groups: tuple[int, ...]) -> None:
    ctypes, _ = _ctypes()
    array = (ctypes.c_uint32 * max(len(groups), 1))(*groups)
    _syscall("setgroups", len(groups), ctypes.c_void_p(ctypes.addressof(array)))


def switches() -> bool:
    """Whether envd can act as other users at all (it runs as root; in development it may not)."""
    return os.geteuid() == 0


_OWN_GROUPS = tuple(os.getgroups())  # envd's own supplementary groups, restored after each switch


@contextlib.contextmanager
def acting_as(user: User) -> Iterator[None]:
    """Run the body with `user`'s effective uid, gid and groups in this thread only.

    A no-op for root (the kernel would let root do everything anyway) and when envd is not root. The body
    must not await or hand work to other threads: the credentials belong to the calling thread.
    """
    if user.uid == 0 or not switches():
        yield
        return
    groups = tuple(user.groups())
    try:
        _set_groups(groups)
        _syscall("setresgid", _UNCHANGED, user.gid, _UNCHANGED)
        _syscall("setresuid", _UNCHANGED, user.uid, _UNCHANGED)
    except BaseException:
        _restore()
        raise
    try:
        yield
    finally:
        _restore()


def _restore() -> None:
    """Back to root: the uid first (it brings back the capabilities that setting the gid and groups need)."""
    try:
        _syscall("setresuid", _UNCHANGED, 0, _UNCHANGED)
        _syscall("setresgid", _UNCHANGED, 0, _UNCHANGED)
        _set_groups(_OWN_GROUPS)
    except BaseException as exc:  # pragma: no cover - the kernel allows this whenever the real uid is 0
        print(f"envd: cannot restore a thread's credentials ({exc}); stopping", file=sys.stderr, flush=True)
        os.abort()
    with contextlib.suppress(OSError):  # not a matter of the thread's identity: a refusal changes nothing
        _set_dumpable()


def _set_dumpable() -> None:
    """prctl(PR_SET_DUMPABLE, 1): the flag the id change cleared, as it was at exec (see the module's doc)."""
    ctypes, libc = _ctypes()
    if libc.prctl(ctypes.c_int(_PR_SET_DUMPABLE), ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                  ctypes.c_ulong(0)) == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_DUMPABLE): {os.strerror(err)}")


def call_as(user: User, fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` in this thread, as `user`."""
    with acting_as(user):
        return fn(*args)


async def run_as(user: User, fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` in a worker thread, as `user` (all of envd's disk work runs in threads)."""
    return await asyncio.to_thread(call_as, user, fn, *args)
