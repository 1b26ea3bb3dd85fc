"""Store rows → E2B response bodies. One place decides which keys a client sees."""

from __future__ import annotations

from typing import TypeVar

from ..node.runtime import SandboxHandle
from ..store import SandboxRecord
from .schemas import Lifecycle, ListedSandbox, Sandbox, SandboxDetail

# The metadata key that carries a sandbox's error state (its node is lost). E2B's SDKs parse `state` as an enum of
# running/paused and reject anything else, so `state` stays the last known one and the error rides in metadata,
# which every SDK hands to the caller as it is (`get_info().metadata`, `Sandbox.list`).
ERROR_KEY = "sandhive.error"
V = TypeVar("V", bound=ListedSandbox)


def handle_of(record: SandboxRecord) -> SandboxHandle:
    """What the node needs to reach or stop the sandbox of `record`."""
    return SandboxHandle(record.sandbox_id, record.backend, record.address, dict(record.runtime_state or {}))


def saved_handle(record: SandboxRecord) -> SandboxHandle:
    """A paused sandbox's handle as far as its saved state says where it is (the node that holds its files)."""
    saved = record.saved or {}
    return SandboxHandle(record.sandbox_id, record.backend, "", dict(saved.get("state") or {}))


def with_error(view: V, error: str | None) -> V:
    """`view` with its error state (`ERROR_KEY` in its metadata), if it has one."""
    if error:
        view.metadata = {**view.metadata, ERROR_KEY: error}
    return view


def sandbox_view(record: SandboxRecord) -> Sandbox:
    return Sandbox(templateID=record.template_id, sandboxID=record.sandbox_id, clientID=record.client_id,
                   envdVersion=record.envd_version, envdAccessToken=record.envd_access_token, alias=record.alias,
                   trafficAccessToken=record.traffic_access_token)


def _listed_fields(record: SandboxRecord) -> dict:
    return dict(templateID=record.template_id, sandboxID=record.sandbox_id, clientID=record.client_id,
                alias=record.alias, startedAt=record.started_at, endAt=record.end_at, cpuCount=record.cpu_count,
                memoryMB=record.memory_mb, diskSizeMB=record.disk_mb, state=record.state,
                envdVersion=record.envd_version, metadata=dict(record.meta or {}))


def listed_view(record: SandboxRecord) -> ListedSandbox:
    return ListedSandbox(**_listed_fields(record))


def detail_view(record: SandboxRecord) -> SandboxDetail:
    return SandboxDetail(**_listed_fields(record), envdAccessToken=record.envd_access_token,
                         allowInternetAccess=record.allow_internet_access, network=record.network,
                         lifecycle=Lifecycle(autoResume=bool(record.auto_resume),
                                             onTimeout="pause" if record.auto_pause else "kill"))
