"""The OpenAPI document: FastAPI's, minus its 422 validation responses (this API answers 400, E2B-shaped).

`create_app` serves it; `app.render_openapi()` renders it for `sandhive openapi [PATH]` (`make openapi`
refreshes docs/openapi.json, and a test fails when that copy is stale).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .unsupported import TAG as UNSUPPORTED_TAG


def build_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            operation.get("responses", {}).pop("422", None)
            if UNSUPPORTED_TAG in operation.get("tags", ()):
                operation["responses"].pop("200", None)  # it never succeeds: 400 (not enabled) or 401
    # Routes that are not implemented are served first (see app.py) but listed last.
    schema["paths"] = dict(sorted(schema.get("paths", {}).items(), key=lambda item: _unsupported(item[1])))
    schemas = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    app.openapi_schema = schema
    return schema


def _unsupported(path_item: dict[str, Any]) -> bool:
    return all(UNSUPPORTED_TAG in operation.get("tags", ()) for operation in path_item.values())

