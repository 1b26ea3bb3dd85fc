"""EntryInfo: what envd says about a file (type, size, mode, owner, times, symlink, metadata)."""

from __future__ import annotations

import contextlib
import functools
import grp
import os
import pwd
import stat

from protobuf.wkt.google.protobuf.timestamp_pb import Timestamp

from ..rpc.filesystem import filesystem_pb as pb

METADATA_XATTR_PREFIX = "user.e2b."


@functools.lru_cache(maxsize=256)
def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@functools.lru_cache(maxsize=256)
def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _file_type(mode: int) -> pb.FileType:
    if stat.S_ISDIR(mode):
        return pb.FileType.DIRECTORY
    if stat.S_ISLNK(mode):
        return pb.FileType.SYMLINK
    return pb.FileType.FILE


def read_metadata(path: str) -> dict[str, str]:
    """File metadata set through `X-Metadata-*` headers, kept as `user.e2b.*` xattrs."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out: dict[str, str] = {}
    for name in names:
        if name.startswith(METADATA_XATTR_PREFIX):
            try:
                out[name[len(METADATA_XATTR_PREFIX):]] = os.getxattr(path, name, follow_symlinks=False).decode()
            except (OSError, UnicodeDecodeError):
                continue
    return out


def entry_info(path: str, st: os.stat_result | None = None) -> pb.EntryInfo:
    """EntryInfo of `path` (not following a final symlink; its target is reported instead)."""
    st = st or os.lstat(path)
    info = pb.EntryInfo(
        name=os.path.basename(path) or "/",
        path=path,
        size=st.st_size,
        mode=stat.S_IMODE(st.st_mode),
        permissions=stat.filemode(st.st_mode),
        owner=_user_name(st.st_uid),
        group=_group_name(st.st_gid),
        modified_time=Timestamp(seconds=int(st.st_mtime), nanos=st.st_mtime_ns % 1_000_000_000),
        type=_file_type(st.st_mode),
        metadata=read_metadata(path),
    )
    if stat.S_ISLNK(st.st_mode):
        info.is_symlink = True
        target = os.readlink(path)
        info.symlink_target = os.path.normpath(os.path.join(os.path.dirname(path), target))
        # A symlink is reported as what it points to, as E2B's envd does; a dangling one stays SYMLINK.
        with contextlib.suppress(OSError):
            info.type = _file_type(os.stat(path).st_mode)
    return info


def list_dir(root: str, depth: int) -> list[pb.EntryInfo]:
    """Entries under `root`, recursing `depth` levels (1 = direct children); symlinks are not followed.

    `root` itself must be readable (an OSError says why not); subdirectories that are not are skipped.
    """
    entries: list[pb.EntryInfo] = []

    def walk(directory: str, level: int) -> None:
        try:
            scan = sorted(os.scandir(directory), key=lambda e: e.name)
        except (PermissionError, FileNotFoundError, NotADirectoryError):
            if level == 1:
                raise
            return
        for item in scan:
            try:
                st = item.stat(follow_symlinks=False)
            except OSError:
                continue
            entries.append(entry_info(item.path, st))
            if level < depth and stat.S_ISDIR(st.st_mode):
                walk(item.path, level + 1)

    walk(root, 1)
    return entries
