"""Running host tools (ip, nft, runc) from the node, with errors that say what failed."""

from __future__ import annotations

import asyncio

from .errors import BackendError


class HostCommandError(BackendError):
    def __init__(self, argv: list[str], code: int, stderr: str) -> None:
        super().__init__(f"{' '.join(argv[:4])}… failed ({code}): {stderr.strip()[-500:]}")
        self.argv, self.code, self.stderr = argv, code, stderr


async def run(*argv: str, input: str | None = None, check: bool = True) -> str:
    """Run a host command; return its stdout. Raises HostCommandError on failure when `check`."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(input.encode() if input is not None else None)
    if check and proc.returncode != 0:
        raise HostCommandError(list(argv), proc.returncode or -1, err.decode(errors="replace"))
    return out.decode(errors="replace")
