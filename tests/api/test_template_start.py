"""Start commands of templates built from Dockerfiles: CMD + EXPOSE is the start command with a port check as
its ready command; the build checks it in a real sandbox, so a start command that never gets ready fails the
build, not every sandbox. Driven through `sandhive.Template` and the released e2b SDK on a live server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox

from tests.api.pool_rig import e2b_env
from tests.api.rig import Server, container_server

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]
TEAM = "tplstart"


@pytest.fixture(scope="module")
def live() -> Iterator[Server]:
    with container_server("tplstart", TEAM) as server:
        yield server


@pytest.fixture(scope="module")
def key(live: Server) -> str:
    return live.key(TEAM)


def _through_proxy(live: Server, host: str, path: str = "/") -> httpx.Response:
    """GET http://<host><path> by connecting to the server with that Host header (Python does not resolve
    `*.localhost` to loopback)."""
    port = live.url.rsplit(":", 1)[1]
    return httpx.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host}, trust_env=False, timeout=10)


def test_a_dockerfile_cmd_with_expose_is_the_start_command(live: Server, key: str, tmp_path: Path) -> None:
    from sandhive import Template

    context = tmp_path / "web"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM base\nRUN echo '<h1>built</h1>' > /home/user/index.html\n"
                                        "EXPOSE 8000\nCMD python3 -m http.server 8000\n")
    logs: list[str] = []
    Template.build(Template().from_dockerfile(str(context / "Dockerfile")), alias="dockerweb",
                   api_key=key, api_url=live.url, on_build_logs=lambda entry: logs.append(str(entry)))
    assert any("checking the start command" in line for line in logs), logs
    with e2b_env(live, key):
        sandbox = Sandbox.create("dockerweb", timeout=120)
        try:
            first = sandbox.commands.run("curl -sf localhost:8000/index.html")
            assert first.stdout == "<h1>built</h1>\n"
            answer = _through_proxy(live, sandbox.get_host(8000), "/index.html")
            assert answer.status_code == 200 and answer.text == "<h1>built</h1>\n"
        finally:
            sandbox.kill()


def test_a_start_command_that_never_gets_ready_fails_the_build(live: Server, key: str, tmp_path: Path) -> None:
    from sandhive import Template
    from sandhive.sdk.template_models import BuildException

    context = tmp_path / "down"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM base\nEXPOSE 8000\nCMD echo not serving >&2; exit 4\n")
    with pytest.raises(BuildException) as failure:
        Template.build(Template().from_dockerfile(str(context / "Dockerfile")), alias="neverready",
                       api_key=key, api_url=live.url)
    assert "start command" in str(failure.value) and "exited with code 4" in str(failure.value)
    with httpx.Client(base_url=live.url, headers={"X-API-Key": key}, trust_env=False) as client:
        listed = [name for t in client.get("/templates").json() for name in [t["templateID"], *t["aliases"]]]
        assert client.get("/templates/neverready").json()["buildStatus"] == "error"
    assert "neverready" not in listed  # no template is left of a failed build
