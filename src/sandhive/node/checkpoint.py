"""Checkpoint and restore of a `container` sandbox with CRIU, through runc's `checkpoint`/`restore`.

The first brick of issue 14's memory pause: a running sandbox (envd, its children, their memory, open files
and listening sockets) is dumped to a directory and later brought back where it left off. CRIU comes from the
node toolchain (`images/node_toolchain.py`: Debian 13's CRIU 4.1.1 and a wrapper that runc execs via
`--criu`); Debian 12's CRIU 3.17 fails on this kernel. What each choice below works around is written up in
docs/persistence.md ("Container backend: CRIU").

- The network namespace is not dumped (`--empty-ns network`): it holds the host-facing veth, which CRIU
  cannot take. The node tears the sandbox's network down after the dump and wires a fresh namespace after the
  restore, as it does on start. Sockets survive: envd listens on 0.0.0.0, so it answers on whatever address
  the new namespace gets. Connections open at dump time come back closed (the toolchain's `tcp-close`).
- The writable layer and the bundle stay where they are: a restore here is into the same sandbox id, slot
  and disk. Restoring into a new id (new slot, cgroup, writable layer copy) is the next step.
- envd's stdio is a pipe drained into the sandbox's log (`oci_runtime.log_pipe`), not the host's log file:
  CRIU cannot dump an fd to a file on a mount the sandbox cannot see. runc re-creates stdio pipes on restore
  (`inherit-fd`), so `restore` hands it a fresh pipe drained into the same log.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..images import node_toolchain
from . import network
from .network import Slot
from .oci_runtime import OciRuntime, log_pipe
from .runtime import SandboxHandle


class CheckpointError(RuntimeError):
    """runc/CRIU refused a dump or restore; the message names CRIU's log for the details."""


@dataclass(frozen=True)
class Checkpoint:
    """A sandbox's dumped processes: CRIU's image files in `directory` (dump.log beside them)."""

    sandbox_id: str
    directory: Path
    seconds: float

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.directory.glob("*.img"))


async def _criu_wrapper() -> Path:
    """The toolchain's criu wrapper, built on first use (about 10 s with a warm apt cache)."""
    return await asyncio.to_thread(node_toolchain.criu_wrapper)


def _oci(runtime: OciRuntime, criu: Path, *args: str) -> list[str]:
    return [runtime.binary, *runtime.global_args(), "--criu", str(criu), *args]


async def checkpoint(runtime: OciRuntime, handle: SandboxHandle, dest: Path) -> Checkpoint:
    """Dump the sandbox's processes into `dest` (created; must not exist) and stop them.

    On success the sandbox's processes are gone and its network is torn down, but its slot, bundle and
    writable layer are kept for `restore`. On failure runc leaves the sandbox running as it was.
    """
    criu = await _criu_wrapper()
    await asyncio.to_thread(dest.mkdir, parents=True)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *_oci(runtime, criu, "checkpoint", "--image-path", str(dest), "--work-path", str(dest),
              "--empty-ns", "network", handle.sandbox_id),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise CheckpointError(f"checkpoint of {handle.sandbox_id} failed (see {dest / 'dump.log'}): "
                              f"{out.decode(errors='replace').strip()[-500:]}")
    seconds = time.monotonic() - started
    await network.destroy(handle.sandbox_id, Slot(handle.state["slot"]))
    return Checkpoint(handle.sandbox_id, dest, seconds)


async def restore(runtime: OciRuntime, handle: SandboxHandle, image: Checkpoint, internet: bool = True) -> float:
    """Bring a checkpointed sandbox back into its own id, slot and disk; return the seconds it took.

    runc restores into a fresh, empty network namespace; the node names it and wires the slot's veth in,
    as `OciRuntime.start` does after `runc create`.
    """
    criu = await _criu_wrapper()
    sandbox_dir = runtime.sandboxes_dir / handle.sandbox_id
    started = time.monotonic()
    stdio = await asyncio.to_thread(_log_pipe_into, sandbox_dir / "envd.log")
    try:
        proc = await asyncio.create_subprocess_exec(
            *_oci(runtime, criu, "restore", "--detach", "--bundle", str(sandbox_dir),
                  "--pid-file", str(sandbox_dir / "pid"), "--image-path", str(image.directory),
                  "--work-path", str(image.directory), "--empty-ns", "network", handle.sandbox_id),
            stdin=asyncio.subprocess.DEVNULL, stdout=stdio, stderr=stdio, start_new_session=True)
        returncode = await proc.wait()
    finally:
        os.close(stdio)
    if returncode != 0:
        raise CheckpointError(f"restore of {handle.sandbox_id} failed (see {image.directory / 'restore.log'})")
    pid = int((sandbox_dir / "pid").read_text())
    await network.attach_namespace(handle.sandbox_id, pid)
    await network.create(handle.sandbox_id, Slot(handle.state["slot"]), internet)
    return time.monotonic() - started


def _log_pipe_into(log: Path) -> int:
    with open(log, "ab") as out:
        return log_pipe(out)


__all__ = ["Checkpoint", "CheckpointError", "checkpoint", "restore"]
