"""The OpenAPI document: served at /openapi.json, and the committed docs/openapi.json is not stale."""

from __future__ import annotations

import json
from pathlib import Path

from sandhive.api.app import render_openapi
from tests.api.rig import Server

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_committed_copy_is_fresh() -> None:
    assert COMMITTED.read_text() == render_openapi(), "docs/openapi.json is stale: run `make openapi`"


def test_server_serves_the_same_document(server: Server) -> None:
    with server.client() as c:
        r = c.get("/openapi.json")
    assert r.status_code == 200
    assert r.json() == json.loads(COMMITTED.read_text())


def test_document_describes_e2b_errors_not_fastapi_ones() -> None:
    doc = json.loads(render_openapi())
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    create = doc["paths"]["/v2/sandboxes"]["post"]
    assert "422" not in create["responses"] and create["responses"]["201"]
    assert create["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert {"/v2/sandboxes", "/sandboxes", "/sandboxes/{sandboxID}", "/sandboxes/{sandboxID}/timeout",
            "/sandboxes/{sandboxID}/refreshes", "/sandboxes/{sandboxID}/metrics", "/sandboxes/{sandboxID}/logs",
            "/v2/sandboxes/{sandboxID}/connect", "/sandboxes/{sandboxID}/connect", "/health"} <= set(doc["paths"])
    assert doc["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
