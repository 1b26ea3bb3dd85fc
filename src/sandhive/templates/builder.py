"""Dockerfile → Sandhive template: resolve the bases, let buildah build, export the image as a template.

The whole build, step by step:
1. Parse and check the Dockerfile (`dockerfile`): an unknown instruction or a FROM that cannot be
   resolved fails here, naming its line, before anything runs.
2. Resolve every external `FROM` to an image in Sandhive's buildah storage: a local Debian base
   (`local_bases`), another template (by id or alias), a registry image (pulled; loopback registries
   over plain HTTP) or a `docker-archive:`/`oci-archive:` tarball.
3. `buildah bud --layers` runs the rewritten Dockerfile. RUN steps get a build slot's network namespace
   (NAT to the internet, no route to the host's services) and the host's CA bundle (so TLS through an
   intercepting proxy works: `pip install` does), and run as root in an OCI container, not on the host.
   Each step is cached as a layer: an unchanged rebuild is a cache hit end to end.
4. If the resulting image is the one the template already has, only its settings are updated (a cached
   rebuild takes about a second). Otherwise the image's tree is copied into a new template directory,
   given a login user (`user`, uid 1000, passwordless sudo where sudo exists) unless USER names another,
   shifted into the sandbox uid range, and renamed into place (`layout.build_into_place`): a failed build
   leaves no partial template and no mount.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import secrets
import shlex
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..envd import ENVD_VERSION
from ..images import system_image
from ..images.apt_sources import host_sources
from ..images.debian import BuildError
from ..images.system_image import MOUNTPOINT, SUITES, default_cache_dir
from . import build_sandbox, layout, local_bases, working_containers
from . import dockerfile as dockerfile_mod
from .buildah import Buildah, BuildahError
from .finalize import DEFAULT_USER
from .info import ID_PATTERN, ROOTFS, TemplateInfo, now_iso

Log = Callable[[str], None]
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CA_INSIDE = "/run/sandhive-build/ca.crt"  # where RUN steps find the host's CA bundle (not in any layer)
CA_ENV = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "NODE_EXTRA_CA_CERTS", "NPM_CONFIG_CAFILE",
          "CURL_CA_BUNDLE")
MIN_FREE_DISK_MB = 2048
IMAGE_LABEL = "dev.sandhive.template"
_TRANSPORTS = ("docker-archive:", "oci-archive:", "oci:", "dir:")


class TemplateBuildError(Exception):
    """A build failed. `message` says what and what to do, `step` which Dockerfile step, `log_tail` the
    last lines of the build log."""

    def __init__(self, message: str, step: str | None = None, log_tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.step = step
        self.log_tail = list(log_tail or [])

    def __str__(self) -> str:
        where = f" ({self.step})" if self.step else ""
        tail = "\n".join(self.log_tail[-10:])
        return f"{self.message}{where}" + (f"\n{tail}" if tail else "")


@dataclass(frozen=True)
class BuildRequest:
    """What to build. `start_cmd` overrides the Dockerfile's last-stage CMD/ENTRYPOINT."""

    template_id: str
    dockerfile: str
    context: Path
    aliases: tuple[str, ...] = ()
    cpu_count: int = 2
    memory_mb: int = 1024
    disk_mb: int = 4096
    start_cmd: str | None = None
    ready_cmd: str | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    no_cache: bool = False
    trust_host_ca: bool = True
    limits: build_sandbox.Limits = field(default_factory=build_sandbox.Limits)  # what the build itself may use


def storage(sandbox: build_sandbox.Sandbox) -> Buildah:
    """The host's one buildah storage for template builds (shared by every data dir), used through `sandbox`.

    It lives in `<cache>/buildah-userns/storage`, owned by the BUILD range. The storage of earlier versions,
    `<cache>/buildah` (owned by host root), is no longer read or written: delete it to get its space back."""
    return Buildah(sandbox)


@contextmanager
def storage_session(cache_dir: Path | None = None) -> Iterator[Buildah]:
    """The storage for one-off commands outside a build (tests, tools): no cgroup or timeout, still the
    BUILD range's user namespace."""
    with build_sandbox.unlimited(Path(cache_dir or default_cache_dir())) as sandbox:
        yield storage(sandbox)


def image_name(data_dir: Path, template_id: str) -> str:
    """Where a template's image is kept in the storage; the data dir is part of it (storage is host-wide)."""
    digest = _hash(str(Path(data_dir).resolve()))
    return f"localhost/sandhive-template/{digest}/{template_id}:latest"


