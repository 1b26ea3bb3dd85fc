"""E2B's SDK-defined templates (`Template().from_image(...).run_cmd(...)`) as a Dockerfile.

The e2b SDK sends a build as a base (`fromImage` or `fromTemplate`) plus steps `{type, args, filesHash?}`
(docs/wire.md §2.6). Sandhive turns them into the Dockerfile they mean and builds that like any other, so
there is one build path with one layer cache. What E2B's build does implicitly is written out:

- steps run as `user` in `/home/user` unless a USER/WORKDIR step says otherwise (E2B's build default);
  `user` is created first if the base image lacks it;
- a RUN step with a user (`run_cmd(..., user="root")`, as `pip_install` sends) switches to that user for
  that step only;
- COPY sources are paths relative to the context: the caller unpacks every COPY step's uploaded tar
  (whose members are context-relative paths) into one context directory; `args` are
  `[src, dest, user, mode]` with the last two optional.
"""

from __future__ import annotations

import json
import re

from .info import ID_PATTERN

STEP_TYPES = ("COPY", "ENV", "RUN", "WORKDIR", "USER")
DEFAULT_BASE = "e2bdev/base"
BUILD_USER = "user"
ENSURE_USER = (
    f"RUN id -u {BUILD_USER} >/dev/null 2>&1 || useradd -m -s /bin/bash {BUILD_USER} 2>/dev/null "
    f"|| adduser -D {BUILD_USER} 2>/dev/null || true"
)
_ONE_LINE = re.compile(r"^[^\n\r\0]*$")


class StepsError(ValueError):
    """A step cannot be turned into a Dockerfile instruction; the message names it."""


def dockerfile_from_steps(from_image: str | None, from_template: str | None, steps: list[dict]) -> str:
    """The Dockerfile for an E2B SDK build. Raises StepsError for a malformed step."""
    if from_image and from_template:
        raise StepsError("give fromImage or fromTemplate, not both")
    base = from_template or from_image or DEFAULT_BASE
    if from_template and not ID_PATTERN.fullmatch(from_template.split(":")[0]):
        raise StepsError(f"fromTemplate {from_template!r} is not a template name")
    _check_line(base, "the base image")
    lines = [f"FROM {base}", "USER root", ENSURE_USER, f"USER {BUILD_USER}", f"WORKDIR /home/{BUILD_USER}"]
    user = BUILD_USER
    for number, step in enumerate(steps, start=1):
        kind = str(step.get("type", "")).upper()
        args = step.get("args") or []
        if kind not in STEP_TYPES:
            raise StepsError(f"step {number}: unknown type {step.get('type')!r} (expected one of "
                             f"{', '.join(STEP_TYPES)})")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise StepsError(f"step {number} ({kind}): args must be a list of strings")
        for arg in args[1:] if kind == "RUN" else args:
            _check_line(arg, f"step {number} ({kind})")
        if kind == "RUN":
            if not args or not args[0].strip():
                raise StepsError(f"step {number} (RUN): no command")
            step_user = args[1] if len(args) > 1 and args[1] else None
            run = f"RUN {json.dumps(['/bin/sh', '-c', args[0]])}"  # exec form keeps a script's newlines
            if step_user and step_user != user:
                lines += [f"USER {step_user}", run, f"USER {user}"]
            else:
                lines.append(run)
        elif kind == "COPY":
            if len(args) < 2 or not args[0] or not args[1]:
                raise StepsError(f"step {number} (COPY): needs a source and a destination")
            src, dest = args[0], args[1]
            if src.startswith("/") or ".." in src.split("/"):
                raise StepsError(f"step {number} (COPY): source {src!r} must be a path inside the context")
            owner = args[2] if len(args) > 2 and args[2] else user
            flags = [f"--chown={owner}"]
            if len(args) > 3 and args[3]:
                if not re.fullmatch(r"[0-7]{3,4}", args[3]):
                    raise StepsError(f"step {number} (COPY): mode {args[3]!r} is not octal")
                flags.append(f"--chmod={args[3]}")
            lines.append(f"COPY {' '.join(flags)} {json.dumps([src, dest])}")
        elif kind == "ENV":
            if not args or len(args) % 2:
                raise StepsError(f"step {number} (ENV): args must be key, value pairs")
            pairs = [f"{args[i]}={json.dumps(args[i + 1])}" for i in range(0, len(args), 2)]
            for i in range(0, len(args), 2):
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", args[i]):
                    raise StepsError(f"step {number} (ENV): {args[i]!r} is not a variable name")
            lines.append("ENV " + " ".join(pairs))
        elif kind == "WORKDIR":
            if not args or not args[0]:
                raise StepsError(f"step {number} (WORKDIR): no directory")
            lines.append(f"WORKDIR {args[0]}")
        elif kind == "USER":
            if not args or not args[0]:
                raise StepsError(f"step {number} (USER): no user")
            user = args[0]
            lines.append(f"USER {user}")
    return "\n".join(lines) + "\n"


def _check_line(value: str, where: str) -> None:
    if not _ONE_LINE.match(value):
        raise StepsError(f"{where}: values must be on one line")
