"""E2B's template-build API (docs/wire.md §2.6): register, upload, start, poll; aliases, tags, delete.

The first part runs against a control-plane server (`--backend none`): names, ownership, uploads, errors. The
second builds real templates with the released e2b SDK's `Template` builder against a server with the
container backend, and starts sandboxes from them. Builds are few and small (`debian:bookworm-slim` plus a
step or two); the first one on a machine also builds the local Debian base (mmdebstrap, ~30 s, then cached).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandhive.api.tokens import load_secret
from sandhive.templates.uploads import UploadedFiles
from tests.api.rig import Server, container_server

H1 = hashlib.sha256(b"one").hexdigest()


def tar_of(members: dict[str, bytes], gzip: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gzip else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def register(c: httpx.Client, name: str | None, **extra: object) -> dict:
    r = c.post("/v3/templates", json={**({"name": name} if name else {}), **extra})
    assert r.status_code == 202, r.text
    return r.json()


# ---- control plane only ---------------------------------------------------------------------------------------

def test_register_answers_e2b_shape_and_reuses_the_template(server: Server, api_key: str) -> None:
    with server.client(api_key) as c:
        first = register(c, "reg-tpl:v1", cpuCount=1, memoryMB=512)
        again = register(c, "reg-tpl")
    assert set(first) == {"templateID", "buildID", "public", "names", "tags", "aliases"}
    assert len(first["templateID"]) == 20 and first["templateID"].isalnum()  # random, as E2B's
    assert first["tags"] == ["v1"] and first["aliases"] == ["reg-tpl"] and first["public"] is False
    assert first["names"] == ["default/reg-tpl"]  # E2B's team-slug/name
    assert uuid.UUID(first["buildID"])
    assert again["templateID"] == first["templateID"] and again["buildID"] != first["buildID"]
    assert again["tags"] == ["default"]


def test_a_namespaced_name_is_in_the_teams_own_namespace(server: Server, api_key: str) -> None:
    with server.client(api_key) as c:
        answer = register(c, "default/thing.v2")
        assert len(answer["templateID"]) == 20 and answer["templateID"].isalnum()
        assert answer["aliases"] == ["thing.v2"] and answer["names"] == ["default/thing.v2"]
        r = c.post("/v3/templates", json={"name": "acme/thing.v2"})  # another namespace is another team's
        assert r.status_code == 400 and "default/name" in r.json()["message"]


@pytest.mark.parametrize("name", ["Bad Name!", "UPPER", "-dash-first", "a:b:c", "x:Tag", "a" * 80, "../up"])
def test_bad_names_are_400(server: Server, api_key: str, name: str) -> None:
    with server.client(api_key) as c:
        r = c.post("/v3/templates", json={"name": name})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == 400 and "invalid" in r.json()["message"]


def test_bad_sizes_are_400(server: Server, api_key: str) -> None:
    with server.client(api_key) as c:
        r = c.post("/v3/templates", json={"name": "sizes", "memoryMB": 16})
    assert r.status_code == 400 and "memoryMB" in r.json()["message"]


def test_names_belong_to_the_team_that_registered_them(server: Server, api_key: str) -> None:
    other = server.key("other-team")
    with server.client(api_key) as mine, server.client(other) as theirs:
        template_id = register(mine, "owned-tpl")["templateID"]
        assert mine.get("/templates/aliases/owned-tpl").json() == {"templateID": template_id, "public": False}
        for name, path in [("owned-tpl", "/templates/aliases/owned-tpl"), (template_id, "/templates/aliases/{}"),
                           ("owned-tpl", "/templates/owned-tpl"), (template_id, "/templates/{}"),
                           (template_id, "/templates/{}/tags")]:
            r = theirs.get(path.format(template_id))  # another team's private template looks like a missing one
            assert r.status_code == 404 and r.json()["message"] == f"template '{name}' not found", r.text
        assert theirs.delete("/templates/owned-tpl").status_code == 404
        assert theirs.delete(f"/templates/{template_id}").status_code == 404
        assert theirs.patch(f"/templates/{template_id}", json={"public": True}).status_code == 404
        # names are per team: the other team's `owned-tpl` is another template
        assert register(theirs, "owned-tpl")["templateID"] != template_id
        assert mine.get("/templates/aliases/owned-tpl").json()["templateID"] == template_id
        assert mine.get("/templates/aliases/never-made").status_code == 404
        # public: the other team sees it by its full name, but cannot change it
        r = mine.patch(f"/templates/{template_id}", json={"public": True})
        assert r.status_code == 200 and r.json() == {"templateID": template_id, "public": True,
                                                     "names": ["default/owned-tpl"]}
        r = theirs.get("/templates/aliases/default/owned-tpl")
        assert r.status_code == 403 and r.json()["message"] == ("template 'default/owned-tpl' is another "
                                                                "team's public template")
        assert theirs.get(f"/templates/{template_id}").json()["owned"] is False
        assert theirs.delete(f"/templates/{template_id}").status_code == 403
        assert mine.patch(f"/templates/{template_id}", json={"public": False}).json()["public"] is False
        assert theirs.get(f"/templates/{template_id}").status_code == 404


@pytest.mark.parametrize("name", ["base", "code-interpreter-v1", "base:v2"])
def test_built_in_names_cannot_be_taken(server: Server, api_key: str, name: str) -> None:
    with server.client(api_key) as c:
        r = c.post("/v3/templates", json={"name": name})
    assert r.status_code == 409 and "built-in" in r.json()["message"], r.text


def test_needs_an_api_key(server: Server) -> None:
    with server.client() as c:
        r = c.post("/v3/templates", json={"name": "x"})
    assert r.status_code == 401 and r.json()["code"] == 401


def test_upload_flow(server: Server, api_key: str) -> None:
    with server.client(api_key) as c:
        template_id = register(c, "upload-tpl")["templateID"]
        r = c.get(f"/templates/{template_id}/files/{H1}")
        assert r.status_code == 201 and r.json()["present"] is False
        url = r.json()["url"]
        assert url.startswith(server.url + f"/templates/{template_id}/files/{H1}/upload?")
        put = httpx.put(url, content=tar_of({"app/main.py": b"print(1)\n", "README": b"hi\n"}), trust_env=False)
        assert put.status_code == 204, put.text
        assert c.get(f"/templates/{template_id}/files/{H1}").json() == {"present": True}
    team = server.store.authenticate(api_key)
    unpacked = server.data_dir / "template-files" / str(team) / H1
    assert (unpacked / "app/main.py").read_bytes() == b"print(1)\n"


@pytest.mark.parametrize("member", ["../escape.txt", "/abs/escape.txt", "a/../../escape.txt"])
def test_uploads_that_escape_are_refused(server: Server, api_key: str, member: str) -> None:
    digest = hashlib.sha256(member.encode()).hexdigest()
    with server.client(api_key) as c:
        template_id = register(c, "escape-tpl")["templateID"]
        url = c.get(f"/templates/{template_id}/files/{digest}").json()["url"]
        put = httpx.put(url, content=tar_of({"ok.txt": b"fine", member: b"evil"}, gzip=False), trust_env=False)
        assert put.status_code == 400 and "refusing the upload" in put.json()["message"], put.text
        assert c.get(f"/templates/{template_id}/files/{digest}").json()["present"] is False
    assert not list(server.data_dir.rglob("escape.txt"))


def test_absolute_symlink_is_kept_as_a_link(server: Server, api_key: str) -> None:
    """E2B copies links as links (issue 13 item 7); the unpacking chroot keeps them from being followed."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("etc-link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    digest = hashlib.sha256(b"symlink").hexdigest()
    with server.client(api_key) as c:
        template_id = register(c, "link-tpl")["templateID"]
        url = c.get(f"/templates/{template_id}/files/{digest}").json()["url"]
    put = httpx.put(url, content=buf.getvalue(), trust_env=False)
    assert put.status_code == 204, put.text
    unpacked = server.data_dir / "template-files" / str(server.store.authenticate(api_key)) / digest
    assert os.readlink(unpacked / "etc-link") == "/etc/passwd"


