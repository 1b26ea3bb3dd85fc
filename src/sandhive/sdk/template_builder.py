"""`Template()`: a sandbox template described in Python, as E2B's SDK describes one (no I/O here).

    Template().from_image("python:3.11-slim").pip_install(["pandas"]).copy("app/", "/app/").set_workdir("/app")

The chain records steps (`RUN`, `COPY`, `ENV`, `WORKDIR`, `USER`) over a base (`from_image`,
`from_template`), plus a start and a ready command; `Template.build` sends them to the server, which runs
them like E2B's build does: as `user` in `/home/user` unless told otherwise. `from_dockerfile` instead
sends a Dockerfile and its whole context (Sandhive's extension of the API): steps chained after it are
appended to it as Dockerfile instructions.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

from .template_files import check_source, files_hash, read_dockerignore
from .template_models import ReadyCmd, TemplateException

DEFAULT_BASE_IMAGE = "e2bdev/base"  # E2B's default: Sandhive builds it as its `base` template
_SDK_DIR = str(Path(__file__).resolve().parent)
_USER_LINE = re.compile(r"^\s*USER\s+(\S+)", re.IGNORECASE | re.MULTILINE)
_FROM_LINE = re.compile(r"^\s*FROM\s", re.IGNORECASE | re.MULTILINE)


def _caller() -> str | None:
    """`file:line` of the first frame outside the SDK: where the user added a step."""
    frame = inspect.currentframe()
    while frame is not None:
        filename = frame.f_code.co_filename
        if not os.path.abspath(filename).startswith(_SDK_DIR):
            return f"{filename}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def _caller_dir() -> str:
    where = _caller()
    return os.path.dirname(os.path.abspath(where.rsplit(":", 1)[0])) if where else os.getcwd()


class TemplateBuilder:
    """The chainable steps of a template. Every method returns the builder, except the start/ready commands,
    which end the chain (`TemplateFinal`)."""

    def __init__(self, template: TemplateBase) -> None:
        self._template = template

    def _step(self, kind: str, args: list[str], **extra: Any) -> TemplateBuilder:
        self._template._steps.append({"type": kind, "args": args, "force": self._template._force_next, **extra})
        self._template._origins.append(_caller())
        return self

    def copy(self, src: str | Path | list[str | Path], dest: str | Path, force_upload: bool | None = None,
             user: str | None = None, mode: int | None = None, resolve_symlinks: bool | None = None,
             gzip: bool | None = None) -> TemplateBuilder:
        """Copy files from the context directory (paths relative to it; globs allowed) to `dest`."""
        for item in src if isinstance(src, list) else [src]:
            check_source(str(item))
            self._step("COPY", [str(item), str(dest), user or "", f"{mode:04o}" if mode is not None else ""],
                       forceUpload=True if force_upload else None, resolveSymlinks=bool(resolve_symlinks),
                       gzip=True if gzip is None else gzip)
        return self

    def copy_items(self, items: list[dict[str, Any]]) -> TemplateBuilder:
        """Several `copy`s: `[{"src": ..., "dest": ..., "mode"?: ..., "user"?: ...}]`."""
        for item in items:
            self.copy(item["src"], item["dest"], item.get("forceUpload"), item.get("user"), item.get("mode"),
                      item.get("resolveSymlinks"), item.get("gzip"))
        return self

    def run_cmd(self, command: str | list[str], user: str | None = None) -> TemplateBuilder:
        """Run a shell command (a list is joined with `&&`), as `user` for this step if given."""
        commands = [command] if isinstance(command, str) else list(command)
        return self._step("RUN", [" && ".join(commands), *([user] if user else [])])

    def remove(self, path: str | Path | list[str | Path], force: bool = False, recursive: bool = False,
               user: str | None = None) -> TemplateBuilder:
        paths = path if isinstance(path, list) else [path]
        flags = [*(["-r"] if recursive else []), *(["-f"] if force else [])]
        return self.run_cmd(" ".join(["rm", *flags, *(shlex.quote(str(p)) for p in paths)]), user=user)

    def rename(self, src: str | Path, dest: str | Path, force: bool = False,
               user: str | None = None) -> TemplateBuilder:
        words = ["mv", shlex.quote(str(src)), shlex.quote(str(dest)), *(["-f"] if force else [])]
        return self.run_cmd(" ".join(words), user=user)

    def make_dir(self, path: str | Path | list[str | Path], mode: int | None = None,
                 user: str | None = None) -> TemplateBuilder:
        paths = path if isinstance(path, list) else [path]
        words = ["mkdir", "-p", *([f"-m {mode:04o}"] if mode is not None else []),
                 *(shlex.quote(str(p)) for p in paths)]
        return self.run_cmd(" ".join(words), user=user)

    def make_symlink(self, src: str | Path, dest: str | Path, user: str | None = None,
                     force: bool = False) -> TemplateBuilder:
        words = ["ln", "-s", *(["-f"] if force else []), shlex.quote(str(src)), shlex.quote(str(dest))]
        return self.run_cmd(" ".join(words), user=user)

    def set_workdir(self, workdir: str | Path) -> TemplateBuilder:
        return self._step("WORKDIR", [str(workdir)])

    def set_user(self, user: str) -> TemplateBuilder:
        return self._step("USER", [user])

    def set_envs(self, envs: dict[str, str]) -> TemplateBuilder:
        """Environment variables of the later steps and of the template's sandboxes."""
        if not envs:
            return self
        return self._step("ENV", [item for key, value in envs.items() for item in (key, str(value))])

    def pip_install(self, packages: str | list[str] | None = None, g: bool = True) -> TemplateBuilder:
        """`pip install` the packages (or `.`), system-wide as root unless `g=False` (then `--user`)."""
        names = [packages] if isinstance(packages, str) else list(packages or [])
        words = ["pip", "install", *([] if g else ["--user"]), *(names or ["."])]
        return self.run_cmd(" ".join(words), user="root" if g else None)

    def npm_install(self, packages: str | list[str] | None = None, g: bool | None = False,
                    dev: bool | None = False) -> TemplateBuilder:
        names = [packages] if isinstance(packages, str) else list(packages or [])
        words = ["npm", "install", *(["-g"] if g else []), *(["--save-dev"] if dev else []), *names]
        return self.run_cmd(" ".join(words), user="root" if g else None)

    def bun_install(self, packages: str | list[str] | None = None, g: bool | None = False,
                    dev: bool | None = False) -> TemplateBuilder:
        names = [packages] if isinstance(packages, str) else list(packages or [])
        words = ["bun", "install", *(["-g"] if g else []), *(["--dev"] if dev else []), *names]
        return self.run_cmd(" ".join(words), user="root" if g else None)

    def apt_install(self, packages: str | list[str], no_install_recommends: bool = False,
                    fix_missing: bool = False) -> TemplateBuilder:
        """`apt-get update` then install the packages, as root."""
        names = [packages] if isinstance(packages, str) else list(packages)
        flags = [*(["--no-install-recommends"] if no_install_recommends else []),
                 *(["--fix-missing"] if fix_missing else [])]
        install = " ".join(["DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y", *flags,
                            *names])
        return self.run_cmd(["apt-get update", install], user="root")

    def git_clone(self, url: str, path: str | Path | None = None, branch: str | None = None,
                  depth: int | None = None, user: str | None = None) -> TemplateBuilder:
        words = ["git", "clone", shlex.quote(url)]
        if branch:
            words += [f"--branch {shlex.quote(branch)}", "--single-branch"]
        if depth:
            words.append(f"--depth {int(depth)}")
        if path:
            words.append(shlex.quote(str(path)))
        return self.run_cmd(" ".join(words), user=user)

    def skip_cache(self) -> TemplateBuilder:
        """Rebuild this step and every later one instead of reusing cached layers."""
        self._template._force_next = True
        return self

    def set_start_cmd(self, start_cmd: str, ready_cmd: str | ReadyCmd) -> TemplateFinal:
        """The command every sandbox of the template starts with, and the check that says it is ready."""
        self._template._start_cmd = start_cmd
        self._template._ready_cmd = ready_cmd.get_cmd() if isinstance(ready_cmd, ReadyCmd) else ready_cmd
        return TemplateFinal(self._template)

    def set_ready_cmd(self, ready_cmd: str | ReadyCmd) -> TemplateFinal:
        self._template._ready_cmd = ready_cmd.get_cmd() if isinstance(ready_cmd, ReadyCmd) else ready_cmd
        return TemplateFinal(self._template)


