"""`/init`'s entropy: a cloned microVM's kernel RNG is reseeded from it (envd/entropy.py)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from sandhive.envd.entropy import reseed
from tests.helpers import stop_process_group

from .conftest import Envd, start_envd


@pytest.fixture(scope="module")
def envd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envd]:
    server = start_envd(tmp_path_factory.mktemp("envd-entropy"))
    yield server
    stop_process_group(server.proc)


def test_root_credits_the_seed_and_reseeds_the_crng() -> None:
    if os.geteuid() != 0:
        pytest.skip("RNDADDENTROPY/RNDRESEEDCRNG need root in the initial user namespace")
    assert reseed(os.urandom(32)) is True


def test_without_privilege_the_seed_is_only_mixed_in() -> None:
    """As in a container: root in a user namespace may write to /dev/urandom but not credit entropy."""
    code = "import os; from sandhive.envd.entropy import reseed; print(reseed(os.urandom(16)))"
    proc = subprocess.run(["unshare", "--user", "--map-root-user", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 and "unshare" in proc.stderr:
        pytest.skip(f"cannot create a user namespace here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_init_takes_entropy_and_ignores_a_bad_one(envd: Envd) -> None:
    seed = base64.b64encode(os.urandom(64)).decode()
    assert httpx.post(f"{envd.url}/init", json={"entropy": seed}).status_code == 204
    assert httpx.post(f"{envd.url}/init", json={"entropy": "not base64!"}).status_code == 204
    assert httpx.get(f"{envd.url}/health").status_code == 204
