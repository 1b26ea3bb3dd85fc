"""The `microvm` backend: QEMU `microvm` guests cloned from template snapshots (see runtime.py).

Modules, one job each: `qemu` (command line, process, QMP), `accel` (KVM or TCG, by booting a guest),
`disks` (read-only images and per-VM copy-on-write layers), `idmap` (template trees with real owners),
`snapshot` (template snapshots), `runtime` (the Runtime the node drives). The guest kernel and
initramfs are built by `sandhive.images.guest`.
"""

from .runtime import MicrovmRuntime, probe, probe_any_accelerator

MicroVMRuntime = MicrovmRuntime  # the name node/backends.py looks for

__all__ = ["MicroVMRuntime", "MicrovmRuntime", "probe", "probe_any_accelerator"]
