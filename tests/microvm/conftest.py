"""The microvm suite: real QEMU guests (TCG where KVM does not boot guests, as on these machines).

Run by `make test-microvm`, not by plain `pytest`: under TCG a template snapshot takes tens of seconds
to build and each clone's first commands run emulated. Every test module is marked `microvm`, which the
default run deselects (pyproject's addopts). Everything lives in a data dir under /tmp that is removed
at the end, after checking that no VM, netns or mount of it is left.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .leftovers import leftovers


def microvm_missing() -> str | None:
    """Why microVMs cannot run here (the suite then skips, saying so), or None."""
    if os.geteuid() != 0:
        return "the microvm backend needs root (network namespaces, TAP devices, mounts)"
    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils"),
                          ("mkfs.erofs", "erofs-utils"), ("mmdebstrap", "mmdebstrap")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package}; make debian-packages)"
    return None


@pytest.fixture(scope="package")
def microvm_root() -> Iterator[Path]:
    reason = microvm_missing()
    if reason:
        print(f"skipping the microvm suite: {reason}")
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="sandhive-microvm-", dir="/tmp"))
    root.chmod(0o711)
    try:
        yield root
    finally:
        left = leftovers(root)
        with open("/proc/self/mounts") as f:
            mounted = [line.split()[1] for line in f if line.split()[1].startswith(str(root))]
        if not mounted:
            shutil.rmtree(root, ignore_errors=True)
        assert not mounted, f"still mounted under {root}: {mounted}"
        assert not left, f"the microvm suite left behind: {left}"
