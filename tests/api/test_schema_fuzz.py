"""schemathesis over docs/openapi.json against a live `sandhive serve --backend none`, with a valid API key.

Every operation gets a bounded number of generated requests (valid and invalid); none may answer 5xx, and
every answer must match the schema (status documented, body and headers of the documented shape). The one
documented 5xx is `--backend none`'s own answer to a create: 500 `sandbox_no_compatible_node` (E2B's code),
which the SDK turns into a clear exception (tests/api/test_errors.py); it is allowed, nothing else is.
Checks of how strictly inputs are validated (positive/negative data, Allow headers) are not run here.
Kept short: MAX_EXAMPLES per operation, well under two minutes on two cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="in the `test` extras: pip install -e .[test]")
from hypothesis import HealthCheck, settings  # noqa: E402 — after the importorskip above
from schemathesis import checks  # noqa: E402

from tests.api.rig import Server, start_server  # noqa: E402

MAX_EXAMPLES = 8
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
schema = schemathesis.openapi.from_path(str(OPENAPI))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    server = start_server(tmp_path_factory.mktemp("fuzz") / "data")
    try:
        yield server, server.key("fuzz")
    finally:
        server.stop()


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: schemathesis.Case, live: tuple[Server, str]) -> None:
    server, key = live
    response = case.call(base_url=server.url, headers={"X-API-Key": key}, timeout=30)
    if response.status_code == 500 and _no_backend(response):
        return
    case.validate_response(response, checks=CHECKS)


CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.response_headers_conformance]


def _no_backend(response: object) -> bool:
    try:
        return response.json().get("error_code") == "sandbox_no_compatible_node"  # type: ignore[attr-defined]
    except ValueError:
        return False
