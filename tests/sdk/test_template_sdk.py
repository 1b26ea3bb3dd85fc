"""`sandhive.Template` / `AsyncTemplate`: E2B's builder in Sandhive's SDK, and `from_dockerfile` (the extension).

The first tests need no server: what a chain records and sends, COPY hashes, `.dockerignore`, tars. The rest
build small templates on a live server (container backend) and start sandboxes from them.
"""

from __future__ import annotations

import json
import tarfile
import time
from pathlib import Path

import pytest

from sandhive import (
    AsyncSandbox,
    AsyncTemplate,
    BuildException,
    Sandbox,
    Template,
    TemplateException,
    wait_for_file,
    wait_for_port,
)
from sandhive.sdk.template_files import files_hash, matching_files, tar_files
from tests.sdk.conftest import Live


def make_context(root: Path) -> Path:
    (root / "app").mkdir(parents=True)
    (root / "app" / "main.py").write_text("print('hello from the context')\n")
    (root / "app" / "cache.pyc").write_bytes(b"\0compiled")
    (root / "secret.env").write_text("TOKEN=do-not-ship\n")
    (root / ".dockerignore").write_text("# not shipped\nsecret.env\n**/*.pyc\n")
    return root


# ---- no server ------------------------------------------------------------------------------------------------

def test_the_chain_records_e2bs_steps(tmp_path: Path) -> None:
    make_context(tmp_path)
    template = (Template(file_context_path=tmp_path).from_image("python:3.11-slim")
                .apt_install(["curl"]).pip_install("pandas").run_cmd(["a", "b"])
                .copy("app", "/app/", mode=0o755, user="root").set_envs({"K": "v"}).set_workdir("/app")
                .set_user("root").set_start_cmd("python3 -m http.server 8000", wait_for_port(8000)))
    body = json.loads(Template.to_json(template))
    assert body["fromImage"] == "python:3.11-slim" and body["force"] is False
    assert body["startCmd"] == "python3 -m http.server 8000" and ":8000" in body["readyCmd"]
    kinds = [(s["type"], s["args"]) for s in body["steps"]]
    assert kinds[0] == ("RUN", ["apt-get update && DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes "
                                "apt-get install -y curl", "root"])
    assert kinds[1] == ("RUN", ["pip install pandas", "root"]) and kinds[2] == ("RUN", ["a && b"])
    assert kinds[3] == ("COPY", ["app", "/app/", "root", "0755"]) and len(body["steps"][3]["filesHash"]) == 64
    assert kinds[4:] == [("ENV", ["K", "v"]), ("WORKDIR", ["/app"]), ("USER", ["root"])]
    assert Template().from_template("base").run_cmd("true")._template._serialize([])["fromTemplate"] == "base"
    assert Template()._serialize([])["fromImage"] == "e2bdev/base"  # E2B's default base


def test_copy_sources_must_stay_in_the_context(tmp_path: Path) -> None:
    for bad in ("/etc/passwd", "../outside", "a/../../b"):
        with pytest.raises(TemplateException):
            Template(file_context_path=tmp_path).from_image("debian:bookworm").copy(bad, "/x")
    with pytest.raises(TemplateException, match="no files match"):
        Template.to_json(Template(file_context_path=tmp_path).from_image("debian:bookworm").copy("missing", "/x"))