def test_upload_urls_are_signed_and_expire(server: Server, api_key: str) -> None:
    digest = hashlib.sha256(b"signed").hexdigest()
    with server.client(api_key) as c:
        template_id = register(c, "signed-tpl")["templateID"]
        url = c.get(f"/templates/{template_id}/files/{digest}").json()["url"]
    forged = url.replace("signature=", "signature=0")
    assert httpx.put(forged, content=tar_of({"a": b"b"}), trust_env=False).status_code == 403
    other_hash = url.replace(digest, hashlib.sha256(b"two").hexdigest())
    assert httpx.put(other_hash, content=tar_of({"a": b"b"}), trust_env=False).status_code == 403
    files = UploadedFiles(server.data_dir, load_secret(server.data_dir))
    expired = files.upload_url(server.url, template_id, digest).split("?")[0]
    past = int(time.time()) - 10
    query = f"?expires={past}&signature={files._signature(template_id, digest, past)}"
    r = httpx.put(expired + query, content=tar_of({"a": b"b"}), trust_env=False)
    assert r.status_code == 403 and "expired" in r.json()["message"]


def test_not_a_tar_and_bad_hashes(server: Server, api_key: str) -> None:
    with server.client(api_key) as c:
        template_id = register(c, "nottar-tpl")["templateID"]
        assert c.get(f"/templates/{template_id}/files/not-a-hash").status_code == 400
        url = c.get(f"/templates/{template_id}/files/{hashlib.sha256(b'x3').hexdigest()}").json()["url"]
        r = httpx.put(url, content=b"plain text, no tar", trust_env=False)
        assert r.status_code == 400 and "not a tar" in r.json()["message"]
        assert c.get(f"/templates/never-registered/files/{H1}").status_code == 404


