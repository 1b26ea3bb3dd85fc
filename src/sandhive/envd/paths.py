"""Paths as envd understands them: relative to the acting user's home, with `~` expanded."""

from __future__ import annotations

import os

from .users import User


def resolve_path(path: str, user: User) -> str:
    if not path:
        raise ValueError("path is required")
    if "\x00" in path:
        raise ValueError("path contains a NUL byte")
    if path == "~" or path.startswith("~/"):
        path = user.home + path[1:]
    return os.path.normpath(os.path.join(user.home, path))


def chown_created(path: str, stop_at: str, user: User) -> None:
    """Give `path`, and the parents created for it up to `stop_at` (exclusive), to `user`."""
    if os.geteuid() != 0 or user.uid == 0:
        return
    while path and path != stop_at and path != "/":
        os.lchown(path, user.uid, user.gid)
        path = os.path.dirname(path)


def first_missing_ancestor(path: str) -> str:
    """The highest ancestor of `path` that does not exist yet (or `path` itself)."""
    missing = path
    parent = os.path.dirname(missing)
    while parent != missing and not os.path.lexists(parent):
        missing, parent = parent, os.path.dirname(parent)
    return missing


def make_dirs_as(path: str, user: User) -> None:
    """`mkdir -p` whose new directories belong to `user`, as a file written by that user would."""
    if os.path.isdir(path):
        return
    top = first_missing_ancestor(path)
    os.makedirs(path, exist_ok=True)
    chown_created(path, os.path.dirname(top), user)
