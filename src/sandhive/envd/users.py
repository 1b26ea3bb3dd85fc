"""Which Unix user a request acts as, and the credentials and environment that follow from it.

E2B picks the user from the HTTP Basic username (RPC) or the `username` query parameter (`/files`),
falling back to the `defaultUser` that `/init` set, and finally to root.
"""

from __future__ import annotations

import base64
import binascii
import os
import pwd
from dataclasses import dataclass

from .process_limits import user_max_processes
from .state import DEFAULT_PATH, SandboxState

GROUP_FILE = "/etc/group"
_GROUPS_CACHE: dict[tuple[str, int], tuple[tuple[int, int, int], tuple[int, ...]]] = {}


def _group_file_stamp() -> tuple[int, int, int] | None:
    try:
        st = os.stat(GROUP_FILE)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ino, st.st_size


class UnknownUserError(LookupError):
    """The named user does not exist in the sandbox's /etc/passwd."""


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str
    shell: str

    def groups(self) -> list[int]:
        """Supplementary groups, as login would set them.

        Every file request acting as a user needs them, so they are kept until /etc/group changes: reading
        and parsing it each time would cost more than the request's own I/O (and far more under gVisor).
        """
        stamp = _group_file_stamp()
        cached = _GROUPS_CACHE.get((self.name, self.gid))
        if stamp is not None and cached is not None and cached[0] == stamp:
            return list(cached[1])
        try:
            groups = os.getgrouplist(self.name, self.gid)
        except OSError:
            groups = [self.gid]
        if stamp is not None:
            _GROUPS_CACHE[(self.name, self.gid)] = (stamp, tuple(groups))
        return groups

    def spawn_credentials(self) -> Credentials | None:
        """The credentials a child must switch to to run as this user.

        None when envd already is this user (e.g. envd run unprivileged in development).
        """
        if os.geteuid() == self.uid:
            return None
        return Credentials(self.uid, self.gid, tuple(self.groups()), user_max_processes() if self.uid else None)


@dataclass(frozen=True)
class Credentials:
    """uid, gid and supplementary groups a child process switches to before it runs its command, and the cap on
    that user's process count (see process_limits.py; None for root)."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    max_processes: int | None = None

    def helper_options(self) -> list[str]:
        """The spawn helper's options doing the same switch, in the same order: groups, gid, uid (after the
        process cap, which root must set)."""
        cap = [f"--max-processes={self.max_processes}"] if self.max_processes else []
        return [*cap, f"--groups={','.join(map(str, self.groups))}", f"--gid={self.gid}", f"--uid={self.uid}"]


def lookup(name: str) -> User:
    try:
        entry = pwd.getpwnam(name)
    except KeyError as exc:
        raise UnknownUserError(name) from exc
    return User(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir or "/", entry.pw_shell)


def username_from_basic_auth(header: str | None) -> str | None:
    """The username of an `Authorization: Basic base64(user:)` header, or None when absent or malformed."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


def resolve(requested: str | None, state: SandboxState) -> User:
    """The user a request acts as: the one it names, else `/init`'s default, else root."""
    return lookup(requested or state.default_user or "root")


def process_environment(user: User, state: SandboxState, request_envs: dict[str, str]) -> dict[str, str]:
    """Environment for a user process, layered as E2B's envd does.

    PATH, HOME, USER and LOGNAME first, then the sandbox's variables from `/init`, then the request's.
    Nothing of envd's own environment leaks in (envd may run on a private Python runtime).
    """
    env = {"PATH": DEFAULT_PATH, "HOME": user.home, "USER": user.name, "LOGNAME": user.name}
    env.update(state.sandbox_env())
    env.update(request_envs)
    return env
