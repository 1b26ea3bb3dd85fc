"""Issue 13 item 10: E2B routes Sandhive does not implement answer what E2B answers for a feature that is not
enabled (400 "use of … is not enabled", naming it), so the SDK raises a clear SandboxException instead of
"Sandbox … not found"; a path no E2B client calls answers 404 `no such route: METHOD PATH`."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from e2b import AsyncSandbox, Sandbox
from e2b.exceptions import SandboxException, SandboxNotFoundException

from sandhive.api.unsupported import UNSUPPORTED
from tests.conformance.conftest import Live

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]


def _not_enabled(exc: BaseException, feature: str) -> bool:
    return (isinstance(exc, SandboxException) and not isinstance(exc, SandboxNotFoundException)
            and f"400: use of {feature} is not enabled" in str(exc))


def test_snapshots_on_backends_without_memory_snapshots_answer_409_sync(live: Live) -> None:
    sbx = Sandbox.create(timeout=120)
    try:
        if live.server.backend != "container":  # snapshots with memory: container only (docs/persistence.md)
            with pytest.raises(SandboxException) as snapshot:
                sbx.create_snapshot()
            assert "409" in str(snapshot.value) and "docs/persistence.md" in str(snapshot.value), snapshot.value
            with pytest.raises(SandboxException) as forked:
                sbx.fork(count=1)
            assert "409" in str(forked.value) and "docs/persistence.md" in str(forked.value), forked.value
        assert sbx.is_running() and sbx.commands.run("echo still here").stdout == "still here\n"
    finally:
        sbx.kill()


def test_snapshot_listing_works_on_every_backend_async() -> None:
    async def scenario() -> tuple[list, bool]:
        sbx = await AsyncSandbox.create(timeout=120)
        try:
            listed = await sbx.list_snapshots().next_items()  # listing works on every backend (none here)
            return listed, await sbx.is_running()
        finally:
            await sbx.kill()

    listed, running = asyncio.run(scenario())
    assert listed == []
    assert running


def test_every_unimplemented_route_names_its_feature(live: Live) -> None:
    with httpx.Client(base_url=live.url, trust_env=False, timeout=30) as client:
        for entry in UNSUPPORTED:
            path = entry.path.replace("{", "x").replace("}", "")  # any value of each path parameter
            keyless = client.request(entry.method, path)
            assert keyless.status_code == 401, (entry, keyless.text)  # the key is checked first, as E2B does
            answer = client.request(entry.method, path, headers={"X-API-Key": live.key})
            assert (answer.status_code, answer.json()) == (400, {"code": 400, "message": entry.message}), entry
            assert f"use of {entry.feature} is not enabled" in entry.message


def test_an_unknown_route_is_a_404_naming_it(live: Live) -> None:
    with httpx.Client(base_url=live.url, trust_env=False, timeout=30) as client:
        answer = client.post("/v9/no/such/thing", headers={"X-API-Key": live.key})
    assert answer.status_code == 404
    assert answer.json() == {"code": 404, "message": "no such route: POST /v9/no/such/thing"}
