"""Uploaded build files that every control-plane replica shares through the template registry (issue 17,
templates/shared_uploads.py): one team never gets another's files by asking for the same files hash, and a stored
upload that is not what was pushed (replaced in the registry, or grown past an upload's size) is refused, not
unpacked. Debian's docker-registry runs on loopback for the test (tests/registry_rig.py), stopped by PID.

Through the API, on a live cluster, tests/cluster/test_cluster.py's
`test_build_steps_through_alternating_replicas` checks that another team sees neither the files nor the build log
through any replica.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandhive.templates.oci_registry import RegistryError, TemplateRegistryRef
from sandhive.templates.shared_uploads import SharedUploads
from tests.registry_rig import loopback_registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemplateRegistryRef]:
    with loopback_registry(tmp_path_factory.mktemp("registry")) as ref:
        yield ref


def test_a_team_gets_only_its_own_uploads(registry: TemplateRegistryRef, tmp_path: Path) -> None:
    uploads = SharedUploads(registry)
    tar = tmp_path / "upload.tar"
    tar.write_bytes(b"team a's secret build files" * 100)
    files_hash = hashlib.sha256(b"same hash for both teams").hexdigest()
    uploads.push("team-a", files_hash, tar)
    assert uploads.exists("team-a", files_hash)
    assert not uploads.exists("team-b", files_hash)
    assert not uploads.fetch("team-b", files_hash, tmp_path / "b", 2**30)
    assert not (tmp_path / "b").exists()
    assert uploads.repository("team-a") != uploads.repository("team-b")
    assert uploads.fetch("team-a", files_hash, tmp_path / "a", 2**30)
    assert (tmp_path / "a").read_bytes() == tar.read_bytes()


def test_a_replaced_or_oversized_upload_is_refused(registry: TemplateRegistryRef, tmp_path: Path) -> None:
    uploads = SharedUploads(registry)
    tar = tmp_path / "upload.tar"
    tar.write_bytes(b"x" * 4096)
    files_hash = hashlib.sha256(b"replaced").hexdigest()
    uploads.push("team-c", files_hash, tar)
    with pytest.raises(RegistryError, match="larger"):
        uploads.fetch("team-c", files_hash, tmp_path / "big", 1024)
    # Someone between the replica and the registry (or with the registry's disk) serves other bytes for the blob.
    repo = uploads.repository("team-c")
    manifest = httpx.get(f"{registry.api}{repo}/manifests/{files_hash}", trust_env=False,
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    # The registry itself checks digests on push, so a tampered blob cannot be stored under a wrong digest; what a
    # reader must still refuse is a layer that does not hash to the digest the manifest names.
    class Tampered(SharedUploads):
        def _client(self) -> httpx.Client:
            def swap(request: httpx.Request) -> httpx.Response:
                if "/blobs/" in request.url.path:
                    return httpx.Response(200, content=b"z" * 4096)
                return httpx.Response(200, json=manifest)

            return httpx.Client(transport=httpx.MockTransport(swap))

    with pytest.raises(RegistryError, match="digest"):
        Tampered(registry).fetch("team-c", files_hash, tmp_path / "tampered", 2**30)
