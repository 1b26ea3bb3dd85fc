"""E2B's REST routes that Sandhive does not implement yet, each answering as E2B answers a feature that is off.

E2B's API answers a disabled feature with 400 `{"code":400,"message":"use of volumes is not enabled"}`
(infra `handlers/volume_create.go`). A 404 instead would be read by the SDK as "Sandbox … not found"
(`pause`, `connect`, …), which sends users looking for a sandbox that is fine. So every route of the released
SDK's generated client (e2b 2.63, `e2b/api/client/api/`) that has no real route here answers 400 naming the
feature, after the API key check, as E2B's would. A route someone implements later replaces its entry here
(`unsupported_router` skips any method and path a real route already serves).

No `from __future__ import annotations` here: FastAPI reads the parameter annotations at runtime.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from ..errors import UserError
from .auth import team_of_key
from .routes import errors
from .sandboxes import SandboxService

TAG = "not implemented"


@dataclass(frozen=True)
class Unsupported:
    method: str
    path: str
    feature: str  # as a user would name it: "use of {feature} is not enabled"

    @property
    def message(self) -> str:
        return f"use of {self.feature} is not enabled: Sandhive does not implement {self.method} {self.path} yet"


UNSUPPORTED = (
    Unsupported("GET", "/v2/sandboxes/{sandboxID}/logs", "v2 sandbox logs (GET /sandboxes/{sandboxID}/logs works)"),
    Unsupported("GET", "/secrets", "secrets"),
    Unsupported("POST", "/secrets", "secrets"),
    Unsupported("GET", "/secrets/{secretID}", "secrets"),
    Unsupported("POST", "/secrets/{secretID}", "secrets"),
    Unsupported("DELETE", "/secrets/{secretID}", "secrets"),
    Unsupported("GET", "/default-templates", "default templates"),
    Unsupported("GET", "/v2/templates", "the v2 template list (GET /templates works)"),
    Unsupported("GET", "/templates/{templateID}/builds/{buildID}/logs",
                "template build logs (the build status carries them)"),
    Unsupported("GET", "/templates/{templateID}/tags/count", "template tag counts"),
    Unsupported("GET", "/templates/{templateID}/tags/exists", "template tag lookups"),
    Unsupported("GET", "/templates/{templateID}/tags/groups", "template tag groups"),
    Unsupported("GET", "/templates/{templateID}/tags/{tag}/assignments", "template tag assignments"),
)


def served(routes: Iterable[BaseRoute]) -> set[tuple[str, str]]:
    """(method, path) of every route among `routes`, FastAPI's included routers opened up."""
    found: set[tuple[str, str]] = set()
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            found |= served(inner.routes)
        elif isinstance(route, APIRoute):
            found |= {(method, route.path) for method in route.methods or ()}
    return found


def unsupported_router(service: SandboxService, taken: set[tuple[str, str]]) -> APIRouter:
    """The routes of UNSUPPORTED that no real route serves. Include them before the real ones: a static path
    such as /v2/templates must not be read as a template id by /v2/templates/{templateID}."""
    router = APIRouter(tags=[TAG])
    Team = Annotated[str, Depends(team_of_key(service.store))]  # noqa: N806 — a type alias, read as one
    for entry in UNSUPPORTED:
        if (entry.method, entry.path) in taken:
            continue
        params = re.findall(r"{(\w+)}", entry.path)
        name = "unsupported_" + entry.method.lower() + re.sub(r"\W+", "_", entry.path).rstrip("_")
        router.add_api_route(
            entry.path, _answer(entry, Team), methods=[entry.method], name=name,
            summary=f"Not implemented: {entry.feature}",
            description=f"Answers 400 `{entry.message}` (E2B's answer for a feature that is not enabled).",
            responses=errors(400, 401), openapi_extra=_path_parameters(params))
    return router


def _answer(entry: Unsupported, team: Any) -> Any:
    async def not_enabled(_: team) -> None:  # the API key is checked first, as E2B does
        raise UserError(400, entry.message)

    return not_enabled


def _path_parameters(names: list[str]) -> dict[str, Any]:
    return {"parameters": [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names]}
