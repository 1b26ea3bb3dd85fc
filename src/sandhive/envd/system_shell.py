"""Programs envd takes from the system image rather than the rootfs: bash, and the spawn helper.

E2B's SDK runs every command as `/bin/bash -l -c ...`. A minimal rootfs (busybox, distroless) has
no bash, so envd runs the copy in its system image through the image's dynamic loader. Only bash
itself uses the image's libraries: `--library-path` does not propagate, so programs bash starts
use the rootfs's own.

The spawn helper (`sandhive-spawn`, a static binary built from `sandhive/images/spawn_helper.c`) is
what lets envd start every command with vfork: it drops to the command's user and takes the PTY as
controlling terminal after the exec, where CPython would need a full fork of envd (see processes.py).
"""

from __future__ import annotations

import os

LOADER = "lib64/ld-linux-x86-64.so.2"
LIBRARY_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")
SPAWN_HELPER = "usr/libexec/sandhive-spawn"  # inside the image; the image build puts it there
SYSTEM_ROOT_ENV = "SANDHIVE_SYSTEM_ROOT"  # where the node mounted the image (envd's environment)


def system_bash_argv(system_root: str) -> list[str]:
    """argv prefix that runs the system image's bash mounted at `system_root`."""
    libs = ":".join(os.path.join(system_root, d) for d in LIBRARY_DIRS)
    return [os.path.join(system_root, LOADER), "--library-path", libs, os.path.join(system_root, "usr/bin/bash")]


def find_spawn_helper(system_root: str | None = None) -> str | None:
    """The spawn helper of the image mounted at `system_root` (default: `$SANDHIVE_SYSTEM_ROOT`).

    None when envd runs outside a system image (development, tests on the host) or the image predates
    the helper: envd then spawns with CPython's own credential switch, which is correct but slower.
    """
    root = system_root if system_root is not None else os.environ.get(SYSTEM_ROOT_ENV)
    if not root:
        return None
    path = os.path.join(root, SPAWN_HELPER)
    return path if os.access(path, os.X_OK) else None
