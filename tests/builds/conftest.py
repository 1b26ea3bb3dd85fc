"""Real template builds with buildah: a data dir under /var/tmp per module, its template images removed after.

Builds share the host's buildah storage (the layer cache and the local Debian bases): the first build on a
fresh host makes `debian:bookworm-slim` with mmdebstrap (~20-40 s); later ones reuse it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandhive.templates import builder


def buildah_missing() -> str | None:
    if os.geteuid() != 0:
        return "template builds need root (buildah storage, network namespaces, chown into the sandbox range)"
    for tool in ("buildah", "runc", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make debian-packages)"
    return None


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    reason = buildah_missing()
    if reason:
        print(f"SKIP template builds: {reason}")
        pytest.skip(reason)
    path = Path(tempfile.mkdtemp(prefix="sandhive-builds-", dir="/var/tmp"))
    try:
        yield path
    finally:
        templates = path / "templates"
        for entry in templates.iterdir() if templates.is_dir() else []:
            if not entry.name.startswith("."):
                builder.remove_image(path, entry.name)
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def write_context(root: Path, files: dict[str, str | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root