def test_build_status_and_unknown_builds(server: Server, api_key: str) -> None:
    with server.client(api_key) as c:
        answer = register(c, "status-tpl")
        r = c.get(f"/templates/status-tpl/builds/{answer['buildID']}/status", params={"logsOffset": 0})
        assert r.status_code == 200
        assert r.json() == {"templateID": answer["templateID"], "buildID": answer["buildID"], "status": "waiting",
                            "logs": [], "logEntries": []}
        r = c.get(f"/templates/status-tpl/builds/{uuid.uuid4()}/status")
        assert r.status_code == 404 and "not found" in r.json()["message"]
        assert c.get("/templates/status-tpl/builds/garbage/status").status_code == 404
        r = c.post(f"/v2/templates/status-tpl/builds/{uuid.uuid4()}", json={"fromImage": "debian:bookworm-slim"})
        assert r.status_code == 404
        # --backend none has no registry: starting a build says so
        r = c.post(f"/v2/templates/status-tpl/builds/{answer['buildID']}", json={"fromImage": "debian:bookworm"})
        assert r.status_code == 500 and "--backend none" in r.json()["message"]


def test_get_and_delete_a_registered_template(server: Server, api_key: str) -> None:
    with server.client(api_key) as c:
        template_id = register(c, "detail-tpl", cpuCount=1, memoryMB=256)["templateID"]
        detail = c.get("/templates/detail-tpl").json()
        assert detail["templateID"] == template_id and detail["buildStatus"] == "waiting"
        assert detail["createdBy"] is None and detail["lastSpawnedAt"] is None and detail["owned"] is True
        assert [b["status"] for b in detail["builds"]] == ["waiting"] and detail["cpuCount"] == 1
        assert c.delete("/templates/detail-tpl").status_code == 204
        assert c.get("/templates/detail-tpl").status_code == 404
        assert c.delete("/templates/detail-tpl").status_code == 404


# ---- real builds ----------------------------------------------------------------------------------------------

TEAM = "templates"


@pytest.fixture(scope="module")
def live() -> Iterator[Server]:
    with container_server("tpl", TEAM) as server:
        yield server


@pytest.fixture(scope="module")
def e2b_env(live: Server) -> Iterator[str]:
    key = live.key(TEAM)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("E2B_API_URL", live.url)
        mp.setenv("E2B_SANDBOX_URL", live.url)
        mp.setenv("E2B_API_KEY", key)
        mp.delenv("E2B_DEBUG", raising=False)
        mp.delenv("E2B_DOMAIN", raising=False)
        yield key


@pytest.mark.needs_backend
@pytest.mark.timeout(900)
def test_e2b_template_builder_builds_and_a_sandbox_starts_from_it(e2b_env: str, live: Server,
                                                                   tmp_path: Path) -> None:
    from e2b import Sandbox, Template

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "hello.txt").write_text("copied by the e2b SDK\n")
    template = (Template(file_context_path=str(tmp_path)).from_image("debian:bookworm-slim")
                .copy("data/", "/opt/data/")
                .run_cmd("echo built-as-$(whoami) > /built.txt && mkdir -p /work", user="root")
                .set_envs({"GREETING": "hello-env"})
                .set_workdir("/work"))
    logs = []
    started = time.monotonic()
    info = Template.build(template, "e2b-built:v1", cpu_count=1, memory_mb=512, on_build_logs=logs.append)
    print(f"e2b SDK build took {time.monotonic() - started:.1f}s")
    assert len(info.template_id) == 20 and info.template_id.isalnum() and info.tags == ["v1"]
    messages = [entry.message for entry in logs]
    assert any("Uploaded 'data/'" in m for m in messages), messages
    assert any(m.startswith("STEP ") for m in messages) and any("is ready" in m for m in messages)
    assert Template.exists("e2b-built") and not Template.exists("e2b-never-built")
    assert [t.tag for t in Template.get_tags("e2b-built")] == ["v1"]

    for name in ("e2b-built", "e2b-built:v1"):
        sbx = Sandbox.create(name, timeout=120)
        try:
            result = sbx.commands.run("cat /built.txt /opt/data/hello.txt; echo $GREETING; pwd; whoami")
        finally:
            sbx.kill()
        assert result.stdout.split("\n")[:5] == ["built-as-root", "copied by the e2b SDK", "hello-env", "/work",
                                                 "user"], result.stdout
    with live.client(e2b_env) as c:
        detail = c.get("/templates/e2b-built").json()
        assert detail["buildStatus"] == "ready" and detail["builds"][0]["buildID"] == info.build_id
        assert detail["defaultWorkdir"] == "/work" and detail["tags"] == ["v1"]
        listed = {t["templateID"] for t in c.get("/templates").json()}
        assert info.template_id in listed
        status = c.get(f"/templates/e2b-built/builds/{info.build_id}/status", params={"logsOffset": 2, "limit": 3})
        assert status.json()["status"] == "ready" and len(status.json()["logEntries"]) == 3


