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
import ipaddress
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..envd import ENVD_VERSION
from ..images import system_image
from ..images.apt_sources import host_sources
from ..images.debian import BuildError
from ..images.system_image import MOUNTPOINT, SUITES, default_cache_dir
from ..node import userns
from . import dockerfile as dockerfile_mod
from . import layout, local_bases, rootfs
from .buildah import Buildah, BuildahError
from .info import ID_PATTERN, ROOTFS, TemplateInfo, now_iso

Log = Callable[[str], None]
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CA_INSIDE = "/run/sandhive-build/ca.crt"  # where RUN steps find the host's CA bundle (not in any layer)
CA_ENV = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE")
DEFAULT_USER, DEFAULT_UID = "user", 1000
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


def storage(cache_dir: Path | None = None) -> Buildah:
    """The host's one buildah storage for template builds (shared by every data dir)."""
    return Buildah((cache_dir or default_cache_dir()) / "buildah")


def image_name(data_dir: Path, template_id: str) -> str:
    """Where a template's image is kept in the storage; the data dir is part of it (storage is host-wide)."""
    digest = _hash(str(Path(data_dir).resolve()))
    return f"localhost/sandhive-template/{digest}/{template_id}:latest"


def build_template(data_dir: Path, request: BuildRequest, *, cache_dir: Path | None = None,
                   log: Log = print) -> TemplateInfo:
    """Build `request` into `<data_dir>/templates/<id>` (blocking: minutes for a cold build)."""
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
    _check_free_disk(cache_dir)
    buildah = storage(cache_dir)
    resolved = _resolve_bases(parsed, buildah, data_dir, cache_dir, request.context, log)
    image = image_name(data_dir, request.template_id)
    image_id = _bud(buildah, parsed, resolved, request, image, log)
    config = buildah.inspect(image)["config"]
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
        with buildah.mounted(image) as tree:
            _copy_tree(tree, tmp / ROOTFS)
        user = _finalize(tmp / ROOTFS, info.default_user, info.default_workdir)
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
                full = path if os.path.isabs(path) else str((context / path).resolve())
                if not Path(full.split(":")[0]).exists():
                    raise TemplateBuildError(f"{transport} {path} does not exist", where)
                log(f"{where}: importing {transport} {full}")
                resolved[ref] = buildah.pull(f"{transport}:{full}")
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
    with tempfile.TemporaryDirectory(prefix="sandhive-import-", dir=buildah.root.parent) as tmp:
        copy = Path(tmp) / "rootfs"
        _copy_tree(tree, copy)
        _unshift_tree(copy)
        env = [f"{k}={v}" for k, v in template.env.items()]
        if not any(e.startswith("PATH=") for e in env):
            env.insert(0, f"PATH={local_bases.PATH}")
        buildah.commit_tree(copy, name, {"env": env, "workingdir": template.default_workdir,
                                         "user": "root"}, {IMAGE_LABEL: stamp})
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
         image: str, log: Log) -> str:
    text = _with_ca_args(parsed.with_bases(resolved)) if request.trust_host_ca else parsed.with_bases(resolved)
    with tempfile.TemporaryDirectory(prefix="sandhive-bud-") as tmp, _build_network() as netns:
        dockerfile = Path(tmp) / "Dockerfile"
        dockerfile.write_text(text)
        iidfile = Path(tmp) / "iid"
        args = ["bud", "--layers", "--force-rm", "--pull=never", "--isolation", "oci", "--runtime", RUNTIME_BINARY,
                "--network", f"ns:{netns}", "--iidfile", str(iidfile), "-f", str(dockerfile), "-t", image,
                "--label", f"{IMAGE_LABEL}={request.template_id}"]
        if request.no_cache:
            args.append("--no-cache")
        for key, value in request.build_args.items():
            args += ["--build-arg", f"{key}={value}"]
        if request.trust_host_ca and HOST_CA_BUNDLE.is_file():
            args += ["-v", f"{HOST_CA_BUNDLE}:{CA_INSIDE}:ro"]
        ignore = request.context / ".dockerignore"
        if ignore.is_file():
            args += ["--ignorefile", str(ignore)]
        step = _StepTracker(parsed, log)
        try:
            buildah.run(*args, str(request.context), on_line=step.line)
        except BuildahError as exc:
            raise TemplateBuildError(_failure(exc.lines), step.current, list(exc.lines)) from exc
        return iidfile.read_text().strip().removeprefix("sha256:")


RUNTIME_BINARY = "runc"


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


class _BuildNetwork:
    """A build slot's network namespace (as a sandbox gets one), removed when the build ends."""

    def __init__(self) -> None:
        from ..node import network

        self.network = network
        self.build_id = "b" + secrets.token_hex(8)
        self.slots = network.SlotAllocator()
        self.slot = None

    def __enter__(self) -> str:
        self.slot = self.slots.claim(self.build_id)
        try:
            asyncio.run(self._create())
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.network.netns_path(self.build_id)

    async def _create(self) -> None:
        await self.network.prepare_host()
        await self.network.create(self.build_id, self.slot, True)

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run(self.network.destroy(self.build_id, self.slot))
        finally:
            if self.slot is not None:
                self.slots.release(self.slot)


def _build_network() -> _BuildNetwork:
    return _BuildNetwork()


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


