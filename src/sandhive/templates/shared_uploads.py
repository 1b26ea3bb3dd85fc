"""Uploaded build files in the template registry, so every control-plane replica has them (issue 17).

A replica that receives an upload (`uploads.UploadedFiles`) unpacks it as before, to check it, and then pushes the
tar it was sent, unchanged, as one blob of a tiny OCI image `<registry>/<prefix>/uploads/<team>:<files hash>`
(an empty config, one layer: the tar). A replica asked to start a build whose files it lacks fetches that blob
(checked against its digest while it is written) and unpacks it exactly like an upload it received itself: the
same refusals, the same user namespace. `<team>` is a hash of the team's id: a team asking for a files hash finds
only its own uploads, never another team's files with the same hash.

Why the registry and not the database: an upload may be up to `uploads.MAX_UPLOAD_BYTES` (4 GiB), and builds on a
control plane with remote nodes need the registry anyway; it is shared by every replica and node already. The
registry's HTTP API (v2) is used directly: blob upload (POST, then one PUT), manifest PUT, HEAD, GET.
Images under `uploads/` are not templates: `RegistryTemplates.list` only reads `templates/`. Blobs are reclaimed by
the registry's garbage collection once their manifests are deleted (an operator's job, as for deleted templates).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx

from .oci_registry import RegistryError, TemplateRegistryRef

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
EMPTY_CONFIG = b"{}"
TIMEOUT = httpx.Timeout(600.0, connect=5.0)  # a blob of up to 4 GiB goes in one PUT
CHUNK = 2**20


def _digest_of_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _digest_of_file(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


class SharedUploads:
    """Uploads of every team in the registry `ref` (blocking calls: run them in a thread)."""

    def __init__(self, ref: TemplateRegistryRef) -> None:
        self.ref = ref

    def repository(self, team_id: str) -> str:
        team = hashlib.sha256(f"sandhive-team:{team_id}".encode()).hexdigest()[:40]
        return "/".join(p for p in (self.ref.prefix, "uploads", team) if p)

    def _client(self) -> httpx.Client:
        return httpx.Client(timeout=TIMEOUT, trust_env=False, follow_redirects=True)

    def exists(self, team_id: str, files_hash: str) -> bool:
        try:
            with self._client() as http:
                r = http.head(f"{self.ref.api}{self.repository(team_id)}/manifests/{files_hash}",
                              headers={"Accept": MANIFEST_TYPE})
        except httpx.HTTPError as exc:
            raise RegistryError(f"template registry {self.ref.host} cannot be reached: {exc}") from exc
        return r.status_code == 200

    def push(self, team_id: str, files_hash: str, tar: Path) -> None:
        """Store the upload `tar` (as received) under the team's repository, tagged `files_hash`."""
        repo = self.repository(team_id)
        digest, size = _digest_of_file(tar)
        try:
            with self._client() as http:
                self._put_blob(http, repo, _digest_of_bytes(EMPTY_CONFIG), EMPTY_CONFIG)
                with tar.open("rb") as f:
                    self._put_blob(http, repo, digest, f)
                manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                            "config": {"mediaType": CONFIG_TYPE, "digest": _digest_of_bytes(EMPTY_CONFIG),
                                       "size": len(EMPTY_CONFIG)},
                            "layers": [{"mediaType": LAYER_TYPE, "digest": digest, "size": size}]}
                r = http.put(f"{self.ref.api}{repo}/manifests/{files_hash}", content=json.dumps(manifest).encode(),
                             headers={"Content-Type": MANIFEST_TYPE})
                if r.status_code not in (200, 201):
                    raise RegistryError(f"template registry {self.ref.host} refused the upload's manifest "
                                        f"({r.status_code}): {r.text[:300]}")
        except httpx.HTTPError as exc:
            raise RegistryError(f"template registry {self.ref.host}: cannot store the upload: {exc}") from exc

    def _put_blob(self, http: httpx.Client, repo: str, digest: str, content: object) -> None:
        if http.head(f"{self.ref.api}{repo}/blobs/{digest}").status_code == 200:
            return
        r = http.post(f"{self.ref.api}{repo}/blobs/uploads/")
        location = r.headers.get("location")
        if r.status_code != 202 or not location:
            raise RegistryError(f"template registry {self.ref.host} refused a blob upload ({r.status_code})")
        url = httpx.URL(f"{self.ref.api}{repo}/blobs/uploads/").join(location).copy_merge_params({"digest": digest})
        r = http.put(url, content=content,  # type: ignore[arg-type]
                     headers={"Content-Type": "application/octet-stream"})
        if r.status_code not in (201, 204):
            raise RegistryError(f"template registry {self.ref.host} refused a blob ({r.status_code}): {r.text[:300]}")

    def fetch(self, team_id: str, files_hash: str, into: Path, max_bytes: int) -> bool:
        """Write the team's upload of `files_hash` to the new file `into`; False if the registry has none.
        RegistryError past `max_bytes` or when the blob does not match its digest."""
        repo = self.repository(team_id)
        try:
            with self._client() as http:
                r = http.get(f"{self.ref.api}{repo}/manifests/{files_hash}", headers={"Accept": MANIFEST_TYPE})
                if r.status_code == 404:
                    return False
                if r.status_code != 200:
                    raise RegistryError(f"template registry {self.ref.host} answered {r.status_code} for an upload")
                digest = str(r.json()["layers"][0]["digest"])
                h, size = hashlib.sha256(), 0
                with http.stream("GET", f"{self.ref.api}{repo}/blobs/{digest}") as blob, into.open("xb") as out:
                    if blob.status_code != 200:
                        raise RegistryError(f"template registry {self.ref.host} answered {blob.status_code} for "
                                            "an upload's blob")
                    for chunk in blob.iter_bytes(CHUNK):
                        size += len(chunk)
                        if size > max_bytes:
                            raise RegistryError("the stored upload is larger than an upload may be")
                        h.update(chunk)
                        out.write(chunk)
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise RegistryError(f"template registry {self.ref.host}: cannot read an upload: {exc}") from exc
        if "sha256:" + h.hexdigest() != digest:
            raise RegistryError("the stored upload does not match its digest")
        return True
