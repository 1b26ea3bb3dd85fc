"""A gVisor sandbox's own files, kept on the host while they live in gVisor's overlay (issue 14).

By default runsc keeps the sandbox's writes in its own root overlay (`--overlay2=root:self`): names and metadata
in the sentry's memory, data in a filestore file only the sentry can read. Nothing on the host can read them
back, so a frozen sandbox that a host reboot ends would lose them. What can read them is the sandbox itself.
`save` runs a small program in the sandbox (`runsc exec`, as its root, with the system image's Python) that
walks its root file system and writes to stdout a tar of every entry that differs from the template — type,
mode, owner, size, mtime or link target — and the list of template paths that are gone. `load` runs the
reverse program in a fresh sandbox of the same template: the deletions, then the entries, with their owners.

Why this way:
- **The host never unpacks or parses it.** The stream is made and unpacked inside the sandbox, by the
  sandbox's own root, with the sandbox's privileges: whatever it contains (the sandboxed code may have forged
  it) can only do to the sandbox's files what that code could already do. On the host it is bytes in a file,
  capped in size (`limit`); nothing untrusted is unpacked by host uid 0.
- **Only the sandbox's changes travel.** The host sends the program a manifest of what the sandbox sees of its
  template (the host's own view of the sandbox's root, owners shifted back from its uid range); only what
  differs is written, so a pause costs what the sandbox wrote, not its whole template.
- **The files-on-disk mode stays as an option, not the default.** With `--overlay2=none` the writes reach the
  host's writable layer directly, but the gofer has no xattrs (envd's file metadata fails) and the root shows
  as 9p (envd refuses watchers under `/`), and every file operation pays a gofer round trip.

Limits: the tar is taken while the sandbox runs, just before it is frozen (a file written during the walk may
be caught half-way; the frozen memory, not the tar, is what a resume without a reboot uses). A file whose
content changed but whose size and mtime were put back as the template's (`touch -d`) counts as unchanged.
Mount points (`/proc`, `/dev`, `/sys`, `/.sandhive`, the `/etc` binds, volumes) and other file systems are
not walked: volumes keep their own files. The program runs within the sandbox's limits: a sandbox at its memory
limit may fail to pause (the pause fails; it runs on).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import IO

from ..images import system_image
from .errors import BackendError

SAVE_TIMEOUT = 600.0  # seconds for the walk and the tar (a sandbox's disk of writes through the gofer)
LOAD_TIMEOUT = 600.0
SLACK_BYTES = 64 << 20  # on top of twice the sandbox's disk: tar headers of many small files
CHUNK = 1 << 20

# Run inside the sandbox by its root. stdin: {"manifest": {path: signature}, "skip": [mount points]};
# stdout: a tar whose first member `deleted` lists the template's paths that are gone (NUL-separated, outermost
# only), then `files/<path>` for each entry that differs from the template (directories without their content).
SAVE_PROGRAM = r"""
import collections, io, json, os, stat, sys, tarfile
spec = json.load(sys.stdin)
manifest = spec["manifest"]
with open("/proc/self/mountinfo") as f:  # other file systems over the root: never walked
    skip = set(spec["skip"]) | {line.split()[4] for line in f} - {"/"}

def signature(path, st):
    target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
    size = st.st_size if stat.S_ISREG(st.st_mode) else 0
    return [st.st_mode, st.st_uid, st.st_gid, size, st.st_mtime_ns, target]

seen, differs, kept, stack = set(), [], [], ["/"]
while stack:
    try:
        entries = sorted(os.scandir(stack.pop()), key=lambda e: e.name)
    except OSError:
        continue
    for entry in entries:
        path = entry.path
        if path in skip:
            seen.add(path)
            continue
        try:
            st = os.lstat(path)
        except OSError:
            continue
        seen.add(path)
        directory = stat.S_ISDIR(st.st_mode)
        if manifest.get(path) != signature(path, st):
            differs.append(path)
        elif not directory:
            kept.append((path, st.st_dev))
        if directory:
            stack.append(path)

# gVisor's overlay shows a file (not a directory) from its upper layer on that layer's device: a file whose
# signature matches the template's but whose device is not the template files' was still written (copied up).
lower = collections.Counter(dev for _, dev in kept).most_common(1)
written = {path for path, dev in kept if lower and dev != lower[0][0]}
changed = [path for path in differs] + sorted(written)
gone = {p for p in manifest if p not in seen and not os.path.lexists(p)}
outermost = sorted(p for p in gone if os.path.dirname(p) not in gone)
out = tarfile.open(fileobj=sys.stdout.buffer, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8",
                   errors="surrogateescape")
