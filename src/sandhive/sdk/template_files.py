"""The local side of COPY steps: which files a source names, their hash, and the tar that uploads them.

Paths are relative to the template's context directory and must stay inside it. `.dockerignore` in the
context (plus the template's own ignore patterns) excludes files with Docker's semantics (moby's pattern
matcher, via `e2b_dockerfile_utils`). The hash covers `COPY <src> <dest>`, then for each file its relative
path, mode, size (not for directories) and content (a symlink's target), so an unchanged source is not
uploaded twice; owners and times are left out, so the hash is the same on every machine.
"""

from __future__ import annotations

import glob
import hashlib
import os
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import IO

from e2b_dockerfile_utils import PatternMatcher

from .template_models import TemplateException

_CHUNK = 1024 * 1024


def read_dockerignore(context: Path) -> list[str]:
    """The patterns of `<context>/.dockerignore` (comments and blank lines dropped), or none."""
    path = Path(context) / ".dockerignore"
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def check_source(src: str) -> None:
    """A COPY source must be a relative path that stays inside the context."""
    if os.path.isabs(src):
        raise TemplateException(f"invalid source path {src!r}: absolute paths are not allowed; use a path "
                                "relative to the template's context directory")
    normal = os.path.normpath(src)
    if normal == ".." or normal.startswith(".." + os.sep):
        raise TemplateException(f"invalid source path {src!r}: it leads outside the context directory")


def matching_files(src: str, context: Path, ignore: list[str]) -> list[Path]:
    """Every file and directory `src` (a path or glob, `**` included) names under `context`, directories
    with everything in them, minus what the ignore patterns exclude; sorted, absolute."""
    context = Path(context).absolute()
    try:
        matcher = PatternMatcher(ignore)
    except ValueError as exc:
        raise TemplateException(f"bad ignore pattern: {exc}") from exc
    found: set[Path] = set()

    def rel(path: Path) -> str:
        return path.relative_to(context).as_posix()

    def walk(directory: Path) -> None:
        for entry in sorted(directory.iterdir()):
            relative = rel(entry)
            ignored = matcher.matches(relative)
            if not ignored:
                found.add(entry)
            if entry.is_dir() and not entry.is_symlink() and (not ignored or matcher.may_match_under(relative)):
                walk(entry)

    matches = glob.glob(src, root_dir=context, recursive=True, include_hidden=True)
    for match in matches:
        path = Path(os.path.normpath(context / match))
        relative = "." if path == context else rel(path)
        if relative != "." and matcher.matches(relative):
            continue
        if path.is_dir() and not path.is_symlink():
            if relative != ".":
                found.add(path)
            walk(path)
        else:
            found.add(path)
    return sorted(found)


def files_hash(src: str, dest: str, context: Path, ignore: list[str], resolve_symlinks: bool = False) -> str:
    """The hash of a COPY step's files (see the module docstring). TemplateException if `src` names nothing."""
    context = Path(context).absolute()
    digest = hashlib.sha256(f"COPY {src} {dest}".encode())
    files = matching_files(src, context, ignore)
    if not files:
        raise TemplateException(f"no files match {src!r} in {context}")
    for path in files:
        digest.update(os.path.relpath(path, context).encode())
        if path.is_symlink() and not (resolve_symlinks and path.exists()):
            info = os.lstat(path)
            _hash_stat(digest, info)
            digest.update(os.readlink(path).encode())
            continue
        info = os.stat(path)
        _hash_stat(digest, info)
        if stat.S_ISREG(info.st_mode):
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
    return digest.hexdigest()


def _hash_stat(digest: hashlib._Hash, info: os.stat_result) -> None:
    digest.update(str(info.st_mode).encode())
    if not stat.S_ISDIR(info.st_mode):  # a directory's size depends on the file system, not on its files
        digest.update(str(info.st_size).encode())


def tar_files(src: str, context: Path, ignore: list[str], resolve_symlinks: bool = False,
              gzip: bool = True) -> IO[bytes]:
    """A tar (gzipped unless told) of the files `src` names, members named relative to the context, in a
    temporary file (deleted when closed) positioned at its start."""
    context = Path(context).absolute()
    out = tempfile.TemporaryFile()  # noqa: SIM115 — handed to the caller, who closes it
    try:
        with tarfile.open(fileobj=out, mode="w:gz" if gzip else "w", dereference=resolve_symlinks) as tar:
            for path in matching_files(src, context, ignore):
                tar.add(str(path), arcname=os.path.relpath(path, context), recursive=False)
        out.seek(0)
        return out
    except BaseException:
        out.close()
        raise
