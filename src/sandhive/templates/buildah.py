"""Debian's `buildah`, driven as a library: Dockerfile builds without a daemon, with its own layer cache.

Why buildah rather than executing steps ourselves: it implements all of the Dockerfile (multi-stage,
ARG scoping, COPY --from, ADD of archives and URLs, .dockerignore, SHELL, exec and shell forms) and caches
every step as a layer keyed by everything before it, so an unchanged rebuild takes a fraction of a second
and a change rebuilds from that step only. Sandhive keeps one storage per host (under the cache dir):
local bases, pulled images and layers are shared by every data dir and every build.

Every buildah command runs in a `build_sandbox.Sandbox`: as root of a user namespace of the BUILD range
(host uid 200000..), with `--isolation chroot` (RUN steps are chrooted children of that unprivileged
buildah), in its own mount and PID namespaces, inside the build's cgroup and, for `bud` and pulls, the
build's network namespace. The storage is owned by the BUILD range (`<cache>/buildah-userns/storage`); the
run state lives on a tmpfs of the command's own mount namespace, so it never outlives the command.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from ..images.debian import BuildError
from .build_sandbox import CommandFailed, Sandbox, stop_all

Log = Callable[[str], None]
__all__ = ["Buildah", "BuildahError", "stop_all"]


class BuildahError(BuildError):
    """buildah failed; `lines` is the tail of its output."""

    def __init__(self, message: str, lines: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.lines = lines


class Buildah:
    """The BUILD range's buildah storage, used through one build's sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.root = sandbox.storage

    def argv(self, *args: str) -> list[str]:
        return ["buildah", "--root", str(self.root), "--runroot", "/run/buildah", "--storage-driver", "overlay",
                *args]

    def run(self, *args: str, on_line: Log | None = None, network: bool = False) -> str:
        """Run a buildah command; its output (stdout and stderr merged) goes to `on_line` line by line and
        is returned. Raises BuildahError with the last lines on failure (LimitExceeded past a limit)."""
        try:
            return self.sandbox.run(self.argv(*args), on_line=on_line, network=network, what=f"buildah {args[0]}")
        except CommandFailed as exc:
            raise BuildahError(exc.message, exc.lines) from exc

    def quiet(self, *args: str) -> str:
        """A short command whose stdout is the answer (stderr kept apart so warnings do not spoil it)."""
        try:
            return self.sandbox.quiet(self.argv(*args))
        except CommandFailed as exc:
            raise BuildahError(exc.message, exc.lines) from exc

    # ---- images ---------------------------------------------------------------------------------
    def image_exists(self, ref: str) -> bool:
        try:
            self.quiet("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref)
        except BuildahError:
            return False
        return True

    def inspect(self, ref: str) -> dict:
        """The image's OCI config and id: {"id": ..., "config": {Env, Cmd, Entrypoint, WorkingDir, User,
        Labels, ExposedPorts}}."""
        data = json.loads(self.quiet("inspect", "--type", "image", ref))
        config = (data.get("OCIv1") or {}).get("config") or {}
        return {"id": data.get("FromImageID") or "", "config": config}

    def label(self, ref: str, key: str) -> str | None:
        try:
            return (self.inspect(ref)["config"].get("Labels") or {}).get(key)
        except BuildahError:
            return None

    def pull(self, ref: str, *, insecure: bool = False, on_line: Log | None = None) -> str:
        """Pull `ref` (a registry reference or a `docker-archive:`/`oci-archive:` path); return the image id."""
        args = ["pull", "--quiet"]
        if insecure:
            args.append("--tls-verify=false")
        out = self.run(*args, ref, on_line=on_line, network=True)
        return out.strip().splitlines()[-1].strip() if out.strip() else ref

    def remove_image(self, ref: str) -> None:
        with contextlib.suppress(BuildahError):
            self.quiet("rmi", "--force", ref)

    def tag(self, image: str, name: str) -> None:
        self.quiet("tag", image, name)

    # ---- working containers -----------------------------------------------------------------------
    def export(self, image: str, dest: Path) -> None:
        """Image `image`'s tree into the empty directory `dest`, owned by the template range."""
        try:
            self.sandbox.export(self.argv(), image, dest)
        except CommandFailed as exc:
            raise BuildahError(exc.message, exc.lines) from exc

    def commit_tree(self, tree: Path, name: str, config: dict[str, Sequence[str] | str],
                    labels: dict[str, str], *, trusted: bool) -> str:
        """A one-layer image `name` holding `tree`, with the given config; returns its id. `trusted`: see
        `Sandbox.receive` (a tree mmdebstrap made, or a template's tree in the template range)."""
        import secrets

        try:
            inside = self.sandbox.receive(tree, trusted=trusted, dest=f"import-{secrets.token_hex(4)}")
        except CommandFailed as exc:
            raise BuildahError(exc.message, exc.lines) from exc
        container = self.quiet("from", "--quiet", "scratch")
        try:
            self.quiet("copy", "--quiet", container, f"{inside}/.", "/")
            args: list[str] = []
            for key, value in config.items():
                if isinstance(value, str):
                    args += [f"--{key}", value]
                else:
                    for item in value:
                        args += [f"--{key}", item]
            for key, value in labels.items():
                args += ["--label", f"{key}={value}"]
            if args:
                self.quiet("config", *args, container)
            return self.quiet("commit", "--quiet", "--rm", container, name)
        except BaseException:
            with contextlib.suppress(BuildahError):
                self.quiet("rm", container)
            raise