def test_hash_and_tar_honour_dockerignore(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx")
    ignore = [line for line in (ctx / ".dockerignore").read_text().splitlines() if not line.startswith("#")]
    names = {p.relative_to(ctx).as_posix() for p in matching_files(".", ctx, ignore)}
    assert names == {".dockerignore", "app", "app/main.py"}
    before = files_hash("app", "/app", ctx, ignore)
    assert files_hash("app", "/app", ctx, ignore) == before
    assert files_hash("app", "/elsewhere", ctx, ignore) != before  # the destination is part of the step
    (ctx / "app" / "cache.pyc").write_bytes(b"changed, but ignored")
    assert files_hash("app", "/app", ctx, ignore) == before
    (ctx / "app" / "main.py").write_text("print('changed')\n")
    assert files_hash("app", "/app", ctx, ignore) != before
    with tar_files(".", ctx, ignore) as tar_file, tarfile.open(fileobj=tar_file) as tar:
        assert sorted(tar.getnames()) == [".dockerignore", "app", "app/main.py"]


def test_from_dockerfile_appends_chained_steps(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim AS build\nUSER nobody\nFROM debian:bookworm\n"
                                         "USER builder\n")
    template = Template(file_context_path=tmp_path).from_dockerfile("Dockerfile").pip_install("x").set_envs({"A": "1"})
    text = Template.to_dockerfile(template)
    assert text.endswith('USER builder\nUSER root\nRUN ["/bin/sh", "-c", "pip install x"]\nUSER builder\n'
                         'ENV A="1"\n')
    assert Template(file_context_path=tmp_path).from_dockerfile("FROM debian:bookworm\n")._template._dockerfile
    with pytest.raises(TemplateException, match="not found"):
        Template(file_context_path=tmp_path).from_dockerfile("missing.Dockerfile")


def test_build_needs_a_name_and_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SANDHIVE_API_KEY", "E2B_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    template = Template(file_context_path=tmp_path).from_image("debian:bookworm")
    with pytest.raises(TemplateException, match="name"):
        Template.build(template)
    from sandhive import AuthenticationException

    with pytest.raises(AuthenticationException):
        Template.build(template, "x", api_url="http://127.0.0.1:9")


# ---- live server ----------------------------------------------------------------------------------------------

@pytest.mark.needs_backend
@pytest.mark.timeout(900)
def test_sync_build_from_a_dockerfile_and_its_context(live: Live, tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx")
    (ctx / "Dockerfile").write_text("FROM debian:bookworm-slim\nARG FLAVOUR=plain\nCOPY . /srv/ctx\n"
                                    "RUN echo \"$FLAVOUR\" > /flavour\nENV FROM_DOCKERFILE=yes\nWORKDIR /srv/ctx\n")
    template = Template(file_context_path=ctx).from_dockerfile("Dockerfile").run_cmd("touch /srv/ctx/extra",
                                                                                     user="root")
    logs = []
    started = time.monotonic()
    info = Template.build(template, "sdk-dockerfile", build_args={"FLAVOUR": "minty"}, on_build_logs=logs.append,
                          api_url=live.url, api_key=live.key)
    print(f"Dockerfile build: {time.monotonic() - started:.1f}s")
    assert len(info.template_id) == 20 and info.template_id.isalnum()  # random, as E2B's
    assert logs[0].message == "Build started" and logs[-1].message == "Build finished"
    assert any("Uploaded the build context" in entry.message for entry in logs)
    with Sandbox.create("sdk-dockerfile", timeout=120, api_url=live.url, api_key=live.key) as sbx:
        out = sbx.commands.run("cat /flavour; echo $FROM_DOCKERFILE; pwd; ls -A /srv/ctx; ls /srv/ctx/app").stdout
    lines = out.split()
    assert lines[:3] == ["minty", "yes", "/srv/ctx"], out
    assert ".dockerignore" in lines and "extra" in lines and "main.py" in lines
    assert "secret.env" not in out and "cache.pyc" not in out  # .dockerignore kept them off the server
    # unchanged: nothing is uploaded again and buildah's cache makes it quick
    logs.clear()
    started = time.monotonic()
    Template.build(template, "sdk-dockerfile", build_args={"FLAVOUR": "minty"}, on_build_logs=logs.append,
                   api_url=live.url, api_key=live.key)
    print(f"unchanged rebuild: {time.monotonic() - started:.1f}s")
    assert any("already cached" in entry.message for entry in logs)


@pytest.mark.needs_backend
@pytest.mark.timeout(900)
async def test_async_build_with_steps_and_a_start_command(live: Live, tmp_path: Path) -> None:
    (tmp_path / "tool.sh").write_text("#!/bin/sh\necho tool-ran\n")
    template = (AsyncTemplate(file_context_path=tmp_path).from_image("debian:bookworm-slim")
                .copy("tool.sh", "/usr/local/bin/tool", mode=0o755)
                .set_envs({"MODE": "async"})
                .set_start_cmd("sh -c 'echo started-$MODE > /tmp/started; sleep 3600'", wait_for_file("/tmp/started")))
    info = await AsyncTemplate.build(template, "sdk-async:first", api_url=live.url, api_key=live.key)
    assert len(info.template_id) == 20 and info.tags == ["first"]
    assert await AsyncTemplate.exists("sdk-async:first", api_url=live.url, api_key=live.key)
    assert [t.tag for t in await AsyncTemplate.get_tags("sdk-async", api_url=live.url, api_key=live.key)] == ["first"]
    tagged = await AsyncTemplate.assign_tags("sdk-async:first", "stable", api_url=live.url, api_key=live.key)
    assert tagged.tags == ["stable"] and tagged.build_id == info.build_id
    sbx = await AsyncSandbox.create("sdk-async:stable", timeout=120, api_url=live.url, api_key=live.key)
    try:
        result = await sbx.commands.run("tool; cat /tmp/started")
    finally:
        await sbx.kill()
    assert result.stdout.split() == ["tool-ran", "started-async"], result.stdout
    await AsyncTemplate.remove_tags("sdk-async", "stable", api_url=live.url, api_key=live.key)
    assert not await AsyncTemplate.exists("sdk-async:stable", api_url=live.url, api_key=live.key)


@pytest.mark.needs_backend
@pytest.mark.timeout(600)
def test_a_failed_build_says_where(live: Live, tmp_path: Path) -> None:
    template = Template(file_context_path=tmp_path).from_image("debian:bookworm-slim").run_cmd("true").run_cmd(
        "echo broken-step >&2; exit 4")
    with pytest.raises(BuildException) as failed:
        Template.build(template, "sdk-fails", api_url=live.url, api_key=live.key)
    error = failed.value
    assert error.step == "2" and "exit status 4" in str(error) and "broken-step" in str(error)
    assert "test_template_sdk.py" in str(error)  # the line that added the step
    assert any("broken-step" in entry.message for entry in error.log_entries)