@pytest.mark.needs_backend
@pytest.mark.timeout(600)
def test_a_failing_run_step_fails_the_build_with_its_exit_code_and_last_lines(e2b_env: str, live: Server) -> None:
    from e2b import Template
    from e2b.exceptions import BuildException

    template = Template().from_image("debian:bookworm-slim").run_cmd("echo about-to-fail >&2; exit 7")
    with pytest.raises(BuildException) as failed:
        Template.build(template, "e2b-fails")
    message = str(failed.value)
    assert "exit status 7" in message and "about-to-fail" in message and "step 1" in message, message
    with live.client(e2b_env) as c:
        build = c.get("/templates/e2b-fails").json()["builds"][0]
        status = c.get(f"/templates/e2b-fails/builds/{build['buildID']}/status").json()
    assert status["status"] == "error" and status["reason"]["step"] == "1"
    assert any("about-to-fail" in e["message"] for e in status["reason"]["logEntries"])
    with live.client(e2b_env) as c:
        template_id = c.get("/templates/aliases/e2b-fails").json()["templateID"]
    assert not (live.data_dir / "templates" / template_id).exists()  # no partial template
    assert not [p for p in (live.data_dir / "templates").iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.needs_backend
@pytest.mark.timeout(600)
def test_unknown_base_and_bad_dockerfile(e2b_env: str, live: Server) -> None:
    from e2b import Template
    from e2b.exceptions import BuildException

    with pytest.raises(BuildException) as failed:
        Template.build(Template().from_image("no-such-image:1.0").run_cmd("true"), "e2b-nobase")
    assert "unknown base image 'no-such-image:1.0'" in str(failed.value)
    with live.client(e2b_env) as c:
        build_id = register(c, "df-syntax")["buildID"]
        r = c.post(f"/v2/templates/df-syntax/builds/{build_id}", json={"dockerfile": "FROM debian:bookworm\nFOO x\n"})
        assert r.status_code == 400 and "line 2: unknown instruction 'FOO'" in r.json()["message"]
        status = c.get(f"/templates/df-syntax/builds/{build_id}/status").json()
        assert status["status"] == "error" and "FOO" in status["reason"]["message"]
        again = c.post(f"/v2/templates/df-syntax/builds/{build_id}", json={"dockerfile": "FROM debian:bookworm\n"})
        assert again.status_code == 409
        build_id = register(c, "no-files")["buildID"]
        r = c.post(f"/v2/templates/no-files/builds/{build_id}",
                   json={"fromImage": "debian:bookworm-slim", "steps": [
                       {"type": "COPY", "args": ["x", "/x"], "filesHash": hashlib.sha256(b"never").hexdigest()}]})
        assert r.status_code == 400 and "were not uploaded" in r.json()["message"]


@pytest.mark.needs_backend
@pytest.mark.timeout(600)
def test_delete_waits_for_sandboxes_and_aliases_are_unique(e2b_env: str, live: Server) -> None:
    from e2b import Sandbox, Template

    built = Template.build(Template().from_image("debian:bookworm-slim").run_cmd("touch /tmp/marker"), "e2b-del")
    with live.client(e2b_env) as c:
        r = c.put("/templates/e2b-del/aliases", json={"aliases": ["e2b-del", "del-alias"]})
        assert r.status_code == 200 and r.json() == {"aliases": ["e2b-del", "del-alias"]}
        assert c.put("/templates/e2b-del/aliases", json={"aliases": ["Bad Alias"]}).status_code == 400
        if c.get("/templates/aliases/e2b-built").status_code == 200:
            r = c.put("/templates/e2b-del/aliases", json={"aliases": ["e2b-built"]})
            assert r.status_code == 400 and "already" in r.json()["message"]
        sbx = Sandbox.create("del-alias", timeout=120)
        try:
            r = c.delete("/templates/e2b-del")
            assert r.status_code == 409 and "kill them first" in r.json()["message"]
        finally:
            sbx.kill()
        assert c.delete("/templates/del-alias").status_code == 204
        assert c.get("/templates/aliases/del-alias").status_code == 404
        r = c.post("/v2/sandboxes", json={"templateID": "e2b-del"})
        assert r.status_code == 404
    assert not (live.data_dir / "templates" / built.template_id).exists()
    assert os.path.isdir(live.data_dir / "templates")
