"""A node: one runtime, the templates it runs, and envd's `/init` — "give me a sandbox" in one call.

The API holds the store and the timers; the node only runs things. `create` returns once the sandbox's
envd has its identity (id, env vars, token, user, clock, CA bundle), so the caller can use it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from .runtime import ResourceUsage, Runtime, SandboxHandle, SandboxSpec

log = logging.getLogger("sandhive.node")

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
INIT_ATTEMPTS = 50  # envd answers /health before /init, so /init is normally the first try


@dataclass
class EnvdInit:
    """What `/init` gives a sandbox's envd: who it is now."""

    sandbox_id: str
    template_id: str
    access_token: str | None
    env_vars: dict[str, str] = field(default_factory=dict)
    default_user: str | None = None
    default_workdir: str | None = None
    ca_bundle: str | None = None

    def body(self) -> dict:
        body: dict = {"sandboxId": self.sandbox_id, "templateId": self.template_id, "envVars": self.env_vars,
                      "timestamp": datetime.now(UTC).isoformat()}
        for key, value in (("accessToken", self.access_token), ("defaultUser", self.default_user),
                           ("defaultWorkdir", self.default_workdir), ("caBundle", self.ca_bundle)):
            if value:
                body[key] = value
        return body


def host_ca_bundle(enabled: bool = True) -> str | None:
    """The host's CA bundle, handed to sandboxes so TLS through an intercepting proxy works inside."""
    if not enabled:
        return None
    try:
        return HOST_CA_BUNDLE.read_text()
    except OSError:
        return None


class Node:
    """Runs sandboxes on this host with one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._http = httpx.AsyncClient(timeout=10.0)

    @property
    def backend(self) -> str:
        return self.runtime.name

    async def create(self, spec: SandboxSpec, init: EnvdInit) -> SandboxHandle:
        """Start a sandbox and give it its identity. On failure nothing is left running."""
        handle = await self.runtime.start(spec)
        try:
            await self._init(handle, init)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.runtime.stop(handle)
            raise
        return handle

    async def _init(self, handle: SandboxHandle, init: EnvdInit) -> None:
        last: Exception | None = None
        for _ in range(INIT_ATTEMPTS):
            try:
                r = await self._http.post(f"{handle.envd_url}/init", json=init.body())
                if r.status_code == 204:
                    return
                raise RuntimeError(f"envd refused /init: {r.status_code} {r.text}")
            except httpx.TransportError as exc:
                last = exc
                await asyncio.sleep(0.02)
        raise RuntimeError(f"envd of {handle.sandbox_id} did not answer /init: {last}")

    async def kill(self, handle: SandboxHandle) -> None:
        await self.runtime.stop(handle)

    async def is_running(self, handle: SandboxHandle) -> bool:
        return await self.runtime.is_running(handle)

    async def usage(self, handle: SandboxHandle) -> ResourceUsage:
        return await self.runtime.usage(handle)

    async def logs(self, handle: SandboxHandle) -> list[str]:
        return await self.runtime.logs(handle)

    async def reconcile(self, known: list[SandboxHandle]) -> set[str]:
        """After a restart: adopt what still runs, stop what the store does not know.

        Returns the ids of `known` sandboxes that are alive; the caller marks the others gone.
        """
        alive = {h.sandbox_id for h in known if await self.runtime.is_running(h)}
        for handle in known:
            if handle.sandbox_id not in alive:
                with contextlib.suppress(Exception):
                    await self.runtime.stop(handle)  # free what a half-dead sandbox still holds
        orphans = await self.runtime.running_ids() - {h.sandbox_id for h in known}
        for orphan in orphans:
            log.warning("removing orphan sandbox %s that the store does not know", orphan)
            with contextlib.suppress(Exception):
                await self.runtime.stop(SandboxHandle(orphan, self.runtime.name, address=""))
        return alive

    async def close(self) -> None:
        await self._http.aclose()
