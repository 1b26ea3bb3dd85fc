"""Templates as OCI images in a registry (`--template-registry HOST:PORT[/prefix]`): push, look up, delete.

A template is pushed as a one-layer image `<host>/<prefix>/templates/<template-id>` tagged `latest` and with the
build's id: the layer is the template's rootfs (owners as the template sees them: 0 is its root), and the image
config's label `dev.sandhive.template.json` carries `template.json`, so a node that pulls it has everything a
local build would have left. The control plane reads the same label to know a template's defaults without a node.

The image is made by GNU tar (the layer) and umoci (`init`, `new`, `raw add-layer`, `config`), running as root of a
user namespace mapped to the canonical template range (`node.userns.BASE`), never as host root: the tree is read
as its owner reads it, and owners are recorded as the template sees them.
skopeo then copies the OCI layout to the registry. Lookups and deletes use the registry's HTTP API (v2) directly:
they are one or two small requests, on the create path of a control plane.

Plain HTTP is used only when asked (`--template-registry-insecure`), for a registry on a private network or
loopback; otherwise HTTPS with the host's trust store.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from ..node import userns
from .info import ID_PATTERN, ROOTFS, TemplateInfo

Log = Callable[[str], None]
INFO_LABEL = "dev.sandhive.template.json"
LATEST = "latest"
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")
_REF = re.compile(r"(?P<host>[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9a-fA-F:.]+\](:[0-9]{1,5})?)"
                  r"(?P<prefix>(/[a-z0-9][a-z0-9._-]*)*)/?")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class RegistryError(Exception):
    """The registry or the tools talking to it failed; the message says which step and why."""


@dataclass(frozen=True)
class TemplateRegistryRef:
    """Where templates are pushed: `host[:port]` and an optional path prefix; `insecure`: plain HTTP."""

    host: str
    prefix: str = ""
    insecure: bool = False

    @classmethod
    def parse(cls, text: str, insecure: bool = False) -> TemplateRegistryRef:
        match = _REF.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"{text!r} is not HOST[:PORT][/prefix] (lowercase path components)")
        return cls(match["host"], match["prefix"].strip("/"), insecure)

    def repository(self, template_id: str) -> str:
        if not ID_PATTERN.fullmatch(template_id):
            raise ValueError(f"invalid template id {template_id!r}")
        return "/".join(p for p in (self.prefix, "templates", template_id) if p)

    def reference(self, template_id: str, tag: str = LATEST) -> str:
        return f"{self.host}/{self.repository(template_id)}:{tag}"

    @property
    def api(self) -> str:
        return f"{'http' if self.insecure else 'https'}://{self.host}/v2/"

    def tls_flag(self, direction: str) -> list[str]:
        return [f"--{direction}-tls-verify=false"] if self.insecure else []


def _client() -> httpx.Client:
    return httpx.Client(timeout=TIMEOUT, trust_env=False, follow_redirects=True)


# ---- look up and delete (HTTP API) ------------------------------------------------------------------------

def head_digest(ref: TemplateRegistryRef, template_id: str, tag: str = LATEST) -> str | None:
    """The manifest digest the template's tag points at, or None if the registry has no such tag."""
    with _client() as http:
        try:
            r = http.head(f"{ref.api}{ref.repository(template_id)}/manifests/{tag}",
                          headers={"Accept": ", ".join(MANIFEST_TYPES)})
        except httpx.HTTPError as exc:
            raise RegistryError(f"template registry {ref.host} cannot be reached: {exc}") from exc
    if r.status_code == 404:
        return None
    if r.status_code != 200 or "docker-content-digest" not in r.headers:
        raise RegistryError(f"template registry {ref.host} answered {r.status_code} for template {template_id}")
    return r.headers["docker-content-digest"]


def lookup(ref: TemplateRegistryRef, template_id: str, tag: str = LATEST) -> tuple[str, TemplateInfo] | None:
    """(manifest digest, template.json) of the template's tag, or None if the registry has none. A label that
    names another template id is refused (an image is only ever the template its repository says)."""
    repo = ref.repository(template_id)
    with _client() as http:
        try:
            r = http.get(f"{ref.api}{repo}/manifests/{tag}", headers={"Accept": ", ".join(MANIFEST_TYPES)})
            if r.status_code == 404:
                return None
            if r.status_code != 200:
                raise RegistryError(f"template registry {ref.host} answered {r.status_code} for template "
                                    f"{template_id}")
            digest = r.headers.get("docker-content-digest", "")
            config_digest = r.json()["config"]["digest"]
            c = http.get(f"{ref.api}{repo}/blobs/{config_digest}")
            c.raise_for_status()
            labels = (c.json().get("config") or {}).get("Labels") or {}
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"template registry {ref.host}: cannot read template {template_id}: {exc}") from exc
    try:
        info = TemplateInfo.from_json(labels[INFO_LABEL])
    except (KeyError, ValueError, TypeError) as exc:
        raise RegistryError(f"template registry {ref.host}: image {repo} is not a Sandhive template ({exc})") from exc
    if info.id != template_id:
        raise RegistryError(f"template registry {ref.host}: image {repo} says it is template {info.id!r}")
    return digest, info


