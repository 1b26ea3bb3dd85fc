"""Templates across teams (issue 12, attack 3): another team's template is neither listed, nor usable, nor able
to squat a name other teams' SDKs ask for.

Before the fix, `GET /templates` listed every team's templates and start commands, any team could start
sandboxes from any template by id or name, and the first team to register `code-interpreter-v1` (the default of
E2B's code-interpreter SDK) got every other team's plain creates of it. Team A here is the attacker-owner and
team B the other tenant; both hold ordinary API keys of one live server. The checks are on the host side too:
the store records no sandbox of team B made from team A's private template.

Promise: a team's templates are its own: other teams cannot list, inspect, start or build FROM them unless the
owner marks them public, and no team can take a built-in's name (docs/security.md).
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.api.rig import create_key
from tests.hostile.conftest import Live

DOCKERFILE = "FROM base\nENV SANDHIVE_TEMPLATE_OWNER=team-a\n"  # the cheapest real build: one layer on `base`
BUILD_TIMEOUT_S = 600


def _register(c: httpx.Client, name: str) -> httpx.Response:
    return c.post("/v3/templates", json={"name": name, "cpuCount": 1, "memoryMB": 512})


def _build(c: httpx.Client, name: str) -> str:
    """Register and build `name` from DOCKERFILE; its template id once ready."""
    r = _register(c, name)
    assert r.status_code == 202, r.text
    template_id, build_id = r.json()["templateID"], r.json()["buildID"]
    r = c.post(f"/v2/templates/{template_id}/builds/{build_id}", json={"dockerfile": DOCKERFILE})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    while True:
        status = c.get(f"/templates/{template_id}/builds/{build_id}/status").json()
        if status["status"] in ("ready", "error"):
            break
        assert time.monotonic() < deadline, f"build of {name} still {status['status']} after {BUILD_TIMEOUT_S}s"
        time.sleep(0.5)
    assert status["status"] == "ready", status.get("reason")
    return template_id


def _b_sandboxes_of(live: Live, team_b: str, template_id: str) -> list[str]:
    """Host side: sandboxes the store has of team B made from `template_id` (any state)."""
    with live.server.store._read() as s:  # noqa: SLF001 — the test reads the server's own database
        from sqlalchemy import select

        from sandhive.store import SandboxRecord

        return list(s.scalars(select(SandboxRecord.sandbox_id).where(SandboxRecord.team_id == team_b,
                                                                     SandboxRecord.template_id == template_id)))


@pytest.mark.timeout(1200)
def test_another_teams_template_is_invisible_unusable_and_built_in_names_are_reserved(live: Live) -> None:
    suffix = uuid.uuid4().hex[:6]  # one live server per session: keep this test's teams and names its own
    key_a, key_b = live.server.key(f"team-a-{suffix}"), live.server.key(f"team-b-{suffix}")
    team_b = live.server.store.authenticate(key_b)
    assert team_b is not None
    created: list[str] = []
    with live.server.client(key_a) as a, live.server.client(key_b) as b:
        try:
            # the squat: a team registering the code-interpreter SDK's default name, or the server's `base`
            for name in ("code-interpreter-v1", "base"):
                r = _register(a, name)
                assert r.status_code == 409 and "built-in" in r.json()["message"], r.text
                assert r.json()["code"] == 409
            # the name is the server's built-in (built on first use: minutes from PyPI, seconds from the tree
            # cache), never some team's template answering to it
            r = b.post("/v2/sandboxes", json={"templateID": "code-interpreter-v1", "timeout": 60}, timeout=900)
            assert r.status_code == 201, r.text
            created.append(r.json()["sandboxID"])
            assert r.json()["templateID"] == "code-interpreter-v1"

            a_id = _build(a, f"private-{suffix}")
            # B does not see A's template: not listed, no detail, no alias, not by id
            assert a_id not in {t["templateID"] for t in b.get("/templates").json()}
            assert a_id in {t["templateID"] for t in a.get("/templates").json()}
            for path, name in [(f"/templates/{a_id}", a_id), (f"/templates/aliases/private-{suffix}",
                                                              f"private-{suffix}"),
                               (f"/templates/aliases/{a_id}", a_id)]:
                r = b.get(path)
                assert r.status_code == 404 and r.json() == {"code": 404, "message": f"template '{name}' not found"}
            # B cannot start it, by id or by name
            for ref in (a_id, f"private-{suffix}", f"team-a-{suffix}/private-{suffix}"):
                r = b.post("/v2/sandboxes", json={"templateID": ref, "timeout": 60})
                if r.status_code == 201:
                    created.append(r.json()["sandboxID"])
                assert r.status_code == 404 and r.json()["message"] == f"template '{ref}' not found", r.text
            # nor build FROM it (the builder itself knows no teams)
            r = _register(b, f"from-a-{suffix}")
            assert r.status_code == 202
            start = b.post(f"/v2/templates/{r.json()['templateID']}/builds/{r.json()['buildID']}",
                           json={"dockerfile": f"FROM {a_id}\nENV X=1\n"})
            assert start.status_code == 400 and f"unknown base image '{a_id}'" in start.json()["message"]
            assert _b_sandboxes_of(live, team_b, a_id) == []  # host side: nothing of B ever ran A's rootfs
            # B cannot change or delete it either
            assert b.patch(f"/templates/{a_id}", json={"public": True}).status_code == 404
            assert b.delete(f"/templates/{a_id}").status_code == 404

            # A publishes it: B may start it by its full name, and still cannot change it
            r = a.patch(f"/templates/{a_id}", json={"public": True})
            assert r.status_code == 200 and r.json()["public"] is True
            r = b.post("/v2/sandboxes", json={"templateID": f"team-a-{suffix}/private-{suffix}", "timeout": 60})
            assert r.status_code == 201, r.text
            created.append(r.json()["sandboxID"])
            assert r.json()["templateID"] == a_id
            assert b.delete(f"/templates/{a_id}").status_code == 403
            # node status: a team sees its own templates' pools and the built-ins', the operator's admin key all
            admin = create_key(live.server.data_dir, f"operator-{suffix}", "--admin")
            with live.server.client(admin) as op:
                every = {p["templateID"] for p in op.get("/sandhive/node").json()["pools"]}
            b_pools = {p["templateID"] for p in b.get("/sandhive/node").json()["pools"]}
            a_pools = {p["templateID"] for p in a.get("/sandhive/node").json()["pools"]}
            print(f"pools: admin {sorted(every)}, team A {sorted(a_pools)}, team B {sorted(b_pools)}")
            assert a_id in every and a_id in a_pools and a_id not in b_pools
            # a bare name still means B's own templates or built-ins first, never A's (public or not)
            r = b.post("/v2/sandboxes", json={"templateID": f"private-{suffix}", "timeout": 60})
            assert r.status_code == 404
        finally:
            for sandbox_id in created:
                b.delete(f"/sandboxes/{sandbox_id}")
