"""Private ports and masked hosts (issue 16): the proxy's checks (`proxy.access`) and the API's reading of a
create's `network` (`api.network`), as pure functions."""

from __future__ import annotations

import pytest

from sandhive.api import network
from sandhive.errors import UserError
from sandhive.proxy.access import TOKEN_INVALID, TOKEN_MISSING, Route, refusal, upstream_headers
from sandhive.proxy.routing import ENVD_PORT

PRIVATE = Route("10.0.0.2", traffic_token="s3cret")


def test_a_public_route_lets_everything_through() -> None:
    assert refusal(Route("10.0.0.2"), 8000, [], "isbx") is None


@pytest.mark.parametrize(("sent", "message"), [
    ([], TOKEN_MISSING),
    ([(b"E2B-Traffic-Access-Token", b"wrong")], TOKEN_INVALID),
    ([(b"e2b-traffic-access-token", b"s3cre")], TOKEN_INVALID),  # a prefix is not the token
    ([(b"e2b-traffic-access-token", b"s3cret"), (b"e2b-traffic-access-token", b"x")], TOKEN_INVALID),
])
def test_a_private_route_refuses_a_request_without_its_token(sent: list[tuple[bytes, bytes]], message: str) -> None:
    error = refusal(PRIVATE, 8000, sent, "isbx")
    assert error is not None and (error.status, error.message, error.sandbox_id) == (403, message, "isbx")


def test_a_private_route_admits_its_token_in_any_case_of_header_name() -> None:
    assert refusal(PRIVATE, 8000, [(b"E2B-Traffic-Access-Token", b"s3cret")], "isbx") is None


def test_envd_keeps_its_own_access_token() -> None:
    assert refusal(PRIVATE, ENVD_PORT, [], "isbx") is None


def test_the_token_is_not_relayed_and_the_host_is_masked_with_the_port() -> None:
    route = Route("10.0.0.2", traffic_token="s3cret", mask_host="app.test:${PORT}")
    out = upstream_headers(route, 8080, [(b"host", b"8080-isbx.localhost:3000"), (b"e2b-traffic-access-token",
                                                                                b"s3cret"), (b"x-a", b"1")])
    assert out == [(b"x-a", b"1"), (b"host", b"app.test:8080")]


def test_without_a_mask_the_host_passes_unchanged() -> None:
    assert upstream_headers(Route("10.0.0.2"), 80, [(b"host", b"h")]) == [(b"host", b"h")]


def test_only_the_honoured_network_keys_are_accepted() -> None:
    assert network.unsupported({"allowPublicTraffic": False, "maskRequestHost": "a.test"}) is None
    assert network.unsupported({"dnsServers": None}) is None  # null means "not set"
    assert network.unsupported({"allowOut": ["1.2.3.4"], "dnsServers": ["1.1.1.1"]}) is None
    assert network.unsupported({"egressProxy": {"address": "proxy.test:1080"}}) == "egressProxy"


def test_stored_settings_and_the_token_they_call_for() -> None:
    kept = network.stored({"allowPublicTraffic": False, "maskRequestHost": "${PORT}-app.test"})
    assert kept == {"allowPublicTraffic": False, "maskRequestHost": "${PORT}-app.test"}
    token = network.new_traffic_token(kept)
    assert token is not None and len(token) == 64 and token != network.new_traffic_token(kept)
    assert network.new_traffic_token({"allowPublicTraffic": True}) is None
    assert network.new_traffic_token(None) is None
    assert network.stored({}) is None


@pytest.mark.parametrize("bad", [
    {"allowPublicTraffic": "false"},
    {"maskRequestHost": "a.test\r\nX-Injected: 1"},
    {"maskRequestHost": "a b"},
    {"maskRequestHost": ""},
    {"maskRequestHost": "a" * 300},
    {"maskRequestHost": 5},
])
def test_bad_settings_are_a_400(bad: dict[str, object]) -> None:
    with pytest.raises(UserError) as caught:
        network.stored(bad)
    assert caught.value.status == 400


def test_https_ports_are_kept_sorted_and_checked() -> None:
    assert network.stored({"httpsPorts": [8443, 443, 443]}) == {"httpsPorts": [443, 8443]}
    for bad in ([0], [70000], ["443"], [True], [49983], list(range(1, 100))):
        with pytest.raises(UserError):
            network.stored({"httpsPorts": bad})