def delete(ref: TemplateRegistryRef, template_id: str) -> bool:
    """Delete the template's manifest (every tag pointing at it goes with it). False if the registry had none
    or refuses deletes (docker-registry needs `storage.delete.enabled`); the store forgets the template anyway,
    so no team resolves it again."""
    digest = head_digest(ref, template_id)
    if digest is None:
        return False
    with _client() as http:
        try:
            r = http.delete(f"{ref.api}{ref.repository(template_id)}/manifests/{digest}")
        except httpx.HTTPError as exc:
            raise RegistryError(f"template registry {ref.host} cannot be reached: {exc}") from exc
    return r.status_code in (200, 202)


# ---- push (umoci + skopeo) ----------------------------------------------------------------------------------

def push(template_dir: Path, info: TemplateInfo, ref: TemplateRegistryRef, tags: tuple[str, ...] = (),
         log: Log = lambda _line: None) -> str:
    """Push the built template in `template_dir` as `<registry>/.../templates/<id>:latest` (and each of `tags`);
    returns the manifest digest. Blocking."""
    rootfs = template_dir / ROOTFS
    work = Path(tempfile.mkdtemp(prefix="sandhive-push-", dir="/var/tmp"))
    try:
        os.chown(work, userns.BASE, userns.BASE)
        os.chmod(work, 0o700)
        layout = f"{work}/oci:{LATEST}"
        as_template_root(["umoci", "init", "--layout", f"{work}/oci"], cwd=rootfs)
        as_template_root(["umoci", "new", "--image", layout], cwd=rootfs)
        log(f"packing template {info.id} as an OCI image")
        # GNU tar keeps owners as the template sees them (umoci's rootless insert makes every file root's)
        as_template_root(["tar", "-c", "-f", f"{work}/layer.tar", "--numeric-owner", "--xattrs", "."], cwd=rootfs)
        as_template_root(["umoci", "raw", "add-layer", "--no-history", "--image", layout, f"{work}/layer.tar"],
                         cwd=rootfs)
        os.unlink(work / "layer.tar")
        as_template_root(["umoci", "config", "--no-history", "--image", layout,
                          "--config.label", f"{INFO_LABEL}={info.to_json()}"], cwd=rootfs)
        digest_file = work / "digest"
        target = ref.reference(info.id)
        log(f"pushing template {info.id} to {target}")
        _skopeo(["copy", "--quiet", *ref.tls_flag("dest"), "--digestfile", str(digest_file), f"oci:{layout}",
                 f"docker://{target}"])
        for tag in dict.fromkeys(t for t in tags if _TAG.fullmatch(t) and t != LATEST):
            _skopeo(["copy", "--quiet", *ref.tls_flag("src"), *ref.tls_flag("dest"), f"docker://{target}",
                     f"docker://{ref.reference(info.id, tag)}"])
        return digest_file.read_text().strip()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _skopeo(args: list[str]) -> str:
    result = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=3600,
                            env={"PATH": _PATH, "HOME": "/root"})
    if result.returncode != 0:
        raise RegistryError(f"skopeo {args[0]} failed: {result.stderr.strip()[-1500:]}")
    return result.stdout


def as_template_root(argv: list[str], *, cwd: Path, pass_fds: tuple[int, ...] = ()) -> str:
    """Run `argv` as root of a user namespace mapped to the template range (`userns.BASE`), with `cwd` opened by
    host root (so it may lie under a root-only data dir) and no network. Raises RegistryError on failure."""
    spec = {"base": userns.BASE, "cgroups": [], "netns": None, "cwd": str(cwd), "chroot": False, "hide": [],
            "env": {"PATH": _PATH, "HOME": "/", "LANG": "C.UTF-8", "TMPDIR": "."}}
    result = subprocess.run([sys.executable, "-m", "sandhive.templates.userns_exec", json.dumps(spec), "--", *argv],
                            capture_output=True, text=True, timeout=3600, pass_fds=pass_fds, cwd="/")
    if result.returncode != 0:
        raise RegistryError(f"{' '.join(argv[:2])} failed ({result.returncode}): "
                            f"{(result.stderr or result.stdout).strip()[-1500:]}")
    return result.stdout
