"""The node API's routes for volumes: make and remove a volume's image, and its content API for control planes.

The images stay here, under `<data dir>/volumes/<id>` (`node/volumes.py`); the store keeps which node holds a
volume, and control planes send every call about it here (`remote_volumes`). The control plane checked the
team's right to the volume (and the content API's volume token) before it calls; these routes only ever touch
`<data dir>/volumes/<id>` with an id of `node/volumes.ID`'s shape, whatever the request names.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ..api.volume_routes import content_routes
from ..errors import UserError
from ..node.runtime import VolumeMount
from ..node.volume_files import VolumeFiles
from ..node.volumes import ID, VolumeImages
from . import models as m


class NewImage(BaseModel):
    volume_id: str
    size_mb: int = Field(gt=0, le=1024 * 1024)


class ImageId(BaseModel):
    volume_id: str


def _checked(volume_id: str) -> str:
    if not ID.match(volume_id):
        raise UserError(400, f"bad volume id {volume_id!r}")
    return volume_id


class NodeVolumes:
    """This node's volume images, for control planes."""

    def __init__(self, data_dir: Path) -> None:
        self.images = VolumeImages(data_dir)

    async def mounts(self, wanted: list[m.Mount]) -> tuple[VolumeMount, ...]:
        """A create's volumes, mounted on this node and ready to bind (404 for a volume this node lacks)."""
        return tuple([VolumeMount(volume_id=w.volume_id, path=w.path,
                                  source=await asyncio.to_thread(self.images.mounted, _checked(w.volume_id)))
                      for w in wanted])

    async def files(self, volume_id: str, _authorization: str | None = None) -> VolumeFiles:
        return VolumeFiles(str(await asyncio.to_thread(self.images.mounted, _checked(volume_id))))


def volume_node_router(volumes: NodeVolumes) -> APIRouter:
    r = APIRouter(prefix=m.API_PREFIX)

    @r.post("/volumes", status_code=204)
    async def create(body: NewImage) -> None:
        await asyncio.to_thread(volumes.images.create, _checked(body.volume_id), body.size_mb)

    @r.post("/volumes/delete", status_code=204)
    async def delete(body: ImageId) -> None:
        await asyncio.to_thread(volumes.images.delete, _checked(body.volume_id))

    content_routes(r, volumes.files)
    return r