def build_template(data_dir: Path, request: BuildRequest, *, cache_dir: Path | None = None,
                   log: Log = print, netns: str | None = None) -> TemplateInfo:
    """Build `request` into `<data_dir>/templates/<id>` (blocking: minutes for a cold build).

    `netns`: the build's network namespace, made by `build_network` on the caller's event loop (the server's),
    which holds `working_containers.in_use_async` around it and this call; without it (tools and tests, no event
    loop) the build makes its own with `blocking_build_network`, inside `working_containers.in_use`."""
    started = time.monotonic()
    data_dir = Path(data_dir)
    cache_dir = Path(cache_dir or default_cache_dir())
    if not ID_PATTERN.fullmatch(request.template_id):
        raise TemplateBuildError(f"invalid template name {request.template_id!r}: use lowercase letters, digits, "
                                 "'-' and '_' (up to 63 characters)")
    try:
        parsed = dockerfile_mod.parse(request.dockerfile, request.build_args)
    except dockerfile_mod.DockerfileError as exc:
        raise TemplateBuildError(str(exc)) from exc
    for warning in parsed.warnings:
        log(f"warning: {warning}")
    _check_free_disk(cache_dir, request.limits.min_free_disk_mb)
    try:
        in_use = contextlib.nullcontext() if netns else working_containers.in_use(cache_dir)
        network = contextlib.nullcontext(netns) if netns else blocking_build_network()
        with in_use, network as build_netns, build_sandbox.Sandbox(cache_dir, request.limits) as sandbox:
            sandbox.netns = build_netns  # pulls and RUN steps: behind the node's firewall, like a sandbox
            return _build_in(sandbox, data_dir, cache_dir, parsed, request, started, log)
    except build_sandbox.LimitExceeded as exc:
        raise TemplateBuildError(f"{exc}; the operator sets build limits with `sandhive serve --build-*`") from exc


def _build_in(sandbox: build_sandbox.Sandbox, data_dir: Path, cache_dir: Path, parsed: dockerfile_mod.Dockerfile,
              request: BuildRequest, started: float, log: Log) -> TemplateInfo:
    buildah = storage(sandbox)
    try:
        context = sandbox.receive(request.context, trusted=True, dest="context", keep_owners=False)
    except build_sandbox.CommandFailed as exc:
        raise TemplateBuildError(f"the build context cannot be read: {exc}", None, list(exc.lines)) from exc
    _check_context_binds(parsed, request.context)
    resolved = _resolve_bases(parsed, buildah, data_dir, cache_dir, request.context, log)
    image = image_name(data_dir, request.template_id)
    _bud(buildah, parsed, resolved, request, context, image, log)
    inspected = buildah.inspect(image)
    image_id, config = inspected["id"].removeprefix("sha256:"), inspected["config"]
    info = _info(parsed, request, config, image_id)
    current = layout.read_built(data_dir, request.template_id)
    if current is not None and current.build.get("image_id") == image_id and not request.no_cache:
        log("the image is unchanged: updating the template's settings only")
        info = replace(info, build={**current.build, **info.build, "seconds": round(time.monotonic() - started, 1),
                                    "cached": True})
        with layout.build_lock(data_dir, request.template_id):
            info.write(layout.template_dir(data_dir, request.template_id))
        return info

    def export(tmp: Path) -> TemplateInfo:
        log("exporting the image as a template rootfs")
        (tmp / ROOTFS).mkdir()
        try:
            buildah.export(image, tmp / ROOTFS)
            user = sandbox.finalize(tmp / ROOTFS, info.default_user, info.default_workdir, MOUNTPOINT)
        except (BuildahError, build_sandbox.CommandFailed) as exc:
            sandbox.check_limits()
            lines = getattr(exc, "lines", ())
            raise TemplateBuildError(f"exporting the image failed: {exc}", None, list(lines)) from exc
        size = layout.tree_size(tmp / ROOTFS)
        return replace(info, default_user=user,
                       default_workdir=info.default_workdir or f"/home/{user}",
                       build={**info.build, "size_bytes": size, "cached": False,
                              "seconds": round(time.monotonic() - started, 1)})

    built = layout.build_into_place(data_dir, request.template_id, export, force=True)
    log(f"template {request.template_id} built in {built.build['seconds']:.1f}s "
        f"(rootfs {built.build['size_bytes'] / 1e6:.0f} MB)")
    return built


