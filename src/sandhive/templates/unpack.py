"""Unpack an untrusted tar (gzipped or not) into a directory, never as host uid 0.

Python 3.11.7's `tarfile` `filter="data"` checks paths with `os.path.realpath`, which stops resolving once a
path exceeds PATH_MAX: a chain of symlinks and long directories then makes a link that the filter believes
stays inside while the kernel follows it out (the CVE-2025-4517 class). Run as root, that wrote a root-owned
file anywhere on the host. Path checks in Python cannot be trusted to match the kernel, so the kernel does
the confining here:

- a child process enters a new user namespace (plus a mount namespace) whose uid/gid 0..65535 are host
  BUILD_BASE.. (node/userns.py); the parent, host root, writes its uid_map/gid_map (no /etc/subuid needed);
- the child chroots into the destination and becomes the namespace's root: no path — absolute, `..`, or any
  symlink chain — resolves outside the chroot, and its uid cannot write host-root files anyway;
- it extracts member by member from the stream: symlinks (absolute ones too) are created as links, never
  followed; hard links only to members already inside; device files and fifos refused; setuid/setgid bits
  dropped; total size and member count bounded. Everything it writes is owned by the BUILD range, so a
  build's user-namespace root (the same range) can read it for COPY.

A refusal is an `UnpackError` (status 400 or 413) naming the member. The caller unpacks into a fresh
directory beside the final one and renames it, so the result appears complete or not at all.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

from ..node.userns import BUILD_BASE, SIZE

MAX_UNPACKED_BYTES = 16 * 2**30  # what the files may add up to (a gzip bomb stops here)
MAX_MEMBERS = 1_000_000
UNPACK_TIMEOUT_SECONDS = 3600.0
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000


class UnpackError(Exception):
    """The upload is refused: `status` 400 (bad archive or member) or 413 (too large), and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def unpack(archive: Path, into: Path, max_bytes: int = MAX_UNPACKED_BYTES, max_members: int = MAX_MEMBERS) -> None:
    """Extract `archive` into the empty directory `into` as the BUILD range's root, confined to `into`.

    Blocking (run it in a thread). `into` is handed to the BUILD range's root first.
    """
    os.chown(into, BUILD_BASE, BUILD_BASE)
    os.chmod(into, 0o700)
    go_read, go_write = os.pipe()
    try:
        with open(archive, "rb") as source:
            child = subprocess.Popen(
                [sys.executable, "-I", "-m", __name__, str(go_read), str(max_bytes), str(max_members)],
                stdin=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=into, pass_fds=(go_read,),
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"})
        os.close(go_read)
        go_read = -1
        try:
            assert child.stdout is not None
            ready = child.stdout.readline()
            if ready.strip() == b"unshared":
                _write_id_maps(child.pid)
                os.write(go_write, b"g")
            os.close(go_write)
            go_write = -1
            out, err = child.communicate(timeout=UNPACK_TIMEOUT_SECONDS)
            out = ready + out
        except BaseException:
            child.kill()
            child.wait()
            raise
    finally:
        for fd in (go_read, go_write):
            if fd >= 0:
                os.close(fd)
    if child.returncode == 0:
        return
    try:
        verdict = json.loads(out.decode().strip().splitlines()[-1])
        raise UnpackError(int(verdict["status"]), str(verdict["message"]))
    except (ValueError, KeyError, IndexError):
        detail = err.decode(errors="replace")[-500:]
        raise RuntimeError(f"the unpacking process failed ({child.returncode}): {detail}") from None


def _write_id_maps(pid: int) -> None:
    """Map the child's uids and gids 0..SIZE-1 to the BUILD range (we are host root in the parent namespace)."""
    Path(f"/proc/{pid}/uid_map").write_text(f"0 {BUILD_BASE} {SIZE}\n")
    Path(f"/proc/{pid}/gid_map").write_text(f"0 {BUILD_BASE} {SIZE}\n")


# ---- the child (python -m sandhive.templates.unpack GO_FD MAX_BYTES MAX_MEMBERS) -------------------------------

def _child(go_fd: int, max_bytes: int, max_members: int) -> int:
    import bz2  # noqa: F401 — everything tarfile may import lazily, imported before the chroot hides it
    import gzip  # noqa: F401
    import lzma  # noqa: F401
    import shutil  # noqa: F401
    import tarfile
    import zlib  # noqa: F401

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS) != 0:
        return _refuse(500, f"cannot create a user namespace: {os.strerror(ctypes.get_errno())}")
    sys.stdout.write("unshared\n")
    sys.stdout.flush()
    if os.read(go_fd, 1) != b"g":
        return _refuse(500, "the server did not map the unpacking namespace")
    os.close(go_fd)
    os.chroot(".")  # cwd is the destination (set by the parent); still host uid 0 here, which owns the path
    os.chdir("/")
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)  # the namespace's root: host BUILD_BASE, with no capability over host files
    os.umask(0o022)

    total = 0
    count = 0
    name = "(start of archive)"
    try:
        with tarfile.open(fileobj=sys.stdin.buffer, mode="r|*") as tar:
            for member in tar:
                name = member.name
                count += 1
                if count > max_members:
                    return _refuse(413, f"the upload has more than {max_members} members")
                problem = _member_problem(member)
                if problem:
                    return _refuse(400, f"refusing the upload: member {name!r}: {problem}")
                if member.isfile():
                    total += member.size
                    if total > max_bytes:
                        return _refuse(413, f"the upload unpacks to more than {max_bytes // 2**30} GiB")
                _sanitize(member)
                try:
                    tar.extract(member, "/", set_attrs=True, numeric_owner=True, filter="fully_trusted")
                except (OSError, KeyError) as exc:
                    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                    return _refuse(400, f"refusing the upload: member {name!r} cannot be written: {why}")
    except (tarfile.TarError, EOFError, zlib.error, OSError, lzma.LZMAError) as exc:
        return _refuse(400, f"the upload is not a tar archive (optionally gzipped), or it breaks at member "
                            f"{name!r}: {exc}")
    return 0


def _member_problem(member) -> str | None:  # noqa: ANN001 — a tarfile.TarInfo
    """Why this member is refused, or None. The chroot is what confines; these make the refusals clear."""
    parts = member.name.split("/")
    if member.name.startswith("/"):
        return "absolute paths are not allowed (name members relative to the context)"
    if ".." in parts:
        return "the path leads outside the upload (..)"
    if member.ischr() or member.isblk() or member.isfifo() or not (member.isfile() or member.isdir()
                                                                     or member.issym() or member.islnk()):
        return "device files and pipes are not allowed"
    if member.islnk() and (member.linkname.startswith("/") or ".." in member.linkname.split("/")):
        return "a hard link must name another member of the upload"
    return None


def _sanitize(member) -> None:  # noqa: ANN001
    """Owned by the namespace's root (host BUILD_BASE); no setuid/setgid/sticky bits; owner may read/write."""
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    if member.mode is not None:
        member.mode = (member.mode & 0o777) | (0o700 if member.isdir() else 0o600)


def _refuse(status: int, message: str) -> int:
    sys.stdout.write(json.dumps({"status": status, "message": message}) + "\n")
    sys.stdout.flush()
    return 2


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(_child(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
