"""E2B's volume routes (beta): `/volumes` under the team's API key, and the content API `/volumecontent/{id}/...`
under the volume's own bearer token (the SDK's `Volume` sends it; see api/volumes.py).

No `from __future__ import annotations` here: FastAPI reads the parameter annotations at runtime.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from ..node.volume_files import VolumeFiles, read_chunks
from .auth import team_of_key
from .routes import errors
from .volume_schemas import NewVolume, Volume, VolumeAndToken, VolumeEntryStat, VolumeMetadata
from .volumes import VolumeService, entry_view

VolumeID = Annotated[str, Path(alias="volumeID", max_length=64)]
Authorization = Annotated[str | None, Header(description="Bearer <the volume's token>")]
FilesOf = Callable[[str, str | None], Awaitable[VolumeFiles]]
FilePath = Annotated[str, Query(description="a path inside the volume", max_length=4096)]


async def _next(stream: AsyncIterator[bytes]) -> bytes:
    return await stream.__anext__()


def _chunks_from(stream: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> Iterator[bytes]:
    """The request body, chunk by chunk, for a worker thread that writes it (the file work blocks)."""
    while True:
        try:
            chunk: bytes = asyncio.run_coroutine_threadsafe(_next(stream), loop).result()
        except StopAsyncIteration:
            return
        if chunk:
            yield chunk


def volume_router(volumes: VolumeService) -> APIRouter:
    router = APIRouter(tags=["volumes"])
    Team = Annotated[str, Depends(team_of_key(volumes.store))]  # noqa: N806 — a type alias, read as one

    @router.post("/volumes", status_code=201, responses=errors(400, 401, 409, 429, 500))
    async def create_volume(body: NewVolume, team: Team) -> VolumeAndToken:
        """Create a volume (its size is the server's `--volume-size-mb`)."""
        return await volumes.create(team, body.name)

    @router.get("/volumes", responses=errors(400, 401, 500))
    async def list_volumes(team: Team) -> list[Volume]:
        """The team's volumes, oldest first."""
        return await volumes.list(team)

    @router.get("/volumes/{volumeID}", responses=errors(400, 401, 404, 500))
    async def get_volume(volume_id: VolumeID, team: Team) -> VolumeAndToken:
        """A volume and its content token."""
        return await volumes.get(team, volume_id)

    @router.delete("/volumes/{volumeID}", status_code=204, response_class=Response,
                   responses=errors(400, 401, 404, 409, 500))
    async def delete_volume(volume_id: VolumeID, team: Team) -> Response:
        """Delete a volume and its files; 409 while a live sandbox mounts it."""
        await volumes.delete(team, volume_id)
        return Response(status_code=204)

    if volumes.settings.cluster_token:  # volumes on remote nodes: their content API is relayed there, first
        router.add_api_route("/volumecontent/{volumeID}/{what}", relay_route(volumes), include_in_schema=False,
                             methods=["GET", "PUT", "POST", "PATCH", "DELETE"], name="put_volume_file")
    content_routes(router, volumes.files)
    return router


def content_routes(router: APIRouter, files_of: FilesOf) -> None:
    """The content API's routes, reading the volume through `files_of` (the API: after the token check; a
    node's API: its own image, for a control plane that checked the token)."""
    # ---- content -------------------------------------------------------------------------------------------

    @router.get("/volumecontent/{volumeID}/path", responses=errors(400, 401, 404, 500))
    async def stat_volume_path(volume_id: VolumeID, path: FilePath, authorization: Authorization = None
                               ) -> VolumeEntryStat:
        """What is at `path` (a symlink is described, not followed)."""
        files = await files_of(volume_id, authorization)
        return entry_view(await asyncio.to_thread(files.stat, path))

    @router.patch("/volumecontent/{volumeID}/path", responses=errors(400, 401, 404, 500))
    async def update_volume_path(volume_id: VolumeID, path: FilePath, body: VolumeMetadata,
                                 authorization: Authorization = None) -> VolumeEntryStat:
        """Change the owner (ids as a sandbox sees them) or mode of what is at `path`."""
        files = await files_of(volume_id, authorization)
        return entry_view(await asyncio.to_thread(files.update, path, body.uid, body.gid, body.mode))

    @router.delete("/volumecontent/{volumeID}/path", status_code=204, response_class=Response,
                   responses=errors(400, 401, 404, 500))
    async def remove_volume_path(volume_id: VolumeID, path: FilePath, authorization: Authorization = None
                                 ) -> Response:
        """Remove a file, or a directory with everything in it."""
        files = await files_of(volume_id, authorization)
        await asyncio.to_thread(files.remove, path)
        return Response(status_code=204)

    @router.get("/volumecontent/{volumeID}/dir", responses=errors(400, 401, 404, 500))
    async def list_volume_dir(volume_id: VolumeID, path: FilePath, depth: Annotated[int | None, Query()] = None,
                              authorization: Authorization = None) -> list[VolumeEntryStat]:
        """The entries of a directory, `depth` levels deep (default 1)."""
        files = await files_of(volume_id, authorization)
        return [entry_view(e) for e in await asyncio.to_thread(files.list_dir, path, depth)]

    @router.post("/volumecontent/{volumeID}/dir", status_code=201, responses=errors(400, 401, 404, 409, 500))
    async def make_volume_dir(volume_id: VolumeID, path: FilePath, uid: int | None = None, gid: int | None = None,
                              mode: int | None = None, force: bool = False, authorization: Authorization = None
                              ) -> VolumeEntryStat:
        """Create a directory (`force`: its parents too)."""
        files = await files_of(volume_id, authorization)
        return entry_view(await asyncio.to_thread(files.make_dir, path, uid, gid, mode, force))

    @router.get("/volumecontent/{volumeID}/file", response_class=StreamingResponse,
                responses={200: {"content": {"application/octet-stream": {}}}, **errors(400, 401, 404, 500)})
    async def read_volume_file(volume_id: VolumeID, path: FilePath, authorization: Authorization = None
                               ) -> StreamingResponse:
        """A file's bytes."""
        files = await files_of(volume_id, authorization)
        f = await asyncio.to_thread(files.open_read, path)
        return StreamingResponse(read_chunks(f), media_type="application/octet-stream")

    @router.put("/volumecontent/{volumeID}/file", status_code=201, responses=errors(400, 401, 404, 500))
    async def put_volume_file(request: Request, volume_id: VolumeID, path: FilePath, uid: int | None = None,
                              gid: int | None = None, mode: int | None = None, force: bool = False,
                              authorization: Authorization = None) -> VolumeEntryStat:
        """Write a file from the request body, streamed (`force`: make its parent directories)."""
        files = await files_of(volume_id, authorization)
        chunks = _chunks_from(request.stream(), asyncio.get_running_loop())
        return entry_view(await asyncio.to_thread(files.write, path, chunks, uid, gid, mode, force))


def relay_route(volumes: VolumeService) -> Callable[..., Awaitable[Response]]:
    async def relay_volume_content(request: Request, volume_id: VolumeID, what: str,
                                   authorization: Authorization = None) -> Response:
        """The content API of a volume on a remote node: checked here, answered by its node."""
        return await volumes.relay(request, volume_id, what, authorization)

    return relay_volume_content