# ---- bases ------------------------------------------------------------------------------------------

def _resolve_bases(parsed: dockerfile_mod.Dockerfile, buildah: Buildah, data_dir: Path, cache_dir: Path,
                   context: Path, log: Log) -> dict[str, str]:
    resolved: dict[str, str] = {}
    sources: list[str] | None = None
    for ref, line in parsed.external_bases():
        where = f"line {line}: FROM {ref}"
        try:
            if ref.startswith(_TRANSPORTS):
                transport, _, path = ref.partition(":")
                inside = _archive_in_context(transport, path, context, buildah.sandbox.scratch / "context", where)
                log(f"{where}: importing {transport} {path} from the build context")
                resolved[ref] = buildah.pull(f"{transport}:{inside}")
            elif (name := local_bases.canonical(ref)) is not None:
                if sources is None:
                    sources = _apt_sources()
                resolved[ref] = local_bases.ensure(buildah, name, sources, cache_dir, log)
            elif (template := _template_named(data_dir, ref)) is not None:
                resolved[ref] = _template_image(buildah, data_dir, template, log)
            elif _has_registry(ref):
                log(f"{where}: pulling {ref}")
                resolved[ref] = buildah.pull(ref, insecure=_is_loopback(ref))
            else:
                raise TemplateBuildError(
                    f"unknown base image {ref!r}. Sandhive does not pull from Docker Hub; it builds these "
                    f"locally from Debian: {', '.join(local_bases.known_names())}. Other images: push them to a "
                    "registry and write `FROM registry.example:5000/name:tag`, use `FROM docker-archive:file.tar`, "
                    "or name a Sandhive template.", where)
        except BuildahError as exc:
            raise TemplateBuildError(f"cannot get base image {ref!r}: {exc.message}", where, list(exc.lines)) from exc
        except BuildError as exc:
            raise TemplateBuildError(f"cannot build base image {ref!r}: {exc}", where) from exc
    return resolved


def _check_context_binds(parsed: dockerfile_mod.Dockerfile, context: Path) -> None:
    """A `RUN --mount=type=bind` from the context must not cross a symlink of the context: buildah 1.28
    resolves it on the host side (CVE-2024-1753). Checked on names only (lstat), nothing is followed."""
    for stage in parsed.stages:
        for ins in stage.instructions:
            if ins.keyword != "RUN":
                continue
            for mount in dockerfile_mod.run_mounts(ins):
                if mount["type"] != "bind" or "from" in mount or "from_image" in mount:
                    continue
                source = mount.get("source") or mount.get("src") or "."
                current = context
                for part in Path(source.lstrip("/")).parts:
                    current = current / part
                    if part == ".." or current.is_symlink():
                        raise TemplateBuildError(f"RUN --mount source {source!r} crosses a symlink or leaves "
                                                 "the build context", ins.describe())


def _archive_in_context(transport: str, path: str, context: Path, copied: Path, where: str) -> str:
    """Where the `docker-archive:`/`oci-archive:` file `path` is in the build's copy of the context.

    The path must be relative, stay inside the context and cross no symlink: checked on the names alone
    (lstat of each component inside the context), so an absolute or escaping path gets the same error
    whether or not the host has such a file, and nothing outside the context is read."""
    name = path.split(":")[0] if transport in ("oci", "oci-archive") else path  # oci-archive:file:tag
    parts = Path(name).parts
    if not name or os.path.isabs(name) or any(p == ".." for p in parts) or transport in ("oci", "dir"):
        raise TemplateBuildError(f"{transport}:{path}: archive bases must be docker-archive: or oci-archive: "
                                 "files given by a relative path inside the build context (no absolute path, "
                                 "no `..`)", where)
    current = context
    for part in parts:
        current = current / part
        if current.is_symlink():
            raise TemplateBuildError(f"{transport}:{path}: the path crosses a symlink; archive bases must be "
                                     "plain files inside the build context", where)
    if not current.is_file():
        raise TemplateBuildError(f"{transport}:{path} does not exist in the build context (as a plain file)", where)
    return str(copied / name) + path[len(name):]


def _apt_sources() -> list[str]:
    by_suite = host_sources(SUITES)
    if not by_suite[SUITES[0]]:
        raise TemplateBuildError(f"the host's apt sources list no {SUITES[0]!r} suite, which local bases need")
    return [line for lines in by_suite.values() for line in lines]


