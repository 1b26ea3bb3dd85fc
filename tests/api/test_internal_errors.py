"""A sandbox that the runtime cannot start answers a generic 500 naming an id, never the runtime's own words.

A real `sandhive serve --backend container` and a built-in template whose rootfs is missing: the node's start
fails on the host (the idmapped mount of a directory that is not there), with a message that names host paths.
The client must get `{"code": 500, "message": "internal error (id …); see the server log"}` and the server's
log the details under that id.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from e2b import Sandbox
from e2b.exceptions import SandboxException

from sandhive.templates.info import TemplateInfo
from sandhive.templates.layout import template_dir
from tests.api.rig import Server, container_server

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]
TEAM = "internal-errors"
GENERIC = re.compile(r"internal error \(id ([0-9a-f]{8})\); see the server log")


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with container_server("internal-errors", TEAM, "--pool-size", "0") as server:
        directory = template_dir(server.data_dir, "brokenroot")  # a built-in: no team owns it
        directory.mkdir(parents=True)
        TemplateInfo(id="brokenroot").write(directory)  # ... and no rootfs/ beside its template.json
        yield server


def test_a_runtime_failure_is_a_generic_500_with_an_id_the_log_has(server: Server) -> None:
    with server.client(server.key(TEAM)) as c:
        r = c.post("/v2/sandboxes", json={"templateID": "brokenroot", "timeout": 60})
    assert r.status_code == 500, r.text
    body = r.json()
    assert set(body) == {"code", "message"} and body["code"] == 500
    match = GENERIC.fullmatch(body["message"])
    assert match, body
    assert str(server.data_dir) not in r.text and "/" not in body["message"]
    log = server.output()
    line = next((line for line in log.splitlines() if match.group(1) in line), None)
    assert line is not None, log[-3000:]
    assert str(server.data_dir) in log  # the details (the missing rootfs) are in the server's log


def test_the_sdk_shows_the_generic_message(server: Server) -> None:
    with pytest.raises(SandboxException) as failure:
        Sandbox.create("brokenroot", timeout=60, api_key=server.key(TEAM), api_url=server.url,
                       sandbox_url=server.url)
    message = str(failure.value)
    assert GENERIC.search(message) and str(server.data_dir) not in message
