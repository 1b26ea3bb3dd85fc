"""The `container` backend: one OCI bundle per sandbox, run by runc (or crun) in a user namespace.

Isolation: a user namespace (root inside is host uid 100000), pid/mount/ipc/uts/cgroup namespaces, its
own network namespace behind the node's firewall, Docker's default capabilities, no_new_privs, a seccomp
profile and cgroup limits. It shares the host kernel: the tier for trusted code and CI. See
docs/security.md. Everything but the binary lives in `oci_runtime.py`, shared with the gvisor backend.
"""

from __future__ import annotations

import os
from pathlib import Path

from .oci_runtime import ENVD_OOM_SCORE_ADJ, START_DEADLINE, SYSTEM_IMAGE_MOUNT, OciRuntime

__all__ = ["ENVD_OOM_SCORE_ADJ", "START_DEADLINE", "SYSTEM_IMAGE_MOUNT", "ContainerRuntime"]


class ContainerRuntime(OciRuntime):
    """Runs sandboxes as OCI containers with runc (or `oci_runtime` / $SANDHIVE_OCI_RUNTIME). `prepare()` once."""

    name = "container"

    def __init__(self, data_dir: Path, oci_runtime: str | None = None) -> None:
        self.binary = oci_runtime or os.environ.get("SANDHIVE_OCI_RUNTIME") or "runc"
        super().__init__(data_dir)

    @property
    def oci_runtime(self) -> str:
        return self.binary