def _template_named(data_dir: Path, ref: str) -> TemplateInfo | None:
    name = ref.removesuffix(":latest")
    if name in ("e2bdev/base", "e2bdev/code-interpreter"):
        name = "base"
    if not layout.templates_root(data_dir).is_dir():
        return None
    for entry in layout.templates_root(data_dir).iterdir():
        info = layout.read_built(data_dir, entry.name) if not entry.name.startswith(".") else None
        if info is not None and name in info.names:
            return info
    return None


def _template_image(buildah: Buildah, data_dir: Path, template: TemplateInfo, log: Log) -> str:
    """A template as a buildah image: the image it was built from, or its rootfs imported (e.g. `base`)."""
    name = image_name(data_dir, template.id)
    if template.build.get("image_id") and buildah.image_exists(name):
        return name  # built by buildah: its image is still in the storage
    stamp = f"import:{template.id}:{template.created_at}"
    if buildah.label(name, IMAGE_LABEL) == stamp:
        return name  # imported before
    log(f"importing template {template.id} as a base image")
    tree = layout.template_dir(data_dir, template.id) / ROOTFS
    env = [f"{k}={v}" for k, v in template.env.items()]
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, f"PATH={local_bases.PATH}")
    # Read by root of the template range, written by the BUILD range: host root never walks the tree.
    buildah.commit_tree(tree, name, {"env": env, "workingdir": template.default_workdir, "user": "root"},
                        {IMAGE_LABEL: stamp}, trusted=False)
    return name


def _has_registry(ref: str) -> bool:
    first = ref.split("/", 1)[0]
    return "/" in ref and ("." in first or ":" in first or first == "localhost")


def _is_loopback(ref: str) -> bool:
    host = ref.split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---- the build --------------------------------------------------------------------------------------

def _bud(buildah: Buildah, parsed: dockerfile_mod.Dockerfile, resolved: dict[str, str], request: BuildRequest,
         context: Path, image: str, log: Log) -> None:
    """`buildah bud` in the build's sandbox: buildah runs as the BUILD range's root in the build's network
    namespace, RUN steps are chrooted children of it (`--isolation chroot`, `--network host` = that netns)."""
    text = _with_ca_args(parsed.with_bases(resolved)) if request.trust_host_ca else parsed.with_bases(resolved)
    dockerfile = buildah.sandbox.work / "Dockerfile"  # in a root-owned dir no build process can write
    dockerfile.write_text(text)
    args = ["bud", "--layers", "--force-rm", "--pull=never", "--isolation", "chroot", "--network", "host",
            "-f", str(dockerfile), "-t", image, "--label", f"{IMAGE_LABEL}={request.template_id}"]
    if request.no_cache:
        args.append("--no-cache")
    for key, value in request.build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    if request.trust_host_ca and HOST_CA_BUNDLE.is_file():
        args += ["-v", f"{HOST_CA_BUNDLE}:{CA_INSIDE}:ro"]
    if (request.context / ".dockerignore").is_file():
        args += ["--ignorefile", str(context / ".dockerignore")]
    step = _StepTracker(parsed, log)
    try:  # a bud killed mid-step leaves its working containers: `working_containers` removes them
        buildah.run(*args, str(context), on_line=step.line, network=True)
    except BuildahError as exc:
        buildah.sandbox.check_limits()
        raise TemplateBuildError(_failure(exc.lines), step.current, list(exc.lines)) from exc


def _with_ca_args(text: str) -> str:
    """After each FROM, ARGs that point TLS clients at the host's CA bundle: ARG values reach RUN steps as
    environment variables but are not part of the image's config, so they end with the build."""
    args = "".join(f"ARG {name}={CA_INSIDE}\n" for name in CA_ENV)
    out = []
    for line in text.splitlines(keepends=True):
        out.append(line)
        if re.match(r"^\s*FROM\s", line, re.IGNORECASE) and not line.rstrip().endswith("\\"):
            out.append(args)
    return "".join(out)


class _StepTracker:
    """Follows buildah's `STEP n/m: ...` lines, so a failure names the Dockerfile step it happened in."""

    def __init__(self, parsed: dockerfile_mod.Dockerfile, log: Log) -> None:
        self.log = log
        self.current: str | None = None
        self.hidden = {f"ARG {name}={CA_INSIDE}" for name in CA_ENV}

    def line(self, text: str) -> None:
        match = re.match(r"^(?:\[\d+/\d+\] )?STEP \d+/\d+: (.*)$", text)  # "[2/3] STEP 1/4: ..." in multi-stage
        if match:
            if match.group(1) in self.hidden:
                return
            self.current = match.group(1)
        self.log(text)


