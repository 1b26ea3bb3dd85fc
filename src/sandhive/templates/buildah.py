"""Debian's `buildah`, driven as a library: Dockerfile builds without a daemon, with its own layer cache.

Why buildah rather than executing steps ourselves: it implements all of the Dockerfile (multi-stage,
ARG scoping, COPY --from, ADD of archives and URLs, .dockerignore, SHELL, exec and shell forms) and caches
every step as a layer keyed by everything before it, so an unchanged rebuild takes a fraction of a second
and a change rebuilds from that step only. Sandhive keeps one storage per host (under the cache dir):
local bases, pulled images and layers are shared by every data dir and every build.

RUN steps run in an OCI container started by the node's own OCI runtime (runc): their own mount, PID,
IPC and UTS namespaces, buildah's default capability set and seccomp profile, and the network namespace of
a build slot (behind the node's firewall, with NAT to the internet, no route to host services). That is
Docker's build isolation; it is not a user namespace (see docs/templates.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..images.debian import BuildError

Log = Callable[[str], None]
RUNTIME = "runc"
_running: set[subprocess.Popen] = set()  # buildah commands in flight, for `stop_all` at server stop
_running_lock = threading.Lock()


def stop_all() -> int:
    """Stop every buildah command this process is running (at server stop). Each build then fails in its
    own thread and cleans up after itself (working containers, build network). Returns how many."""
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # buildah runs in its own session: its children go too
    return len(procs)


class BuildahError(BuildError):
    """buildah failed; `lines` is the tail of its output."""

    def __init__(self, message: str, lines: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.lines = lines


class Buildah:
    """One buildah storage (`root`) with its run state under `/run` (lost at reboot, as buildah expects)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.runroot = Path("/run/sandhive/buildah") / _short_hash(str(self.root))

    def _argv(self, *args: str) -> list[str]:
        return ["buildah", "--root", str(self.root), "--runroot", str(self.runroot), "--storage-driver", "overlay",
                *args]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("BUILDAH_FORMAT", "oci")
        env["BUILDAH_ISOLATION"] = "oci"
        return env

    def run(self, *args: str, on_line: Log | None = None, input_path: Path | None = None) -> str:
        """Run a buildah command; its output (stdout and stderr merged) goes to `on_line` line by line and
        is returned. Raises BuildahError with the last lines on failure."""
        self.root.mkdir(parents=True, exist_ok=True)
        tail: list[str] = []
        lines: list[str] = []
        stdin = open(input_path, "rb") if input_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(self._argv(*args), stdin=stdin, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=self._env(), text=True, errors="replace",
                                    start_new_session=True)
            assert proc.stdout is not None
            with _running_lock:
                _running.add(proc)
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                lines.append(line)
                tail = (tail + [line])[-30:]
                if on_line is not None:
                    on_line(line)
            code = proc.wait()
        finally:
            with _running_lock:
                _running.discard(proc)
            if input_path:
                stdin.close()
        if code != 0:
            raise BuildahError(f"buildah {args[0]} failed (exit status {code})", tuple(tail))
        return "\n".join(lines)

    def quiet(self, *args: str) -> str:
        """A short command whose stdout is the answer (stderr kept apart so warnings do not spoil it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(self._argv(*args), capture_output=True, text=True, env=self._env())
        if proc.returncode != 0:
            raise BuildahError(f"buildah {args[0]} failed: {proc.stderr.strip()}",
                               tuple(proc.stderr.strip().splitlines()[-10:]))
        return proc.stdout.strip()

    # ---- images ---------------------------------------------------------------------------------
    def image_exists(self, ref: str) -> bool:
        proc = subprocess.run(self._argv("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self._env())
        return proc.returncode == 0

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
        out = self.run(*args, ref, on_line=on_line)
        return out.strip().splitlines()[-1].strip() if out.strip() else ref

    def remove_image(self, ref: str) -> None:
        subprocess.run(self._argv("rmi", "--force", ref), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=self._env())

    def tag(self, image: str, name: str) -> None:
        self.quiet("tag", image, name)

    # ---- working containers -----------------------------------------------------------------------
    @contextmanager
    def mounted(self, image: str) -> Iterator[Path]:
        """The image's root filesystem, mounted read-write through a throwaway working container."""
        container = self.quiet("from", "--pull-never", "--quiet", image)
        try:
            yield Path(self.quiet("mount", container))
        finally:
            subprocess.run(self._argv("rm", container), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=self._env())

    def commit_tree(self, tree: Path, name: str, config: dict[str, Sequence[str] | str],
                    labels: dict[str, str]) -> str:
        """A one-layer image `name` holding `tree`, with the given config; returns its id."""
        container = self.quiet("from", "--quiet", "scratch")
        try:
            self.quiet("copy", container, f"{tree}/.", "/")
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
            subprocess.run(self._argv("rm", container), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=self._env())
            raise


def _short_hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:12]
