"""Every REST route of the released e2b SDK's generated client is served: by a real route or by one that says
the feature is not enabled (issue 13 item 10). A new SDK route shows up here as a failure, not as a 404 that
the SDK reads as "Sandbox … not found"."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import e2b
from fastapi.routing import APIRoute

from sandhive.api.app import create_app
from sandhive.api.settings import Settings
from sandhive.api.unsupported import UNSUPPORTED

CLIENT_API = Path(e2b.__file__).parent / "api" / "client" / "api"
CALL = re.compile(r'"method":\s*"(\w+)",\s*"url":\s*f?"([^"]+)"')


def _sdk_routes() -> set[tuple[str, str]]:
    """(METHOD, path with its parameters blanked) of every operation in the SDK's generated client."""
    routes = set()
    for module in CLIENT_API.glob("*/*.py"):
        for method, url in CALL.findall(module.read_text()):
            routes.add((method.upper(), re.sub(r"{[^}]*}", "{}", url)))
    return routes


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """The app's routes with FastAPI's included routers opened up, in the order they match."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _api_routes(inner.routes)
        elif isinstance(route, APIRoute):
            yield route


def test_every_sdk_route_is_served(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path), node=None, templates=None)
    served = {(method, re.sub(r"{[^}]*}", "{}", route.path)) for route in _api_routes(app.routes)
              for method in route.methods}
    sdk = _sdk_routes()
    assert len(sdk) > 40, "the SDK's generated client was not found or not parsed"
    assert sdk - served == set()


def test_unsupported_entries_are_not_served_twice(tmp_path: Path) -> None:
    """An entry whose route got a real implementation is dropped, so the real one answers."""
    app = create_app(Settings(data_dir=tmp_path), node=None, templates=None)
    seen: dict[tuple[str, str], str] = {}
    for route in _api_routes(app.routes):
        for method in route.methods:
            assert (method, route.path) not in seen, f"{method} {route.path}: {seen.get((method, route.path))}"
            seen[(method, route.path)] = route.name
    assert all(seen[(e.method, e.path)].startswith("unsupported_") for e in UNSUPPORTED if (e.method, e.path) in seen)
