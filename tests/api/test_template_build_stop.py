"""A server stopped in the middle of a template build stops the build and leaves nothing of it running:
no buildah process, no working container, no build network namespace."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.api.rig import container_backend_missing, remove_unless_mounted, start_server
from tests.builds import storage

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(1200)]  # the leak check may wait for other groups' builds


def _build_netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("sandhive-b")}


def test_stopping_the_server_stops_its_builds() -> None:
    reason = container_backend_missing("container")
    if reason:
        print(f"skipping: {reason}")
        pytest.skip(reason)
    containers_before = storage.containers()
    netns_before = _build_netns()
    root = Path(tempfile.mkdtemp(prefix="sandhive-buildstop-", dir="/tmp"))
    root.chmod(0o711)
    server = start_server(root / "data", backend="container", timeout=900)
    try:
        _stop_during_build(server, netns_before)
    finally:
        server.stop()
        remove_unless_mounted(root)
    for _ in range(50):
        if not _build_netns() - netns_before:
            break
        time.sleep(0.2)
    assert _build_netns() - netns_before == set()
    assert storage.leaked_since(containers_before) == set()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 300" not in ps


def _stop_during_build(server, netns_before: set[str]) -> None:
    with server.client(server.key()) as client:
        registered = client.post("/v3/templates", json={"name": "long-build"})
        assert registered.status_code == 202, registered.text
        ids = registered.json()
        started = client.post(f"/v2/templates/{ids['templateID']}/builds/{ids['buildID']}",
                              json={"dockerfile": "FROM debian:bookworm-slim\nRUN echo sleeping && sleep 300\n"})
        assert started.status_code == 202, started.text
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # until the RUN step is running (the base may be built first)
            status = client.get(f"/templates/{ids['templateID']}/builds/{ids['buildID']}/status").json()
            if any("sleeping" in entry["message"] for entry in status.get("logEntries", [])):
                break
            assert status["status"] in ("waiting", "building"), status
            time.sleep(0.5)
        else:
            raise AssertionError("the build never reached its RUN step")
        assert _build_netns() - netns_before, "the build should run in a build network namespace"
        stopped_at = time.monotonic()
        server.stop()
        assert time.monotonic() - stopped_at < 60
