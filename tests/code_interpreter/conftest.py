"""The code interpreter (issue 15) through the released `e2b_code_interpreter` 2.11.5 against a live `sandhive serve`
per OCI backend (container, gvisor): the SDK's `Sandbox.create()` names the built-in template `code-interpreter-v1`,
and its `run_code` and context calls go through the edge proxy to our server on port 49999 inside the sandbox.

The template is built on first use, by that first create, exactly as for a user: from PyPI that takes a few minutes
(see docs/code-interpreter.md), from the host's tree cache (any earlier build of the same recipe) seconds. So the
package's first create is given 15 minutes, and one sandbox serves the whole package (`sandbox`); tests that need
state of their own make a context. The pool is off (`--pool-size 0`): each warm sandbox holds a kernel, and these
tests need one sandbox.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.rig import BACKENDS, Server, container_server

TEAM = "codeint"
BUILD_TIMEOUT = 900  # seconds the first create may take: the template's build from PyPI


@pytest.fixture(scope="package", params=BACKENDS)
def live(request: pytest.FixtureRequest) -> Iterator[tuple[Server, str]]:
    with container_server("codeint", TEAM, "--pool-size", "0", backend=request.param) as server:
        try:
            yield server, server.key(TEAM)
        finally:
            forget_images(server.data_dir)


def forget_images(data_dir: Path) -> None:
    """A build from PyPI imported `base` into the host's buildah storage under this data dir's name; the data
    dir goes at the end of the session, so does that image (the template's own is removed by its build)."""
    from sandhive.templates import builder
    from sandhive.templates import code_interpreter as template

    with contextlib.suppress(Exception), builder.storage_session() as storage:
        for template_id in ("base", template.TEMPLATE_ID):
            name = builder.image_name(data_dir, template_id)
            if storage.image_exists(name):
                storage.remove_image(name)


@pytest.fixture(scope="package")
def e2b_env(live: tuple[Server, str]) -> Iterator[None]:
    server, key = live
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("E2B_API_URL", server.url)
        patch.setenv("E2B_SANDBOX_URL", server.url)
        patch.setenv("E2B_API_KEY", key)
        patch.delenv("E2B_DEBUG", raising=False)
        patch.delenv("E2B_DOMAIN", raising=False)
        yield


@pytest.fixture(scope="package")
def sandbox(e2b_env: None, live: tuple[Server, str]) -> Iterator[object]:
    from e2b_code_interpreter import Sandbox

    started = time.monotonic()
    sbx = Sandbox.create(timeout=1800, request_timeout=BUILD_TIMEOUT, envs={"SANDHIVE_CREATE_VAR": "from-create"})
    print(f"first code-interpreter create (template build or cache copy included): "
          f"{time.monotonic() - started:.1f}s")
    try:
        yield sbx
    finally:
        sbx.kill()
