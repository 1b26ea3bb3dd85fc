"""`parse_target` and `is_internal`: E2B's client-proxy routing rules as a pure function."""

from __future__ import annotations

import pytest

from sandhive.proxy import BadTarget, parse_target
from sandhive.proxy.routing import is_internal


@pytest.mark.parametrize("headers", [
    {"E2b-Sandbox-Id": "iabc", "E2b-Sandbox-Port": "49983"},
    {"e2b-sandbox-id": "iabc", "e2b-sandbox-port": "49983"},
    {"E2B-SANDBOX-ID": "iabc", "E2B-SANDBOX-PORT": " 49983 "},
])
def test_headers_route_case_insensitively(headers: dict[str, str]) -> None:
    assert parse_target(headers, "localhost:3000") == ("iabc", 49983)


def test_headers_win_over_host() -> None:
    headers = {"E2b-Sandbox-Id": "iabc", "E2b-Sandbox-Port": "8000"}
    assert parse_target(headers, "3000-other.example.com") == ("iabc", 8000)


@pytest.mark.parametrize("headers", [
    {"E2b-Sandbox-Id": "iabc"},
    {"E2b-Sandbox-Port": "49983"},
    {"E2b-Sandbox-Id": "", "E2b-Sandbox-Port": "49983"},
    {"E2b-Sandbox-Id": "iabc", "E2b-Sandbox-Port": ""},
    {"E2b-Sandbox-Id": "iabc", "E2b-Sandbox-Port": "http"},
    {"E2b-Sandbox-Id": "iabc", "E2b-Sandbox-Port": "0"},
    {"E2b-Sandbox-Id": "iabc", "E2b-Sandbox-Port": "65536"},
    {"E2b-Sandbox-Id": "iabc", "E2b-Sandbox-Port": "-1"},
    {"E2b-Sandbox-Id": "iabc", "E2b-Sandbox-Port": "+80"},
    {"E2b-Sandbox-Id": "iabc", "E2b-Sandbox-Port": "8_0"},
    {"E2b-Sandbox-Id": "iabc", "E2b-Sandbox-Port": "٨٠"},  # non-ASCII digits, which int() would accept
])
def test_bad_headers_are_400(headers: dict[str, str]) -> None:
    with pytest.raises(BadTarget):
        parse_target(headers, "localhost")


def test_bad_port_error_names_the_sandbox() -> None:
    with pytest.raises(BadTarget) as info:
        parse_target({"E2b-Sandbox-Id": "iabc", "E2b-Sandbox-Port": "x"}, None)
    assert info.value.sandbox_id == "iabc"


@pytest.mark.parametrize(("host", "expected"), [
    ("49983-iabc.localhost:3000", ("iabc", 49983)),
    ("8000-iabc.sandhive.example.com", ("iabc", 8000)),
    ("8000-IABC.Sandhive.Example.com", ("iabc", 8000)),
    ("8000-iabc.example.com.", ("iabc", 8000)),
    ("1-a1.b", ("a1", 1)),
])
def test_host_label_routes(host: str, expected: tuple[str, int]) -> None:
    assert parse_target({}, host) == expected


@pytest.mark.parametrize("host", [
    None, "", "localhost", "localhost:3000", "127.0.0.1:3000", "[::1]:3000", "api.example.com",
    "49983-iabc", "49983-iabc:3000",  # no dot
    "49983-iabc.", "x49983-iabc.example.com", "49983-i_abc.example.com", "49983-i-abc.example.com",
    "49983.example.com", "-iabc.example.com", "sandbox.example.com",
])
def test_other_hosts_go_to_the_api(host: str | None) -> None:
    assert parse_target({"Accept": "*/*"}, host) is None


@pytest.mark.parametrize("host", ["0-iabc.example.com", "65536-iabc.example.com", "999999-iabc.example.com"])
def test_host_port_out_of_range_is_400(host: str) -> None:
    with pytest.raises(BadTarget):
        parse_target({}, host)


def test_domain_restricts_host_routing() -> None:
    assert parse_target({}, "8000-iabc.sandhive.dev", domain="sandhive.dev") == ("iabc", 8000)
    assert parse_target({}, "8000-iabc.sandhive.dev:443", domain="Sandhive.Dev") == ("iabc", 8000)
    assert parse_target({}, "8000-iabc.other.dev", domain="sandhive.dev") is None
    assert parse_target({}, "8000-iabc.x.sandhive.dev", domain="sandhive.dev") is None
    # Headers do not depend on the domain.
    assert parse_target({"E2b-Sandbox-Id": "i", "E2b-Sandbox-Port": "1"}, "x.other", domain="sandhive.dev") == ("i", 1)


@pytest.mark.parametrize("path", [
    "/init", "/init/", "//init", "/a/../init", "/./init", "/upgrade", "/freeze", "/unfreeze", "/fsfreeze",
    "/fsthaw", "/collapse",
])
def test_internal_envd_routes(path: str) -> None:
    assert is_internal(49983, path)
    assert not is_internal(8000, path)


@pytest.mark.parametrize("path", ["/", "/health", "/files", "/initx", "/init/x", "/process.Process/Start"])
def test_public_envd_routes(path: str) -> None:
    assert not is_internal(49983, path)
