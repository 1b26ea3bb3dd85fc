"""Dockerfile reading: which instructions a template may use, its stages and base images, its start command.

Parsing is `dockerfile-parse`'s (continuations, comments, JSON and shell forms); executing the file is
buildah's. This module only checks what buildah would accept but a sandbox template cannot mean (an
unknown instruction is refused naming its line, before anything runs), finds the `FROM` references that
Sandhive must resolve itself (Docker Hub is not used: see `local_bases`), and rewrites those `FROM` lines
to the image each resolved to. The start command is the last stage's own `CMD`/`ENTRYPOINT`: one a base
image declares (python's `CMD ["python3"]`) is not a service to start in every sandbox.
"""

from __future__ import annotations

import io
import json
import re
import shlex
from dataclasses import dataclass, field

from dockerfile_parse import DockerfileParser

SUPPORTED = frozenset({
    "FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER", "CMD", "ENTRYPOINT", "EXPOSE", "LABEL",
    "SHELL", "STOPSIGNAL", "MAINTAINER",
})
IGNORED = frozenset({"HEALTHCHECK", "VOLUME", "ONBUILD"})  # accepted by buildah, meaningless for a sandbox
_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_RUN_FLAG = re.compile(r"^\s*(--[\w-]+(?:=(?:\"[^\"]*\"|'[^']*'|\S)*)?)(?:\s+|$)")
MOUNT_TYPES = frozenset({"bind", "cache", "tmpfs"})
_RW = frozenset({"rw", "readwrite"})


class DockerfileError(ValueError):
    """The Dockerfile cannot be built; the message names the line."""


@dataclass(frozen=True)
class Instruction:
    """One instruction: `line` is 1-based (the first line of a continued instruction)."""

    line: int
    keyword: str
    value: str

    def describe(self) -> str:
        text = self.value if len(self.value) <= 60 else self.value[:57] + "..."
        return f"line {self.line}: {self.keyword} {text}"


@dataclass(frozen=True)
class Stage:
    """A `FROM` and what follows it up to the next one."""

    base: str  # the image reference as written, with ARG defaults substituted
    name: str | None  # `AS name`
    from_line: int
    instructions: tuple[Instruction, ...]


