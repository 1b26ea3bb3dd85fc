"""Debian's docker-registry on loopback for a test (plain HTTP, deletes enabled, storage in a temp dir), stopped by
PID. Tests that need it skip when a tool is missing or the suite is not root."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandhive.templates.oci_registry import TemplateRegistryRef
from tests.helpers import stop_process_group

TOOLS = ("docker-registry", "umoci", "skopeo")


def skip_unless_possible() -> None:
    if os.geteuid() != 0:
        pytest.skip("templates in a registry need root (user namespaces mapped to the template range)")
    for tool in TOOLS:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make debian-packages)")


@contextlib.contextmanager
def loopback_registry(root: Path) -> Iterator[TemplateRegistryRef]:
    skip_unless_possible()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = root / "registry.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                      f"    rootdirectory: {root}/registry\n  delete:\n    enabled: true\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    log = root / "registry.log"
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=log.open("w"), start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1, trust_env=False).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield TemplateRegistryRef(f"127.0.0.1:{port}", "", insecure=True)
    finally:
        stop_process_group(proc)