data = "\0".join(outermost).encode("utf-8", "surrogateescape")
info = tarfile.TarInfo("deleted")
info.size = len(data)
out.addfile(info, io.BytesIO(data))


# A file's bytes as long as its header says, zero-padded if it shrank meanwhile (it is read while the sandbox
# runs): a short member would make the rest of the stream garbage.
class Exact:

    def __init__(self, f):
        self.f = f

    def read(self, n):
        try:
            data = self.f.read(n)
        except OSError:
            data = b""
        return data + bytes(n - len(data))


for path in changed:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        fd = None  # not a file to read (a link, a FIFO opened by nobody, gone)
    try:
        if fd is not None and stat.S_ISREG(os.fstat(fd).st_mode):
            with os.fdopen(fd, "rb") as f:
                fd = None
                info = out.gettarinfo(arcname="files" + path, fileobj=f)
                out.addfile(info, Exact(f) if info.isreg() else None)
        elif not stat.S_ISREG(os.lstat(path).st_mode):  # a file only since the check above: skipped
            out.add(path, arcname="files" + path, recursive=False)
    except OSError:
        pass  # gone since the walk (always before its header is written: a read error pads, never raises)
    finally:
        if fd is not None:
            os.close(fd)
out.close()
print(f"{len(seen)} entries, {len(changed)} changed, {len(outermost)} gone", file=sys.stderr)
"""

# Run inside a fresh sandbox of the same template by its root; stdin: what SAVE_PROGRAM wrote.
LOAD_PROGRAM = r"""
import os, shutil, stat, sys, tarfile
trusted = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}

def remove(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)

tar = tarfile.open(fileobj=sys.stdin.buffer, mode="r|", encoding="utf-8", errors="surrogateescape")
first = tar.next()
if first is None or first.name != "deleted":
    sys.exit("not a saved file layer")
for path in tar.extractfile(first).read().decode("utf-8", "surrogateescape").split("\0"):
    if path.startswith("/") and path != "/":
        remove(path)
dirs, failed = [], 0
for member in tar:
    if not member.name.startswith("files/"):
        continue
    member.name = member.name[len("files/"):]
    if member.islnk() and member.linkname.startswith("files/"):
        member.linkname = member.linkname[len("files/"):]
    target = "/" + member.name
    try:
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            st = None
        if st is not None and not (member.isdir() and stat.S_ISDIR(st.st_mode)):
            remove(target)
        tar.extract(member, "/", numeric_owner=True, **trusted)
    except Exception as exc:  # one entry that cannot be made (e.g. under a link) does not lose the others
        failed += 1
        print(f"{target}: {exc}", file=sys.stderr)
        continue
    if member.isdir():
        dirs.append((member, target))
for member, target in reversed(dirs):  # their entries changed their mtimes since
    try:
        tar.chown(member, target, True)
        tar.chmod(member, target)
        tar.utime(member, target)
    except Exception as exc:
        print(f"{target}: {exc}", file=sys.stderr)
print(f"{failed} entries not restored", file=sys.stderr)
"""


def cap(disk_bytes: int) -> int:
    """The most a sandbox's kept files may take on the host: its writes fit its disk, plus tar's headers."""
    return 2 * disk_bytes + SLACK_BYTES


def python_command() -> list[str]:
    """argv of the system image's Python inside a sandbox (isolated from the template's environment)."""
    mount = "/.sandhive"
    return [*system_image.loader_command(mount), f"{mount}/{system_image.PYTHON}", "-I", "-B", "-c"]


def manifest(rootfs: Path, host_root: int, skip: set[str]) -> dict[str, list]:
    """What the sandbox sees of its template, as SAVE_PROGRAM's signatures: the host's view of its root (the
    sandbox's overlay before gVisor's own), owners shifted back from the sandbox's range. Links not followed."""
    found: dict[str, list] = {}
    stack = [("", str(rootfs))]
    while stack:
        inside, host = stack.pop()
        with os.scandir(host) as entries:
            for entry in entries:
                path = f"{inside}/{entry.name}"
                if path in skip or (not inside and entry.name.startswith(".gvisor.filestore")):
                    continue
                st = entry.stat(follow_symlinks=False)
                target = os.readlink(entry.path) if stat.S_ISLNK(st.st_mode) else ""
                size = st.st_size if stat.S_ISREG(st.st_mode) else 0
                found[path] = [st.st_mode, st.st_uid - host_root, st.st_gid - host_root, size, st.st_mtime_ns,
                               target]
                if stat.S_ISDIR(st.st_mode):
                    stack.append((path, entry.path))
    return found


