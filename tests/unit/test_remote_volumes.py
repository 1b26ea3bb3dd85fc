"""Volumes through remote nodes (cluster/remote_volumes.py), without processes: tests/cluster runs the real
thing (tests/cluster/test_cluster_saved.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from sandhive.cluster.node_volume_api import NodeVolumes
from sandhive.cluster.remote_node import LOST_SECONDS, RemoteNodes
from sandhive.cluster.remote_volumes import holder, node_for
from sandhive.errors import UserError
from sandhive.node.runtime import VolumeMount
from tests.unit.test_cluster import TOKEN, status


def nodes() -> RemoteNodes:
    remote = RemoteNodes(["http://a", "http://b"], TOKEN)
    for node, name in zip(remote.nodes, ("node-a", "node-b"), strict=True):
        node.status, node.node_id, node.last_seen = status(name), name, time.monotonic()
    return remote


def mount(volume_id: str, node_id: str, path: str = "/mnt/data") -> VolumeMount:
    return VolumeMount(volume_id=volume_id, source=Path(), path=path, node_id=node_id)


def test_a_sandbox_mounting_volumes_goes_to_their_node() -> None:
    remote = nodes()
    assert node_for(remote, ()) is None
    picked = node_for(remote, (mount("vola", "node-b"), mount("volb", "node-b", "/mnt/b")))
    assert picked is not None and picked.node_id == "node-b"


def test_volumes_on_two_nodes_cannot_be_mounted_together() -> None:
    with pytest.raises(UserError) as refused:
        node_for(nodes(), (mount("vola", "node-a"), mount("volb", "node-b", "/mnt/b")))
    assert refused.value.status == 409 and "one node" in refused.value.message
    assert "vola on node-a" in refused.value.message and "volb on node-b" in refused.value.message


def test_a_volume_on_a_lost_node_is_named_at_once() -> None:
    remote = nodes()
    remote.nodes[1].last_seen = time.monotonic() - LOST_SECONDS - 1
    for call in (lambda: holder(remote, "vola", "node-b"), lambda: node_for(remote, (mount("vola", "node-b"),)),
                 lambda: holder(remote, "vola", "node-gone")):
        with pytest.raises(UserError) as lost:
            call()
        assert lost.value.status == 502 and "node-" in lost.value.message and lost.value.error_code == "node_lost"


def test_the_node_touches_only_volume_ids(tmp_path: Path) -> None:
    volumes = NodeVolumes(tmp_path)
    for bad in ("../x", "..", "a/b", "", "VOL"):
        with pytest.raises(UserError) as refused:
            asyncio.run(volumes.files(bad))
        assert refused.value.status == 400
    with pytest.raises(UserError) as missing:  # a well-formed id this node has no image of
        asyncio.run(volumes.files("volabcdefgh"))
    assert missing.value.status == 404