@dataclass(frozen=True)
class Dockerfile:
    """A parsed, checked Dockerfile."""

    text: str
    stages: tuple[Stage, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def external_bases(self) -> list[tuple[str, int]]:
        """(reference, line) of every `FROM` that names an image: not `scratch`, not an earlier stage."""
        stage_names: set[str] = set()
        bases: list[tuple[str, int]] = []
        for stage in self.stages:
            known = {ref for ref, _ in bases}
            if stage.base.lower() != "scratch" and stage.base not in stage_names and stage.base not in known:
                bases.append((stage.base, stage.from_line))
            if stage.name:
                stage_names.add(stage.name)
        return bases

    def start_cmd(self) -> str | None:
        """The final stage's own ENTRYPOINT + CMD as one shell command, or None."""
        entrypoint = cmd = None
        for ins in self.final.instructions:
            if ins.keyword == "ENTRYPOINT":
                entrypoint = _command_words(ins.value)
                cmd = None  # Docker: ENTRYPOINT resets a CMD set before it
            elif ins.keyword == "CMD":
                cmd = _command_words(ins.value)
        words = (entrypoint or []) + (cmd or [])
        if not words:
            return None
        if len(words) == 3 and words[:2] == ["/bin/sh", "-c"]:
            return words[2]
        return shlex.join(words)

    def exposed_ports(self) -> list[int]:
        ports = []
        for ins in self.final.instructions:
            if ins.keyword == "EXPOSE":
                for item in ins.value.split():
                    number = item.split("/")[0]
                    if number.isdigit():
                        ports.append(int(number))
        return ports

    def with_bases(self, resolved: dict[str, str]) -> str:
        """The Dockerfile text with each `FROM <ref>` in `resolved` pointing at the image it resolved to."""
        lines = self.text.splitlines(keepends=True)
        for stage in self.stages:
            if stage.base in resolved:
                index = stage.from_line - 1
                suffix = f" AS {stage.name}" if stage.name else ""
                lines[index] = f"FROM {resolved[stage.base]}{suffix}\n"
        return "".join(lines)


def _command_words(value: str) -> list[str]:
    """CMD/ENTRYPOINT: JSON (exec) form as is, shell form as `/bin/sh -c`."""
    value = value.strip()
    if value.startswith("["):
        try:
            words = json.loads(value)
        except json.JSONDecodeError:
            words = None
        if isinstance(words, list) and all(isinstance(w, str) for w in words):
            return words
    return ["/bin/sh", "-c", value]


def parse(text: str, build_args: dict[str, str] | None = None) -> Dockerfile:
    """Parse and check `text`. Raises DockerfileError naming the offending line."""
    # The parser reads and writes its file object as bytes (its u2b/b2u); the stubs wrongly say IO[str].
    parser = DockerfileParser(fileobj=io.BytesIO(), env_replace=False)  # type: ignore[arg-type]
    try:
        parser.content = text
        structure = parser.structure
    except Exception as exc:  # the parser's own errors are plain exceptions
        raise DockerfileError(f"the Dockerfile cannot be parsed: {exc}") from exc
    args = dict(build_args or {})
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    warnings: list[str] = []
    current: tuple[str, str | None, int] | None = None
    body: list[Instruction] = []
    for item in structure:
        keyword = item["instruction"].upper()
        if keyword == "COMMENT":
            continue
        ins = Instruction(line=item["startline"] + 1, keyword=keyword, value=item["value"].strip())
        if keyword not in SUPPORTED and keyword not in IGNORED:
            raise DockerfileError(f"line {ins.line}: unknown instruction {keyword!r} "
                                  f"(supported: {', '.join(sorted(SUPPORTED | IGNORED))})")
        if keyword in IGNORED:
            warnings.append(f"{ins.describe()}: ignored (it means nothing for a sandbox template)")
        if keyword == "FROM":
            if current is not None:
                stages.append(Stage(current[0], current[1], current[2], tuple(body)))
            current = (*_from(ins, {**global_args, **args}), ins.line)
            body = []
            continue
        if current is None:
            if keyword != "ARG":
                raise DockerfileError(f"{ins.describe()}: only ARG may come before the first FROM")
            name, _, default = ins.value.partition("=")
            global_args[name.strip()] = args.get(name.strip(), default.strip().strip('"'))
            continue
        if not ins.value and keyword not in ("CMD", "ENTRYPOINT"):
            raise DockerfileError(f"line {ins.line}: {keyword} needs arguments")
        if keyword == "RUN":
            _check_run_flags(ins, [s.name for s in stages if s.name], len(stages))
        body.append(ins)
    if current is None:
        raise DockerfileError("the Dockerfile has no FROM instruction (write e.g. `FROM python:3.11-slim`)")
    stages.append(Stage(current[0], current[1], current[2], tuple(body)))
    return Dockerfile(text=text if text.endswith("\n") else text + "\n", stages=tuple(stages),
                      warnings=tuple(warnings))


def _from(ins: Instruction, args: dict[str, str]) -> tuple[str, str | None]:
    words = [w for w in ins.value.split() if not w.startswith("--platform")]
    if not words:
        raise DockerfileError(f"line {ins.line}: FROM needs an image")
    name = None
    if len(words) == 3 and words[1].lower() == "as":
        name = words[2]
    elif len(words) != 1:
        raise DockerfileError(f"{ins.describe()}: expected `FROM image [AS name]`")
    ref = _VAR.sub(lambda m: args.get(m.group(1) or m.group(2), ""), words[0])
    if not ref:
        raise DockerfileError(f"{ins.describe()}: the image name is empty after ARG substitution")
    return ref, name


def run_mounts(ins: Instruction) -> list[dict[str, str]]:
    """The `--mount=` options of a RUN instruction, each as its key=value pairs (`type` filled in)."""
    return [_mount_options(flag[len("--mount="):]) for flag in _run_flags(ins.value) if flag.startswith("--mount=")]


def _run_flags(value: str) -> list[str]:
    flags = []
    while match := _RUN_FLAG.match(value):
        flags.append(match.group(1))
        value = value[match.end():]
    return flags


def _mount_options(spec: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in spec.strip("\"'").split(","):
        key, sep, value = item.partition("=")
        options[key.strip().lower()] = value.strip() if sep else "true"
    options.setdefault("type", "bind")
    return options


def _check_run_flags(ins: Instruction, earlier_stages: list[str], stage_index: int) -> None:
    """Refuse RUN flags that reach beyond the build (see docs/templates.md, "RUN --mount").

    - `--mount=type=bind`: read-only, from the build context or an earlier stage only. Never `rw`: with
      Debian's buildah 1.28 a writable bind of a stage's symlink binds the host's `/` (CVE-2024-1753).
    - `--mount=type=cache`: allowed without `from=`; its directory is per build (the build's own TMPDIR),
      so one team's cache can never be read or poisoned by another's build.
    - `--mount=type=tmpfs`: allowed. `secret`, `ssh` and any other type: refused (nothing to hand in).
    - `--network=none|default|host` (host = the build's own network namespace); `--security` and other flags:
      refused."""
    for flag in _run_flags(ins.value):
        name, _, value = flag.partition("=")
        if name == "--network":
            if value not in ("none", "default", "host"):
                raise DockerfileError(f"line {ins.line}: RUN --network={value} is not supported "
                                      "(use none, default or host)")
            continue
        if name != "--mount":
            raise DockerfileError(f"line {ins.line}: RUN {name} is not allowed in a template build "
                                  "(RUN accepts --mount and --network)")
        options = _mount_options(value)
        kind = options["type"]
        if kind not in MOUNT_TYPES:
            raise DockerfileError(f"line {ins.line}: RUN --mount=type={kind} is not allowed in a template build "
                                  "(allowed: bind read-only, cache, tmpfs)")
        writable = [key for key in options if key in _RW and options[key].lower() not in ("false", "0")]
        if kind == "bind" and writable:
            raise DockerfileError(f"line {ins.line}: RUN --mount=type=bind,{writable[0]} is not allowed: bind "
                                  "mounts are read-only in a template build (copy what you need to change)")
        source = options.get("from") or options.get("from_image")
        if source is not None and kind != "bind":
            raise DockerfileError(f"line {ins.line}: RUN --mount=type={kind},from= is not allowed "
                                  "(only read-only bind mounts may come from an earlier stage)")
        if source is not None and source not in earlier_stages and not (
                source.isdigit() and int(source) < stage_index):
            raise DockerfileError(f"line {ins.line}: RUN --mount from={source!r} must name an earlier stage "
                                  "of this Dockerfile (images are not mounted: use a stage `FROM image AS name`)")
