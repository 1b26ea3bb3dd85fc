"""Volumes through remote nodes: the control plane's half of `node_volume_api` (issue 17 with issue 14's volumes).

A volume is an ext4 image in one node's data dir, so it lives on that node: `POST /volumes` makes it on a live
node and the store records which (`volumes.node_id`); a sandbox that mounts volumes is placed on their node
(all of them on one node, else 409); deleting and the content API go to that node. If that node is lost, the
call fails at once with a 502 naming it (`remote_node.unreachable`), never a hang; the image is not moved.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..errors import NodeError, UserError
from ..node.runtime import VolumeMount
from . import models as m

if TYPE_CHECKING:
    from .remote_node import NodeClient, RemoteNodes

VOLUME_TIMEOUT = httpx.Timeout(60.0, connect=3.0)  # mkfs of a volume on a loaded host
CONTENT_TIMEOUT = httpx.Timeout(300.0, connect=3.0)  # a large file streamed through
JSON_LIMIT = 2**20  # a non-upload content call's body (a PATCH's JSON) is small
HOP_HEADERS = ("content-type", "content-length", "retry-after")


def holder(nodes: RemoteNodes, volume_id: str, node_id: str | None) -> NodeClient:
    """The node that keeps the volume's image, if it answers now; else a 502 naming it."""
    node = next((n for n in nodes.nodes if n.node_id == node_id), None)
    if node is None:
        raise NodeError(502, f"Volume {volume_id} is on node {node_id}, which this control plane does not know",
                        "node_lost")
    trouble = node.trouble(time.monotonic())
    if trouble is not None:
        raise NodeError(502, f"Volume {volume_id} is on node {node.node_id}, which cannot serve it now ({trouble}); "
                             "it is reachable again once the node is back", "node_lost")
    return node


async def create(nodes: RemoteNodes, volume_id: str, size_mb: int) -> str:
    """Make the volume's image on a live node (the one with the most room, as for a create); its node id."""
    refusal: NodeError | None = None
    for node in nodes.placement(""):
        try:
            await node.call("POST", "/volumes", {"volume_id": volume_id, "size_mb": size_mb}, timeout=VOLUME_TIMEOUT)
        except NodeError as exc:
            if exc.status not in (502, 503):
                raise
            refusal = exc
            continue
        return node.node_id
    raise refusal or NodeError(503, "No node can keep a volume now: all are lost or restarting", "host_full",
                               {"Retry-After": "5"})


async def delete(nodes: RemoteNodes, volume_id: str, node_id: str | None) -> None:
    """Remove the image on its node (409 there while a sandbox on it mounts the volume)."""
    await holder(nodes, volume_id, node_id).call("POST", "/volumes/delete", {"volume_id": volume_id},
                                                 timeout=VOLUME_TIMEOUT)


def node_for(nodes: RemoteNodes, volumes: Sequence[VolumeMount]) -> NodeClient | None:
    """The node a create mounting `volumes` must run on (None: no volumes); 409 if they are on different nodes."""
    held = {v.node_id for v in volumes}
    if not held:
        return None
    if len(held) > 1:
        names = ", ".join(sorted(f"{v.volume_id} on {v.node_id}" for v in volumes))
        raise UserError(409, f"The volumes of a sandbox must be on one node, and these are not ({names}): mount "
                             "volumes of one node together", "volumes_on_several_nodes")
    return holder(nodes, volumes[0].volume_id, held.pop())


def mounts(volumes: Sequence[VolumeMount]) -> list[m.Mount]:
    return [m.Mount(volume_id=v.volume_id, path=v.path) for v in volumes]


async def _limited(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > JSON_LIMIT:
            raise UserError(413, f"Request body too large (over {JSON_LIMIT} bytes)")
    return body


async def relay(nodes: RemoteNodes, volume_id: str, node_id: str | None, what: str, request: Request) -> Response:
    """A content API call (already authorised by the volume's token) answered by the volume's node, streamed both
    ways; the node's answer, errors included, goes back as it is."""
    node = holder(nodes, volume_id, node_id)
    content: bytes | AsyncIterator[bytes] = request.stream() if request.method == "PUT" else await _limited(request)
    headers = {k: v for k, v in request.headers.items() if k.lower() == "content-type"}
    upstream = node.http.build_request(request.method, f"/volumecontent/{volume_id}/{what}",
                                       params=str(request.query_params), content=content,
                                       headers=headers, timeout=CONTENT_TIMEOUT)
    try:
        response = await node.http.send(upstream, stream=True)
    except httpx.HTTPError as exc:
        raise NodeError(502, f"Volume {volume_id}'s node {node.node_id} cannot be reached ({type(exc).__name__})",
                        "node_lost") from exc
    out = {k: v for k, v in response.headers.items() if k.lower() in HOP_HEADERS and k.lower() != "content-length"}

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        finally:
            await response.aclose()

    return StreamingResponse(body(), status_code=response.status_code, headers=out)
