"""Dockerfile builds end to end: multi-stage, context files, the layer cache, failures that leave nothing."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from sandhive.node.userns import BASE
from sandhive.templates import builder, layout
from sandhive.templates.builder import BuildRequest, TemplateBuildError, build_template

from . import storage
from .conftest import write_context

# a leak check waits for the builds other test groups run (`storage.IDLE_TIMEOUT_S`)
pytestmark = pytest.mark.timeout(300 + 600)

FULL = """\
ARG GREETING=hello
FROM debian:bookworm-slim AS build
ARG GREETING
RUN echo "$GREETING from stage one" > /greeting
FROM debian:bookworm-slim
COPY --from=build /greeting /opt/greeting
COPY --chown=1000:1000 app/*.txt /opt/app/
ADD files.tar /opt/unpacked/
ENV MODE=test \\
    OTHER="two words"
WORKDIR /srv/work
LABEL purpose=test
EXPOSE 8000
CMD ["python3", "-m", "http.server", "8000"]
"""


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _build(data_dir: Path, template_id: str, dockerfile: str, context: Path, **kwargs: object) -> tuple:
    lines: list[str] = []
    info = build_template(data_dir, BuildRequest(template_id=template_id, dockerfile=dockerfile, context=context,
                                                 **kwargs), log=lines.append)
    return info, lines


def _leftovers(data_dir: Path, containers_before: set[str]) -> list[str]:
    """What a build must never leave: temp dirs, buildah working containers, build network namespaces.
    (The storage and the build networks are host-wide: counted with no build running.)"""
    found = [p.name for p in (data_dir / "templates").glob(".tmp-*")] if (data_dir / "templates").exists() else []
    with storage.no_build_running():
        found += [f"container {c}" for c in storage.containers() - containers_before]
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        found += [line.split()[0] for line in netns.splitlines() if line.startswith("sandhive-b")]
    return found


def test_multi_stage_context_and_config(data_dir: Path, tmp_path: Path) -> None:
    before = storage.containers()
    context = write_context(tmp_path / "ctx", {
        "app/a.txt": "A\n", "app/b.txt": "B\n", "app/secret.txt": "never copied\n",
        ".dockerignore": "app/secret.txt\n",
        "files.tar": _tar({"inner/one.txt": b"from the tar\n"}),
    })
    info, lines = _build(data_dir, "full", FULL, context)
    rootfs = layout.template_dir(data_dir, "full") / "rootfs"
    assert (rootfs / "opt/greeting").read_text() == "hello from stage one\n"
    assert sorted(p.name for p in (rootfs / "opt/app").iterdir()) == ["a.txt", "b.txt"]  # .dockerignore held
    assert (rootfs / "opt/app/a.txt").stat().st_uid == BASE + 1000  # --chown, then shifted into the range
    assert (rootfs / "opt/unpacked/inner/one.txt").read_text() == "from the tar\n"  # ADD unpacks a local tar
    assert (rootfs / "etc/passwd").stat().st_uid == BASE
    assert "user:x:1000:1000" in (rootfs / "etc/passwd").read_text()
    assert (rootfs / ".sandhive").is_dir()
    assert info.env["MODE"] == "test" and info.env["OTHER"] == "two words"
    assert not any(k in info.env for k in builder.CA_ENV)  # the build's CA variables end with the build
    assert info.default_workdir == "/srv/work" and info.default_user == "user"
    assert (rootfs / "srv/work").stat().st_uid == BASE + 1000  # the WORKDIR is the default user's
    assert info.start_cmd == "python3 -m http.server 8000"
    assert info.ready_cmd is not None and "8000" in info.ready_cmd
    assert any("STEP" in line and "COPY --from=build" in line for line in lines)
    assert json.loads((layout.template_dir(data_dir, "full") / "template.json").read_text())["id"] == "full"
    assert _leftovers(data_dir, before) == []


def test_cache_unchanged_rebuild_and_changed_step(data_dir: Path, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {})
    text = "FROM debian:bookworm-slim\nRUN echo one > /one\nRUN echo two > /two\nRUN echo three > /three\n"
    first, _ = _build(data_dir, "cached", text, context)
    again, lines = _build(data_dir, "cached", text, context)
    assert again.build["cached"] is True and again.build["image_id"] == first.build["image_id"]
    assert sum("Using cache" in line for line in lines) >= 3
    changed, lines = _build(data_dir, "cached", text.replace("three", "THREE"), context)
    assert changed.build["cached"] is False and changed.build["image_id"] != first.build["image_id"]
    steps = [line for line in lines if "STEP" in line or "Using cache" in line]
    # one and two come from the cache; only the changed third step runs again
    assert sum("Using cache" in line for line in lines) >= 2
    assert "echo THREE" in "\n".join(steps)
    rootfs = layout.template_dir(data_dir, "cached") / "rootfs"
    assert (rootfs / "THREE").read_text() == "THREE\n" and not (rootfs / "three").exists()


def test_failing_run_reports_exit_status_and_leaves_nothing(data_dir: Path, tmp_path: Path) -> None:
    before = storage.containers()
    context = write_context(tmp_path / "ctx", {})
    with pytest.raises(TemplateBuildError) as caught:
        _build(data_dir, "broken", "FROM debian:bookworm-slim\nRUN echo last words from the step; exit 3\n",
               context)
    error = caught.value
    assert "exit status 3" in error.message
    assert error.step is not None and "RUN echo last words" in error.step
    assert any("last words from the step" in line for line in error.log_tail)
    assert layout.read_built(data_dir, "broken") is None
    assert not (layout.template_dir(data_dir, "broken")).exists()
    assert _leftovers(data_dir, before) == []


def test_missing_copy_source(data_dir: Path, tmp_path: Path) -> None:
    before = storage.containers()
    context = write_context(tmp_path / "ctx", {"present.txt": "x"})
    with pytest.raises(TemplateBuildError) as caught:
        _build(data_dir, "nocopy", "FROM debian:bookworm-slim\nCOPY absent.txt /x\n", context)
    assert "COPY" in str(caught.value) and "absent.txt" in "\n".join(caught.value.log_tail + [caught.value.message,
                                                                                          caught.value.step or ""])
    assert layout.read_built(data_dir, "nocopy") is None
    assert _leftovers(data_dir, before) == []


@pytest.mark.parametrize(("dockerfile", "needle"), [
    ("FROM ubuntu:22.04\nRUN true\n", "line 1: FROM ubuntu:22.04"),
    ("FROM debian:bookworm-slim\nFROBNICATE\n", "line 2: unknown instruction"),
    ("FROM docker-archive:missing.tar\n", "does not exist"),
])
def test_bad_input_fails_before_running(data_dir: Path, tmp_path: Path, dockerfile: str, needle: str) -> None:
    with pytest.raises(TemplateBuildError) as caught:
        _build(data_dir, "bad", dockerfile, write_context(tmp_path / "ctx", {}))
    assert needle in str(caught.value)
    assert layout.read_built(data_dir, "bad") is None


def test_invalid_template_name(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TemplateBuildError, match="invalid template name"):
        _build(data_dir, "Bad/Name", "FROM debian:12\n", write_context(tmp_path / "ctx", {}))


def test_rebuild_keeps_the_tree_running_sandboxes_use(data_dir: Path, tmp_path: Path) -> None:
    """A sandbox (here: its overlay, mounted as the container backend does) keeps its files across a rebuild;
    the replaced tree is removed by a later build once nothing uses it."""
    from sandhive.node.storage import SandboxDisk

    context = write_context(tmp_path / "ctx", {})
    _build(data_dir, "live", "FROM debian:bookworm-slim\nRUN echo v1 > /version\n", context)
    disk = SandboxDisk(tmp_path / "sandbox")
    disk.create(layout.template_dir(data_dir, "live") / "rootfs", 16)
    try:
        _build(data_dir, "live", "FROM debian:bookworm-slim\nRUN echo v2 > /version\n", context)
        assert (disk.rootfs / "version").read_text() == "v1\n"  # the running sandbox still sees its build
        assert (layout.template_dir(data_dir, "live") / "rootfs/version").read_text() == "v2\n"
        assert len(list((data_dir / "templates").glob(".old-live-*"))) == 1
    finally:
        disk.destroy()
    _build(data_dir, "live", "FROM debian:bookworm-slim\nRUN echo v3 > /version\n", context)
    assert list((data_dir / "templates").glob(".old-live-*")) == []