def _copy_tree(src: Path, dst: Path) -> None:
    proc = subprocess.run(["cp", "-a", "--", f"{src}/.", str(dst)] if dst.exists() else
                          ["cp", "-a", "--", str(src), str(dst)], stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise TemplateBuildError(f"copying the image's files failed: {proc.stderr.strip()[-500:]}")


def _finalize(tree: Path, user: str, workdir: str) -> str:
    """What every template needs beyond the image: a login user, the mount points the runtime uses, plain
    /etc network files, clean /dev and /tmp, and the sandbox uid range. Returns the default user.

    A WORKDIR the Dockerfile created (root-owned, outside the system directories) is given to the default
    user, so that the user commands run as by default can write where they start (as in E2B)."""
    if user == DEFAULT_USER or not _user_exists(tree, user):
        user = DEFAULT_USER
        if not _user_exists(tree, user):
            _add_user(tree, user)
    inside = tree / workdir.lstrip("/") if workdir else None
    owner = _uid_of(tree, user)
    if inside is not None and not inside.exists() and not inside.is_symlink():
        inside.mkdir(parents=True, mode=0o755)  # Docker creates a WORKDIR; buildah only when a step uses it
    if inside is not None and inside.is_dir() and not inside.is_symlink() and owner is not None \
            and workdir.rstrip("/") not in SYSTEM_DIRS and inside.stat().st_uid == 0:
        os.chown(inside, owner, owner)
    rootfs.add_mountpoint(tree, MOUNTPOINT)
    rootfs.write_network_files(tree, "sandbox")
    for name in ("dev", "proc", "sys", "tmp"):
        (tree / name).mkdir(exist_ok=True)
    (tree / "tmp").chmod(0o1777)
    userns.shift_tree(tree)
    return user


SYSTEM_DIRS = ("", "/usr", "/etc", "/var", "/root", "/tmp", "/bin", "/sbin", "/lib", "/opt", "/srv", "/home",
               "/usr/local", "/usr/local/bin", "/usr/bin", "/run", "/proc", "/sys", "/dev", "/boot", "/mnt")


def _uid_of(tree: Path, user: str) -> int | None:
    if user.isdigit():
        return int(user)
    return next((int(f[2]) for f in _entries(tree / "etc/passwd") if f[0] == user and f[2].isdigit()), None)


def _user_exists(tree: Path, user: str) -> bool:
    passwd = tree / "etc/passwd"
    if user.isdigit():
        return True  # a numeric USER needs no passwd entry
    return passwd.is_file() and any(line.split(":")[0] == user for line in passwd.read_text().splitlines())


def _add_user(tree: Path, user: str) -> None:
    """`user` with uid/gid 1000 (or the next free), a home from /etc/skel, and passwordless sudo if the
    image has sudo. Written directly, so images without useradd (busybox, distroless) get one too."""
    etc = tree / "etc"
    etc.mkdir(exist_ok=True)
    passwd, group, shadow = etc / "passwd", etc / "group", etc / "shadow"
    used_uids = {int(f[2]) for f in _entries(passwd) if len(f) > 2 and f[2].isdigit()}
    used_gids = {int(f[2]) for f in _entries(group) if len(f) > 2 and f[2].isdigit()}
    uid = next(i for i in range(DEFAULT_UID, 60000) if i not in used_uids and i not in used_gids)
    shell = "/bin/bash" if (tree / "bin/bash").exists() or (tree / "usr/bin/bash").exists() else "/bin/sh"
    with open(passwd, "a") as f:
        f.write(f"{user}:x:{uid}:{uid}::/home/{user}:{shell}\n")
    with open(group, "a") as f:
        f.write(f"{user}:x:{uid}:\n")
    if shadow.exists():
        with open(shadow, "a") as f:
            f.write(f"{user}:*:19000:0:99999:7:::\n")
    home = tree / "home" / user
    if not home.exists():
        skel = tree / "etc/skel"
        if skel.is_dir():
            shutil.copytree(skel, home, symlinks=True)
        else:
            home.mkdir(parents=True)
    for dirpath, dirnames, filenames in os.walk(home):
        for name in [*dirnames, *filenames, None]:
            os.lchown(os.path.join(dirpath, name) if name else dirpath, uid, uid)
    home.chmod(0o755)
    sudoers = tree / "etc/sudoers.d"
    if sudoers.is_dir():
        entry = sudoers / user
        entry.write_text(f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n")
        entry.chmod(0o440)


def _entries(path: Path) -> list[list[str]]:
    return [line.split(":") for line in path.read_text().splitlines() if line] if path.is_file() else []


def _unshift_tree(root: Path) -> None:
    """The inverse of `userns.shift_tree`: sandbox-range owners back to real ids (for re-import)."""
    import stat

    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, None]:
            path = os.path.join(dirpath, name) if name is not None else dirpath
            st = os.lstat(path)
            uid = st.st_uid - userns.BASE if userns.BASE <= st.st_uid < userns.BASE + userns.SIZE else st.st_uid
            gid = st.st_gid - userns.BASE if userns.BASE <= st.st_gid < userns.BASE + userns.SIZE else st.st_gid
            if (uid, gid) != (st.st_uid, st.st_gid):
                os.lchown(path, uid, gid)
                if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                    os.chmod(path, stat.S_IMODE(st.st_mode))


def _check_free_disk(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    st = os.statvfs(path)
    free_mb = st.f_bavail * st.f_frsize // 2**20
    if free_mb < MIN_FREE_DISK_MB:
        raise TemplateBuildError(f"only {free_mb} MB free under {path}; a template build needs at least "
                                 f"{MIN_FREE_DISK_MB} MB. Free space (e.g. `sandhive template delete` old "
                                 "templates) and build again.")


def _hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:12]


def remove_image(data_dir: Path, template_id: str, cache_dir: Path | None = None) -> None:
    """Forget a deleted template's image (its layers stay cached for other images that share them)."""
    storage(cache_dir).remove_image(image_name(data_dir, template_id))


__all__ = ["BuildRequest", "TemplateBuildError", "build_template", "remove_image", "storage", "image_name"]
