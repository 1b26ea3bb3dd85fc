"""Helpers for the warm-pool, admission and start-command suites: the node's status route, waiting for a pool,
the e2b SDK pointed at a live server, and hand-made templates that share the `base` rootfs."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from tests.api.rig import Server
from tests.helpers import wait_until


def node_status(server: Server, key: str) -> dict:
    with server.client(key) as c:
        r = c.get("/sandhive/node")
    assert r.status_code == 200, r.text
    return r.json()


def pool_of(status: dict, template: str = "base") -> dict | None:
    pools = [p for p in status["pools"] if p["templateID"] == template]
    return pools[0] if pools else None


def wait_for_pool(server: Server, key: str, template: str = "base", ready: int | None = None,
                  timeout: float = 180.0) -> dict:
    """Wait until the template's pool has `ready` sandboxes waiting (default: all of its target, and no fill in
    flight); its status."""
    seen: list[dict | None] = [None]

    def filled() -> dict | None:
        pool = seen[0] = pool_of(node_status(server, key), template)
        full = ready is None and pool is not None and pool["starting"] == 0
        if pool is not None and pool["ready"] >= (pool["target"] if ready is None else ready) > 0 and (
                full or ready is not None):
            return pool
        return None

    return wait_until(filled, timeout, f"the pool of {template} to fill", interval=0.1,
                      show=lambda: f"{seen[0]}\n{server.output()[-3000:]}")


@contextlib.contextmanager
def e2b_env(server: Server, key: str) -> Iterator[None]:
    """The SDK pointed at `server` (restored afterwards). E2B_DOMAIN makes `get_host(port)` answer
    `<port>-<id>.localhost:<server port>`, which the server's proxy routes."""
    names = ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY", "E2B_DEBUG", "E2B_DOMAIN")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(E2B_API_URL=server.url, E2B_SANDBOX_URL=server.url, E2B_API_KEY=key,
                      E2B_DOMAIN=f"localhost:{server.url.rsplit(':', 1)[1]}")
    os.environ.pop("E2B_DEBUG", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def make_template(data_dir: Path, template_id: str, **changes: object) -> None:
    """A template made by hand: `base`'s template.json with `changes`, its rootfs the `base` rootfs (a symlink:
    a template's rootfs is only ever a read-only lower layer). `base` must be built already."""
    templates = data_dir / "templates"
    info = json.loads((templates / "base" / "template.json").read_text())
    info.update(id=template_id, aliases=[], **changes)
    tmp = templates / f".tmp-{template_id}"
    tmp.mkdir()
    (tmp / "rootfs").symlink_to(templates / "base" / "rootfs")
    (tmp / "template.json").write_text(json.dumps(info))
    tmp.rename(templates / template_id)  # appears complete, as the registry expects of a build
