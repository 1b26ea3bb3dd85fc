"""Container seccomp is an allowlist (issue 12): io_uring and unusual personalities are refused.

io_uring's rings carry reads, writes, opens and network operations past the seccomp filter, and its kernel code
has been a steady source of privilege escalations, so no sandbox may set one up. Before the fix the container
profile was a deny list with default-allow, and `io_uring_setup` returned a ring fd. Under gVisor the sentry
serves the call, never the host kernel; it must fail there too (runsc leaves io_uring off).
"""

from __future__ import annotations

import errno

import pytest

from .conftest import Live
from .sandboxes import run, sandbox

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(600)]

IO_URING_SETUP = """python3 -c '
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
fd = libc.syscall(425, 8, params)
print(fd, ctypes.get_errno())
'"""

PERSONALITY = """python3 -c '
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
for value in (0x0400000, 0x0040000, 0x0000008):  # READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE, PER_LINUX32
    r = libc.syscall(135, ctypes.c_ulong(value))
    print(hex(value), r, ctypes.get_errno())
    libc.syscall(135, ctypes.c_ulong(0))
'"""


@pytest.mark.parametrize("user", ["user", "root"])
def test_io_uring_setup_is_refused(live: Live, user: str) -> None:
    with sandbox(live) as sbx:
        code, out = run(sbx, IO_URING_SETUP, user=user)
    assert code == 0, out
    fd, err = (int(x) for x in out.split())
    assert fd == -1, f"io_uring_setup gave a ring (fd {fd}) on {live.server.backend}"
    assert err in (errno.EPERM, errno.ENOSYS), out


def test_personality_allows_only_dockers_values(live: Live) -> None:
    with sandbox(live) as sbx:
        code, out = run(sbx, PERSONALITY, user="root")
    assert code == 0, out
    results = {value: (int(r), int(e)) for value, r, e in (line.split() for line in out.splitlines())}
    assert results["0x400000"][0] == -1 and results["0x40000"][0] == -1, out
    if live.server.backend == "gvisor":
        # The sentry serves personality(2) itself and refuses every change (EINVAL), PER_LINUX32 included.
        print(f"gvisor: personality results {results} (served by gVisor's sentry, not the host kernel)")
        return
    assert results["0x400000"][1] == errno.EPERM and results["0x40000"][1] == errno.EPERM, out
    assert results["0x8"][0] != -1, "PER_LINUX32 is in Docker's allowlist"