def _failure(lines: tuple[str, ...]) -> str:
    """The reason in buildah's last lines, e.g. `RUN exited with status 1` for a failing command."""
    for line in reversed(lines):
        exit_status = re.search(r"exit status (\d+)", line)
        if exit_status and "while running runtime" in line:
            return f"the RUN command failed with exit status {exit_status.group(1)}"
        if "no such file or directory" in line and ("COPY" in line or "ADD" in line or "checking on sources" in line):
            return "a COPY/ADD source does not exist in the build context"
        if line.startswith("Error:") or line.startswith("error"):
            return line.removeprefix("Error: ")
    return "the build failed"


@asynccontextmanager
async def build_network() -> AsyncIterator[str]:
    """A build slot's network namespace (as a sandbox gets one) for one build; its path while the build runs,
    removed after. Made and removed on the caller's event loop: the blocking build only gets the path."""
    from ..node import network

    build_id = "b" + secrets.token_hex(8)
    slots = network.SlotAllocator()
    slot = slots.claim(build_id)
    try:
        await network.prepare_host()
        await network.create(build_id, slot, True)
        yield network.netns_path(build_id)
    finally:
        try:
            await network.destroy(build_id, slot)
        finally:
            slots.release(slot)


@contextmanager
def blocking_build_network() -> Iterator[str]:
    """`build_network` for a caller with no event loop (tools, tests): one private loop for its whole life.
    The server never uses it: its builds get their network from `build_network` on the server's loop."""
    with asyncio.Runner() as runner:
        network = build_network()
        netns = runner.run(network.__aenter__())
        try:
            yield netns
        finally:
            runner.run(network.__aexit__(None, None, None))


# ---- export -----------------------------------------------------------------------------------------

def _info(parsed: dockerfile_mod.Dockerfile, request: BuildRequest, config: dict, image_id: str) -> TemplateInfo:
    env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
    user = (config.get("User") or "").split(":")[0] or DEFAULT_USER
    workdir = config.get("WorkingDir") or ""
    if workdir in ("", "/"):
        workdir = ""  # filled in once the user's home is known
    start_cmd = request.start_cmd or parsed.start_cmd()
    ready_cmd = request.ready_cmd
    if start_cmd and not ready_cmd and parsed.exposed_ports():
        ready_cmd = _port_open_cmd(parsed.exposed_ports()[0])
    return TemplateInfo(
        id=request.template_id, aliases=request.aliases, default_user=user, default_workdir=workdir, env=env,
        start_cmd=start_cmd, ready_cmd=ready_cmd, cpu_count=request.cpu_count, memory_mb=request.memory_mb,
        disk_mb=request.disk_mb, envd={"version": ENVD_VERSION, "system_image_mountpoint": MOUNTPOINT},
        build={"builder": "sandhive.templates.builder", "image_id": image_id, "built_at": now_iso(),
               "bases": [ref for ref, _ in parsed.external_bases()], "dockerfile_sha256": _hash(parsed.text)})


def _port_open_cmd(port: int) -> str:
    """A ready check for an EXPOSEd port that needs nothing in the template: the system image's bash (run
    with the image's own loader, like envd) opens a TCP connection to the port."""
    return shlex.join([*system_image.system_bash_command(MOUNTPOINT), "-c", f"</dev/tcp/127.0.0.1/{port}"])


def _check_free_disk(path: Path, min_free_mb: int = MIN_FREE_DISK_MB) -> None:
    path.mkdir(parents=True, exist_ok=True)
    free_mb = build_sandbox.free_disk_mb(path)
    if free_mb < min_free_mb:
        raise TemplateBuildError(f"only {free_mb} MB free on the server's build disk; a template build needs at least "
                                 f"{min_free_mb} MB. Free space (e.g. `sandhive template delete` old "
                                 "templates) and build again.")


def _hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:12]


def remove_image(data_dir: Path, template_id: str, cache_dir: Path | None = None) -> None:
    """Forget a deleted template's image (its layers stay cached for other images that share them)."""
    with build_sandbox.unlimited(Path(cache_dir or default_cache_dir())) as sandbox:
        storage(sandbox).remove_image(image_name(data_dir, template_id))


__all__ = ["BuildRequest", "TemplateBuildError", "build_template", "remove_image", "storage", "storage_session",
           "image_name"]
