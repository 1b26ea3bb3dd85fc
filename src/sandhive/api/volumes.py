"""Volumes (E2B's beta API): a team's named, size-capped volumes, kept after the sandboxes that mount them.

The rules live here; the node keeps the images (`node/volumes.py`) and does the file work of the content API
(`node/volume_files.py`). A volume belongs to its team: every other team gets 404 for it, as for a name nobody
has. Quotas: each volume is `volume_size_mb` big, and a team's volumes together at most `team_volume_mb`
(429 beyond). A volume mounted by a live sandbox (running or paused) cannot be deleted (409).

On a control plane with remote nodes (`cluster_token`), a volume's image lives on one node, which the store
records (`node_id`); making and deleting it and its content API go there (cluster/remote_volumes.py), and a
sandbox mounting it is placed there.

The content API (`/volumecontent/{id}/...`) is authorised by the volume's own bearer token, which `POST
/volumes` and `GET /volumes/{id}` hand out: HMAC(server secret, "volume:" + id), so nothing needs storing and
a wrong token says nothing about whether the volume exists.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..cluster import remote_volumes
from ..errors import UserError
from ..node.runtime import VolumeMount
from ..node.volume_files import Entry, VolumeFiles
from ..node.volumes import VolumeImages, check_mount_path, check_name
from ..store import Store, VolumeNameTaken, VolumeRecord
from ..store.store import now_utc
from .settings import Settings
from .tokens import load_secret
from .volume_schemas import Volume, VolumeAndToken, VolumeEntryStat

log = logging.getLogger("sandhive.api")

ID_ALPHABET = string.ascii_lowercase + string.digits
MOUNTING_BACKENDS = ("container", "gvisor")
MAX_MOUNTS = 16


def new_volume_id() -> str:
    return "vol" + "".join(secrets.choice(ID_ALPHABET) for _ in range(20))


def not_found(volume_id: str) -> UserError:
    return UserError(404, f"Volume {volume_id} not found")


def entry_view(entry: Entry) -> VolumeEntryStat:
    return VolumeEntryStat(name=entry.name, type=entry.type, path=entry.path, size=entry.size,  # type: ignore[arg-type]
                           mode=entry.mode, uid=entry.uid, gid=entry.gid, atime=entry.atime, mtime=entry.mtime,
                           ctime=entry.ctime, target=entry.target)


class VolumeService:
    """Every team's volumes on this server: the store's rows and the node's images, kept in step (the image is
    made before the row and removed after it, so a crash leaves at worst an unused image, never a row of
    nothing)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.images = VolumeImages(settings.data_dir)
        self._secret: bytes | None = None
        self.node_of: Callable[[], Any] = lambda: None  # the API's node (SandboxService sets it)

    @property
    def remote(self) -> Any:
        """The remote nodes (`cluster.remote_node.RemoteNodes`) on a control plane, else None."""
        return self.node_of() if self.settings.cluster_token else None

    async def _key(self) -> bytes:
        if self._secret is None:
            self._secret = await asyncio.to_thread(load_secret, self.settings.data_dir)
        return self._secret

    async def token(self, volume_id: str) -> str:
        return hmac.new(await self._key(), f"volume:{volume_id}".encode(), hashlib.sha256).hexdigest()

    async def _view(self, record: VolumeRecord) -> VolumeAndToken:
        return VolumeAndToken(volumeID=record.volume_id, name=record.name, token=await self.token(record.volume_id))

    async def _owned(self, team_id: str, volume_id: str) -> VolumeRecord:
        record = await asyncio.to_thread(self.store.get_volume, volume_id)
        if record is None or record.team_id != team_id:
            raise not_found(volume_id)
        return record

    # ---- the volume API -------------------------------------------------------------------------------------

    async def create(self, team_id: str, name: str) -> VolumeAndToken:
        check_name(name)
        if await asyncio.to_thread(self.store.team_volume, team_id, name) is not None:
            raise UserError(409, f"Volume with name '{name}' already exists")
        size = self.settings.volume_size_mb
        used = await asyncio.to_thread(self.store.team_volume_mb, team_id)
        if used + size > self.settings.team_volume_mb:
            raise UserError(429, f"The team's volume quota is spent ({used} of {self.settings.team_volume_mb} MB in "
                                 f"use, a volume takes {size} MB): delete a volume first")
        volume_id = new_volume_id()
        node_id = await self._make_image(volume_id, size)
        record = VolumeRecord(volume_id=volume_id, team_id=team_id, name=name, size_mb=size, created_at=now_utc(),
                              node_id=node_id)
        try:
            await asyncio.to_thread(self.store.add_volume, record)
        except BaseException as exc:
            await self._remove_image(record)
            if isinstance(exc, VolumeNameTaken):
                raise UserError(409, f"Volume with name '{name}' already exists") from None
            raise
        return await self._view(record)

    async def _make_image(self, volume_id: str, size: int) -> str | None:
        """The image, on this host (None) or on a remote node (its id)."""
        if self.remote is not None:
            return await remote_volumes.create(self.remote, volume_id, size)
        await asyncio.to_thread(self.images.create, volume_id, size)
        return None

    async def _remove_image(self, record: VolumeRecord) -> None:
        if self.remote is not None:
            await remote_volumes.delete(self.remote, record.volume_id, record.node_id)
        else:
            await asyncio.to_thread(self.images.delete, record.volume_id)

    async def list(self, team_id: str) -> list[Volume]:
        records = await asyncio.to_thread(self.store.team_volumes, team_id)
        return [Volume(volumeID=r.volume_id, name=r.name) for r in records]

    async def get(self, team_id: str, volume_id: str) -> VolumeAndToken:
        return await self._view(await self._owned(team_id, volume_id))

    async def delete(self, team_id: str, volume_id: str) -> None:
        record = await self._owned(team_id, volume_id)
        users = await asyncio.to_thread(self.store.volume_users, record.volume_id)
        if users:
            raise UserError(409, f"Volume {volume_id} is mounted by sandbox {users[0]}: kill it first")
        if self.remote is not None:
            # The node removes the image first (409 there while a create mounts it; 502 naming a lost node, and
            # the volume stays): a crash between leaves a row without an image, which a second delete removes.
            await self._remove_image(record)
            await asyncio.to_thread(self.store.delete_volume, record.volume_id)
            return
        if await asyncio.to_thread(self.images.in_use, record.volume_id):
            raise UserError(409, f"Volume {volume_id} is being mounted by a sandbox: try again once it is killed")
        await asyncio.to_thread(self.store.delete_volume, record.volume_id)
        await asyncio.to_thread(self.images.delete, record.volume_id)

    # ---- mounts, for sandbox creates ------------------------------------------------------------------------

    async def mounts_for(self, team_id: str, backend: str, requested: Sequence[Any] | None) -> tuple[VolumeMount, ...]:
        """The team's volumes a create asks for (`volumeMounts: [{name, path}]`), mounted on the node and ready to
        bind. 400 for a malformed list or a backend without volumes, 404 for a volume the team lacks."""
        if not requested:
            return ()
        if backend not in MOUNTING_BACKENDS:
            raise UserError(400, f"volumes are not supported by the {backend} backend")
        if len(requested) > MAX_MOUNTS:
            raise UserError(400, f"at most {MAX_MOUNTS} volume mounts per sandbox")
        wanted: list[tuple[str, str]] = []
        for item in requested:
            name, path = (item.get("name"), item.get("path")) if isinstance(item, dict) else (None, None)
            if not isinstance(name, str) or not isinstance(path, str):
                raise UserError(400, "each volume mount needs a name and a path (strings)")
            check_name(name)
            wanted.append((name, check_mount_path(path.rstrip("/") or "/")))
        if len({n for n, _ in wanted}) < len(wanted) or len({p for _, p in wanted}) < len(wanted):
            raise UserError(400, "each volume and each mount path may appear once")
        mounts = []
        for name, path in wanted:
            record = await asyncio.to_thread(self.store.team_volume, team_id, name)
            if record is None:
                raise UserError(404, f"Volume '{name}' not found")
            mounts.append(await self._mount(record.volume_id, record.node_id, path))
        return tuple(mounts)

    async def _mount(self, volume_id: str, node_id: str | None, path: str) -> VolumeMount:
        """A volume ready to bind: mounted on this host, or (remote) named with its node, which mounts it."""
        if self.remote is not None:
            return VolumeMount(volume_id=volume_id, source=Path(), path=path, node_id=node_id)
        source = await asyncio.to_thread(self.images.mounted, volume_id)
        return VolumeMount(volume_id=volume_id, source=source, path=path)

    async def record(self, sandbox_id: str, mounts: Sequence[VolumeMount]) -> None:
        if mounts:
            await asyncio.to_thread(self.store.add_volume_mounts, sandbox_id,
                                    [(m.volume_id, m.path) for m in mounts])

    async def remount(self, sandbox_id: str) -> tuple[VolumeMount, ...]:
        """The mounts a sandbox had, ready to bind again: for a resume or a restore under the same volumes."""
        rows = await asyncio.to_thread(self.store.sandbox_volume_mounts, sandbox_id)
        mounts = []
        for row in rows:
            volume = await asyncio.to_thread(self.store.get_volume, row.volume_id) if self.remote else None
            mounts.append(await self._mount(row.volume_id, volume.node_id if volume else None, row.path))
        return tuple(mounts)

    # ---- the content API ------------------------------------------------------------------------------------

    async def files(self, volume_id: str, authorization: str | None) -> VolumeFiles:
        """The volume's files, for a caller showing its token (`Authorization: Bearer <token>`)."""
        await self._authorised(volume_id, authorization)
        return VolumeFiles(str(await asyncio.to_thread(self.images.mounted, volume_id)))

    async def relay(self, request: Request, volume_id: str, what: str, authorization: str | None) -> Response:
        """The content API of a volume on a remote node, for a caller showing its token: answered by its node."""
        if self.remote is None or what not in ("path", "dir", "file"):
            raise UserError(404, "Not Found")
        record = await self._authorised(volume_id, authorization)
        return await remote_volumes.relay(self.remote, volume_id, record.node_id, what, request)

    async def _authorised(self, volume_id: str, authorization: str | None) -> VolumeRecord:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise UserError(401, "Missing volume token: send it as 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(token.strip().encode(), (await self.token(volume_id)).encode()):
            raise UserError(401, "Invalid volume token")
        record = await asyncio.to_thread(self.store.get_volume, volume_id)
        if record is None:
            raise not_found(volume_id)
        return record
