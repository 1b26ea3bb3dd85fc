"""A paused or snapshotted microVM as a directory that needs nothing else: its disks, RAM and machine.

    saved.json     what the machine was (accelerator, vCPUs, RAM, mode) and the names below
    state          (memory mode) QEMU's migration stream: device state and the whole RAM
    disk.qcow2     the sandbox's own writes (its top qcow2 layer when it was saved)
    layer0.qcow2…  the layers under it, top-down, hard links: the template snapshot's disk, earlier saves'
    layerN.raw     the template's ext4 image
    system.erofs   the system image the guest had mounted (its page cache is in the RAM: it must be that one)

Every layer is named on QEMU's command line (qemu.Machine.root_backing), never by the paths in qcow2
headers, so the directory can be moved or kept after its template is rebuilt. Layers below the top are
never written again: a VM started from a saved directory writes a new top over hard links of them, which
is why one snapshot serves many restores and a failed resume leaves the directory as it was.

A sandbox directory under `microvm/sandboxes/<id>` has the same disk names (`disk.qcow2` over
`layer*`), so saving it is a matter of links.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..saved import RECORD
from . import disks

LAYOUT_VERSION = 1
BACKEND = "microvm"  # the runtime's name, in the record
META = RECORD  # "saved.json": the node's pause record too
STATE = "state"
TOP = "disk.qcow2"
SYSTEM = "system.erofs"
MAX_LAYERS = 8  # qcow2 layers under a top; past this a resume copies the saved top instead of stacking on it


@dataclass(frozen=True)
class Machine:
    """What a saved VM was: a memory resume needs the same shape (the RAM stream is its RAM)."""

    accel: str
    cpus: int
    memory_mb: int
    disk_mb: int
    disk_bytes: int  # the root disk's virtual size
    layers: tuple[str, ...]  # names under `disk.qcow2`, top-down

    def meta(self, mode: str, source_id: str, template_id: str) -> dict[str, Any]:
        """`saved.json`: with `source_id`, `backend` and `mode` it is also the node's pause record
        (`node/saved.py`), which the API reads to find a pause it never recorded (a crash in between)."""
        return {"layout": LAYOUT_VERSION, "backend": BACKEND, "mode": mode, "source_id": source_id,
                "template_id": template_id,
                "accel": self.accel, "cpus": self.cpus, "memory_mb": self.memory_mb, "disk_mb": self.disk_mb,
                "disk_bytes": self.disk_bytes, "layers": list(self.layers)}

    @classmethod
    def of(cls, meta: dict[str, Any]) -> Machine:
        if meta.get("layout") != LAYOUT_VERSION:
            raise ValueError(f"saved layout {meta.get('layout')!r}, this node reads {LAYOUT_VERSION}")
        return cls(str(meta["accel"]), int(meta["cpus"]), int(meta["memory_mb"]), int(meta["disk_mb"]),
                   int(meta["disk_bytes"]), tuple(str(n) for n in meta["layers"]))


def layer_name(index: int, source: Path) -> str:
    return f"layer{index}{'.qcow2' if source.suffix == '.qcow2' else '.raw'}"


def link_layers(lower: list[Path], system_disk: Path, dest: Path) -> tuple[str, ...]:
    """Hard links of a VM's lower layers and system disk into `dest`; their names, top-down."""
    names = tuple(layer_name(i, layer) for i, layer in enumerate(lower))
    for name, layer in zip(names, lower, strict=True):
        disks.link_or_copy(layer, dest / name)
    disks.link_or_copy(system_disk, dest / SYSTEM)
    return names


def write_meta(dest: Path, meta: dict[str, Any]) -> None:
    """`saved.json`, written last and atomically after everything else is on disk: its presence means whole."""
    for entry in dest.iterdir():
        _fsync(entry)
    tmp = dest / f".{META}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    _fsync(tmp)
    os.rename(tmp, dest / META)
    _fsync(dest)


def read_meta(directory: Path, fallback: dict[str, Any]) -> dict[str, Any]:
    """The directory's own record (authoritative: the directory may have moved), else the stored state."""
    try:
        return dict(json.loads((directory / META).read_text()))
    except (OSError, ValueError):
        return fallback


def into_sandbox(directory: Path, machine: Machine, sandbox_dir: Path) -> list[Path]:
    """Make `sandbox_dir`'s disks from a saved directory: a new empty top over links of its layers (or a copy
    of its top, when the chain is already `MAX_LAYERS` deep) and its system disk. Returns the lower layers."""
    saved_lower = [directory / TOP, *(directory / name for name in machine.layers)]
    copy_top = len(saved_lower) > MAX_LAYERS
    if copy_top:
        disks.copy_sparse(directory / TOP, sandbox_dir / TOP)
        saved_lower = saved_lower[1:]
    lower = [sandbox_dir / layer_name(i, layer) for i, layer in enumerate(saved_lower)]
    for src, dest in zip(saved_lower, lower, strict=True):
        disks.link_or_copy(src, dest)
    disks.link_or_copy(directory / SYSTEM, sandbox_dir / SYSTEM)
    if not copy_top:
        disks.overlay_over(sandbox_dir / TOP, lower[0], machine.disk_bytes)
    return lower


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
