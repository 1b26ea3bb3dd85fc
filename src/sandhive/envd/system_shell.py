"""The system image's own bash, for template rootfs that have none.

E2B's SDK runs every command as `/bin/bash -l -c ...`. A minimal rootfs (busybox, distroless) has
no bash, so envd runs the copy in its system image through the image's dynamic loader. Only bash
itself uses the image's libraries: `--library-path` does not propagate, so programs bash starts
use the rootfs's own.
"""

from __future__ import annotations

import os

LOADER = "lib64/ld-linux-x86-64.so.2"
LIBRARY_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")


def system_bash_argv(system_root: str) -> list[str]:
    """argv prefix that runs the system image's bash mounted at `system_root`."""
    libs = ":".join(os.path.join(system_root, d) for d in LIBRARY_DIRS)
    return [os.path.join(system_root, LOADER), "--library-path", libs, os.path.join(system_root, "usr/bin/bash")]
