"""Dockerfile reading and E2B steps → Dockerfile: checked before anything runs (no buildah needed)."""

from __future__ import annotations

import pytest

from sandhive.templates.dockerfile import DockerfileError, parse
from sandhive.templates.steps import StepsError, dockerfile_from_steps

MULTI_STAGE = """\
# a comment
ARG PY=3.11-slim
FROM python:${PY} AS build
RUN echo one \\
    && echo two
FROM build AS second
FROM debian:bookworm-slim
COPY --from=build /x /x
EXPOSE 8000/tcp 9000
CMD ["python3", "-m", "http.server", "8000"]
"""


def test_stages_bases_and_start_command() -> None:
    parsed = parse(MULTI_STAGE)
    assert [s.base for s in parsed.stages] == ["python:3.11-slim", "build", "debian:bookworm-slim"]
    assert parsed.external_bases() == [("python:3.11-slim", 3), ("debian:bookworm-slim", 7)]
    assert parsed.start_cmd() == "python3 -m http.server 8000"
    assert parsed.exposed_ports() == [8000, 9000]
    run = parsed.stages[0].instructions[0]
    assert (run.line, run.keyword) == (4, "RUN") and "echo two" in run.value


def test_build_args_override_arg_defaults_in_from() -> None:
    assert parse(MULTI_STAGE, {"PY": "3.11"}).stages[0].base == "python:3.11"


def test_rewriting_from_keeps_stage_names_and_other_lines() -> None:
    text = parse(MULTI_STAGE).with_bases({"python:3.11-slim": "localhost/x:1", "debian:bookworm-slim": "sha"})
    lines = text.splitlines()
    assert lines[2] == "FROM localhost/x:1 AS build"
    assert lines[5] == "FROM build AS second"  # a stage, not an image: untouched
    assert lines[6] == "FROM sha"
    assert lines[3] == "RUN echo one \\"


def test_shell_form_cmd_and_entrypoint() -> None:
    assert parse("FROM scratch\nCMD python3 app.py --port 1\n").start_cmd() == "python3 app.py --port 1"
    assert parse('FROM scratch\nENTRYPOINT ["serve"]\nCMD ["--port", "8"]\n').start_cmd() == "serve --port 8"
    assert parse('FROM scratch\nCMD ["a"]\nENTRYPOINT ["b"]\n').start_cmd() == "b"  # ENTRYPOINT resets CMD
    assert parse("FROM scratch\nRUN true\n").start_cmd() is None


def test_base_image_cmd_is_not_a_start_command() -> None:
    parsed = parse("FROM python:3.11-slim AS one\nCMD [\"x\"]\nFROM one\nRUN true\n")
    assert parsed.start_cmd() is None  # only the last stage's own CMD counts


@pytest.mark.parametrize(("text", "needle"), [
    ("FROM debian:12\nFROBNICATE now\n", "line 2: unknown instruction 'FROBNICATE'"),
    ("RUN true\nFROM debian:12\n", "line 1: RUN true: only ARG may come before the first FROM"),
    ("# nothing\n", "no FROM instruction"),
    ("FROM debian:12 AS\n", "line 1: FROM debian:12 AS: expected `FROM image [AS name]`"),
    ("FROM debian:12\nRUN\n", "line 2: RUN needs arguments"),
    ("FROM $NOPE\n", "line 1: FROM $NOPE: the image name is empty"),
])
def test_errors_name_the_line(text: str, needle: str) -> None:
    with pytest.raises(DockerfileError) as caught:
        parse(text)
    assert needle in str(caught.value)


def test_ignored_instructions_warn() -> None:
    parsed = parse("FROM debian:12\nVOLUME /data\nHEALTHCHECK NONE\n")
    assert [w.split(":")[0] for w in parsed.warnings] == ["line 2", "line 3"]


def test_steps_become_a_dockerfile_with_e2b_defaults() -> None:
    text = dockerfile_from_steps("python:3.11-slim", None, [
        {"type": "RUN", "args": ["pip install six", "root"]},
        {"type": "COPY", "args": ["app.py", "/app/", "", "0755"], "filesHash": "ab"},
        {"type": "ENV", "args": ["A", "b c", "B", "1"]},
        {"type": "RUN", "args": ["echo one\necho two"]},
        {"type": "WORKDIR", "args": ["/app"]},
        {"type": "USER", "args": ["root"]},
    ])
    assert text.splitlines() == [
        "FROM python:3.11-slim",
        "USER root",
        text.splitlines()[2],  # creates `user` if the image lacks it
        "USER user",
        "WORKDIR /home/user",
        "USER root",
        'RUN ["/bin/sh", "-c", "pip install six"]',
        "USER user",
        'COPY --chown=user --chmod=0755 ["app.py", "/app/"]',
        'ENV A="b c" B="1"',
        'RUN ["/bin/sh", "-c", "echo one\\necho two"]',
        "WORKDIR /app",
        "USER root",
    ]
    assert "useradd" in text.splitlines()[2]
    assert parse(text).final.base == "python:3.11-slim"


def test_steps_default_base_is_e2b_base() -> None:
    assert dockerfile_from_steps(None, None, []).startswith("FROM e2bdev/base\n")
    assert dockerfile_from_steps(None, "my-tpl", []).startswith("FROM my-tpl\n")


@pytest.mark.parametrize(("steps", "needle"), [
    ([{"type": "HACK", "args": []}], "step 1: unknown type 'HACK'"),
    ([{"type": "COPY", "args": ["../etc/passwd", "/x"]}], "must be a path inside the context"),
    ([{"type": "COPY", "args": ["/etc/passwd", "/x"]}], "must be a path inside the context"),
    ([{"type": "ENV", "args": ["A"]}], "key, value pairs"),
    ([{"type": "ENV", "args": ["A B", "1"]}], "is not a variable name"),
    ([{"type": "WORKDIR", "args": ["/a\nRUN evil"]}], "on one line"),
    ([{"type": "RUN", "args": [" "]}], "no command"),
    ([{"type": "COPY", "args": ["a", "/b", "", "rwx"]}], "not octal"),
])
def test_bad_steps_are_refused(steps: list[dict], needle: str) -> None:
    with pytest.raises(StepsError) as caught:
        dockerfile_from_steps("debian:12", None, steps)
    assert needle in str(caught.value)