def mount_points(sandbox_dir: Path) -> set[str]:
    """Where the bundle mounts something over the root (never walked: /proc, /dev, binds, volumes)."""
    config = json.loads((sandbox_dir / "config.json").read_text())
    return {m["destination"].rstrip("/") or "/" for m in config.get("mounts", [])}


async def save(exec_argv: list[str], sandbox_dir: Path, host_root: int, dest: Path, limit: int) -> float:
    """Write the sandbox's changes to its template into `dest` (made here), through `exec_argv` (`runsc exec
    ... <id>`, to which the program's argv is appended). Raises BackendError (and leaves no `dest`) when the
    program fails or writes more than `limit` bytes. Returns the seconds it took.

    The program's stdout and stderr are donated to the sentry, which holds them until the program ends inside
    the sandbox, whatever becomes of `runsc exec`: so stdout is a pipe this side closes to stop it (the program
    then dies on its next write), and stderr a file, never a pipe anything waits on."""
    started = time.monotonic()
    skip = await asyncio.to_thread(mount_points, sandbox_dir)
    found = await asyncio.to_thread(manifest, sandbox_dir / "rootfs", host_root, skip)
    request = json.dumps({"manifest": found, "skip": sorted(skip)}).encode()
    loop = asyncio.get_running_loop()
    read_end, write_end = os.pipe()
    reader = asyncio.StreamReader(limit=CHUNK)
    try:
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                    os.fdopen(read_end, "rb", buffering=0))
    except BaseException:
        os.close(read_end)
        os.close(write_end)
        raise
    try:
        with tempfile.TemporaryFile() as errors:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *exec_argv, *python_command(), SAVE_PROGRAM, stdin=asyncio.subprocess.PIPE, stdout=write_end,
                    stderr=errors, start_new_session=True)
            finally:
                os.close(write_end)
            try:
                await asyncio.wait_for(_save_stream(proc, reader, request, dest, limit), SAVE_TIMEOUT)
                code = await asyncio.wait_for(proc.wait(), SAVE_TIMEOUT)
                if code != 0:
                    raise BackendError(f"saving the sandbox's files failed (exit {code}): {_tail(errors)}")
            except BaseException:
                transport.close()
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                await asyncio.to_thread(dest.unlink, missing_ok=True)
                raise
    finally:
        transport.close()
    return time.monotonic() - started


async def _save_stream(proc: asyncio.subprocess.Process, reader: asyncio.StreamReader, request: bytes,
                       dest: Path, limit: int) -> None:
    async def feed() -> None:
        assert proc.stdin is not None
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(request)
                await proc.stdin.drain()
        finally:
            proc.stdin.close()  # else `proc.wait()` waits for this pipe too

    feeding = asyncio.ensure_future(feed())
    written = 0
    fd = await asyncio.to_thread(os.open, dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        while chunk := await reader.read(CHUNK):
            written += len(chunk)
            if written > limit:
                raise BackendError(f"the sandbox's files came to more than {limit >> 20} MiB; not kept")
            await asyncio.to_thread(os.write, fd, chunk)
        await asyncio.to_thread(os.fsync, fd)
    finally:
        os.close(fd)
        if not feeding.done():
            feeding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeding


def _tail(errors: IO[bytes], keep: int = 500) -> str:
    """The last `keep` characters the program wrote to stderr (for the log: never shown to a user)."""
    errors.seek(0, os.SEEK_END)
    errors.seek(max(0, errors.tell() - keep))
    return errors.read().decode(errors="replace").strip()


async def load(exec_argv: list[str], src: Path) -> float:
    """Unpack a `save`d stream `src` inside a fresh sandbox of the same template, through `exec_argv`. Raises
    BackendError when the program fails. Returns the seconds it took."""
    started = time.monotonic()
    with await asyncio.to_thread(open, src, "rb") as stream, tempfile.TemporaryFile() as errors:
        proc = await asyncio.create_subprocess_exec(
            *exec_argv, *python_command(), LOAD_PROGRAM, stdin=stream, stdout=asyncio.subprocess.DEVNULL,
            stderr=errors, start_new_session=True)
        try:
            code = await asyncio.wait_for(proc.wait(), LOAD_TIMEOUT)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if code != 0:
            raise BackendError(f"restoring the sandbox's files failed (exit {code}): {_tail(errors)}")
    return time.monotonic() - started