class TemplateFinal:
    """A template whose start and ready commands are set: nothing more can be chained."""

    def __init__(self, template: TemplateBase) -> None:
        self._template = template


class TemplateBase:
    """A new template definition. `file_context_path` is where COPY sources are read from (default: the
    directory of the file that calls `Template()`); `file_ignore_patterns` add to its `.dockerignore`."""

    def __init__(self, file_context_path: str | Path | None = None,
                 file_ignore_patterns: list[str] | None = None) -> None:
        self._context = Path(file_context_path) if file_context_path is not None else Path(_caller_dir())
        self._ignore = list(file_ignore_patterns or [])
        self._base_image: str | None = DEFAULT_BASE_IMAGE
        self._base_template: str | None = None
        self._dockerfile: str | None = None
        self._start_cmd: str | None = None
        self._ready_cmd: str | None = None
        self._force = False
        self._force_next = False
        self._steps: list[dict[str, Any]] = []
        self._origins: list[str | None] = []  # where each step was added (file:line)
        self._origin: str | None = None  # where the base was chosen

    def skip_cache(self) -> TemplateBase:
        """Rebuild everything, the base included."""
        self._force_next = True
        return self

    def _from(self, image: str | None = None, template: str | None = None) -> TemplateBuilder:
        self._base_image, self._base_template, self._dockerfile = image, template, None
        self._origin = _caller()
        if self._force_next:
            self._force = True
        return TemplateBuilder(self)

    def from_image(self, image: str, username: str | None = None, password: str | None = None) -> TemplateBuilder:
        """Start from an image: a Debian-built stand-in (`python:3.11-slim`, `debian:bookworm`, ...), an image
        in a registry (`registry.example:5000/name:tag`), or a `docker-archive:`/`oci-archive:` file."""
        if username or password:
            raise TemplateException("registry credentials are not supported by Sandhive: use an image from a "
                                    "registry that needs no login")
        return self._from(image=image)

    def from_template(self, template: str) -> TemplateBuilder:
        """Start from another template of the server (id or alias)."""
        return self._from(template=template)

    def from_base_image(self) -> TemplateBuilder:
        return self._from(image=DEFAULT_BASE_IMAGE)

    def from_debian_image(self, variant: str = "bookworm") -> TemplateBuilder:
        return self._from(image=f"debian:{variant}")

    def from_ubuntu_image(self, variant: str = "latest") -> TemplateBuilder:
        return self._from(image=f"ubuntu:{variant}")

    def from_python_image(self, version: str = "3.11") -> TemplateBuilder:
        return self._from(image=f"python:{version}")

    def from_node_image(self, variant: str = "18") -> TemplateBuilder:
        return self._from(image=f"node:{variant}")

    def from_alpine_image(self, variant: str = "latest") -> TemplateBuilder:
        return self._from(image=f"alpine:{variant}")

    def from_fedora_image(self, variant: str = "latest") -> TemplateBuilder:
        return self._from(image=f"fedora:{variant}")

    def from_arch_image(self, variant: str = "latest") -> TemplateBuilder:
        return self._from(image=f"archlinux:{variant}")

    def from_bun_image(self, variant: str = "latest") -> TemplateBuilder:
        return self._from(image=f"oven/bun:{variant}")

    def from_aws_registry(self, image: str, access_key_id: str, secret_access_key: str,
                          region: str) -> TemplateBuilder:
        raise TemplateException("AWS registry credentials are not supported by Sandhive")

    def from_gcp_registry(self, image: str, service_account_json: str | dict) -> TemplateBuilder:
        raise TemplateException("GCP registry credentials are not supported by Sandhive")

    def from_dockerfile(self, dockerfile_content_or_path: str | Path) -> TemplateBuilder:
        """Build a Dockerfile (its text, or a path to it, relative to the context directory or absolute) with
        the context directory as its build context (Sandhive's extension: the whole Dockerfile runs on the
        server, multi-stage builds and ARGs included). Steps chained after it are appended to it."""
        text = str(dockerfile_content_or_path)
        path = Path(text) if isinstance(dockerfile_content_or_path, Path) or "\n" not in text else None
        if path is not None:
            candidate = path if path.is_absolute() else self._context / path
            if not candidate.is_file() and not path.is_absolute() and path.is_file():
                candidate = path
            if candidate.is_file():
                text = candidate.read_text()
            elif isinstance(dockerfile_content_or_path, Path) or not _FROM_LINE.search(text):
                raise TemplateException(f"Dockerfile {text!r} not found (looked in {self._context} and the "
                                        "current directory)")
        builder = self._from()
        self._dockerfile = text
        return builder

    # ---- what is sent ---------------------------------------------------------------------------------

    def _copy_steps(self) -> list[tuple[int, dict[str, Any]]]:
        return [(i, step) for i, step in enumerate(self._steps) if step["type"] == "COPY"]

    def _ignore_patterns(self) -> list[str]:
        return [*read_dockerignore(self._context), *self._ignore]

    def _steps_with_hashes(self) -> list[dict[str, Any]]:
        """The steps, each COPY with the hash of the files it copies (TemplateException if it names none)."""
        ignore = self._ignore_patterns()
        steps = []
        for step in self._steps:
            step = dict(step)
            if step["type"] == "COPY":
                src, dest = step["args"][0], step["args"][1]
                step["filesHash"] = files_hash(src, dest, self._context, ignore, step.get("resolveSymlinks", False))
            steps.append(step)
        return steps

    def _serialize(self, steps: list[dict[str, Any]]) -> dict[str, Any]:
        """The body of `POST /v2/templates/{id}/builds/{buildID}` (without the Dockerfile extension)."""
        body: dict[str, Any] = {"steps": [{k: v for k, v in step.items() if k in ("type", "args", "force",
                                                                                  "filesHash", "forceUpload")
                                           and v is not None} for step in steps],
                                "force": self._force}
        if self._base_template is not None:
            body["fromTemplate"] = self._base_template
        elif self._base_image is not None:
            body["fromImage"] = self._base_image
        if self._start_cmd is not None:
            body["startCmd"] = self._start_cmd
        if self._ready_cmd is not None:
            body["readyCmd"] = self._ready_cmd
        return body

    def _dockerfile_text(self) -> str:
        """The Dockerfile of a `from_dockerfile` template, with the chained steps appended as instructions.

        A step that runs as another user switches back to the user in effect before it: the Dockerfile's
        last `USER` (or root), or the last `set_user`."""
        assert self._dockerfile is not None
        text = self._dockerfile if self._dockerfile.endswith("\n") else self._dockerfile + "\n"
        users = _USER_LINE.findall(_last_stage(text))
        user = users[-1] if users else "root"
        lines = []
        for step in self._steps:
            kind, args = step["type"], step["args"]
            if kind == "RUN":
                run = f"RUN {json.dumps(['/bin/sh', '-c', args[0]])}"
                lines += [f"USER {args[1]}", run, f"USER {user}"] if len(args) > 1 and args[1] != user else [run]
            elif kind == "COPY":
                flags = [f"--chown={args[2]}"] if len(args) > 2 and args[2] else []
                flags += [f"--chmod={args[3]}"] if len(args) > 3 and args[3] else []
                lines.append(" ".join(["COPY", *flags, json.dumps([args[0], args[1]])]))
            elif kind == "ENV":
                lines.append("ENV " + " ".join(f"{args[i]}={json.dumps(args[i + 1])}" for i in range(0, len(args), 2)))
            elif kind == "USER":
                user = args[0]
                lines.append(f"USER {user}")
            else:
                lines.append(f"{kind} {args[0]}")
        return text + "".join(line + "\n" for line in lines)

    @staticmethod
    def to_json(template: TemplateBuilder | TemplateFinal) -> str:
        """The build request this template sends, as JSON (COPY steps with their files' hashes)."""
        base = template._template
        return json.dumps(base._serialize(base._steps_with_hashes()), indent=2)

    @staticmethod
    def to_dockerfile(template: TemplateBuilder | TemplateFinal) -> str:
        """The template as a Dockerfile, for reading (not for templates built from another template)."""
        base = template._template
        if base._dockerfile is not None:
            return base._dockerfile_text()
        if base._base_template is not None:
            raise TemplateException("a template built from another template has no Dockerfile form")
        saved, base._dockerfile = base._dockerfile, f"FROM {base._base_image}\n"
        try:
            text = base._dockerfile_text()
        finally:
            base._dockerfile = saved
        if base._start_cmd:
            text += f"ENTRYPOINT {base._start_cmd}\n"
        return text


def _last_stage(text: str) -> str:
    """The Dockerfile from its last FROM on (the stage whose USER the image keeps)."""
    starts = [m.start() for m in _FROM_LINE.finditer(text)]
    return text[starts[-1]:] if starts else text
