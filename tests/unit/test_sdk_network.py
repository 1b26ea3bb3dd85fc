"""Sandhive's SDK network settings (issue 16) against `httpx.MockTransport`: E2B's snake_case dicts become the
API's camelCase bodies, `update_network` sends the whole replacement, `get_info` reads the settings back, a 400
becomes `InvalidArgumentException` with the server's words, and a misspelt key is refused before any request."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from sandhive.sdk import ALL_TRAFFIC, AsyncSandbox, InvalidArgumentException, Sandbox
from sandhive.sdk.network_calls import create_body, info, update_body

SID = "iabcdefghij0123456789"
CREATED = {"templateID": "base", "sandboxID": SID, "clientID": "sandhive", "envdVersion": "0.6.4",
           "envdAccessToken": "tok"}
NOW = datetime.now(UTC).isoformat()
DETAIL = {**CREATED, "startedAt": NOW, "endAt": NOW, "cpuCount": 1, "memoryMB": 512, "diskSizeMB": 1024,
          "state": "running", "metadata": {}, "allowInternetAccess": False,
          "network": {"denyOut": ["203.0.113.7"], "allowPublicTraffic": False, "maskRequestHost": "a:${PORT}"}}


class Api:
    """A fake control plane answering `status`/`body` and recording each request's method, path and JSON."""

    def __init__(self, status: int, body: object = None) -> None:
        self.status, self.body = status, body
        self.seen: list[tuple[str, str, object]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path, json.loads(request.content) if request.content else None))
        return httpx.Response(self.status, json=self.body) if self.body is not None else httpx.Response(self.status)

    def opts(self) -> dict:
        return {"api_key": "k", "api_url": "http://sandhive.test", "transport": httpx.MockTransport(self)}


def test_create_body_sends_the_wire_keys() -> None:
    assert create_body({"allow_out": ["10.0.0.0/8"], "deny_out": ["0.0.0.0/0"], "allow_public_traffic": False,
                        "mask_request_host": "app:${PORT}"}) == {
        "allowOut": ["10.0.0.0/8"], "denyOut": ["0.0.0.0/0"], "allowPublicTraffic": False,
        "maskRequestHost": "app:${PORT}"}
    assert create_body(None) is None and create_body({}) is None
    assert create_body({"deny_out": None, "allow_public_traffic": True}) == {"allowPublicTraffic": True}
    # keys the server refuses are still sent, so its 400 says why
    assert create_body({"dns_servers": ("1.1.1.1",), "https_ports": [3000]}) == {"dnsServers": ["1.1.1.1"],
                                                                                 "httpsPorts": [3000]}


def test_selectors_may_be_callables_as_in_e2b() -> None:
    assert create_body({"deny_out": lambda ctx: [ctx.all_traffic]}) == {"denyOut": [ALL_TRAFFIC]}
    assert update_body({"allow_out": lambda ctx: ["1.2.3.4"]}) == {"allowOut": ["1.2.3.4"]}


def test_update_body_sends_only_what_is_given() -> None:
    assert update_body({}) == {}
    assert update_body({"deny_out": ["1.2.3.4"], "allow_internet_access": False}) == {
        "denyOut": ["1.2.3.4"], "allow_internet_access": False}


@pytest.mark.parametrize(("network", "words"), [
    ({"denyOut": ["1.2.3.4"]}, "did you mean 'deny_out'"),
    ({"deny-out": ["1.2.3.4"]}, "did you mean 'deny_out'"),
    ({"deny_out": "1.2.3.4"}, "must be a list"),
    ({"allow_out": [1234]}, "must be a list"),
    ({"allow_public_traffic": False, "allow_internet_access": False}, "unknown key 'allow_internet_access'"),
])
def test_a_misspelt_or_mistyped_setting_is_refused_before_asking(network: dict, words: str) -> None:
    api = Api(201, CREATED)
    with pytest.raises(InvalidArgumentException, match=words):
        Sandbox.create("base", network=network, **api.opts())  # type: ignore[arg-type]
    assert api.seen == [], "nothing is sent"


def test_update_network_refuses_create_only_keys() -> None:
    with pytest.raises(InvalidArgumentException, match="unknown key 'allow_public_traffic'"):
        update_body({"allow_public_traffic": False})
    with pytest.raises(InvalidArgumentException, match="takes a dict"):
        update_body(["1.2.3.4"])  # type: ignore[arg-type]


def test_create_sends_network_and_keeps_the_traffic_token() -> None:
    api = Api(201, {**CREATED, "trafficAccessToken": "t" * 64})
    sbx = Sandbox.create("base", network={"deny_out": ["203.0.113.7"], "allow_public_traffic": False},
                         allow_internet_access=False, **api.opts())
    method, path, body = api.seen[0]
    assert (method, path) == ("POST", "/v2/sandboxes")
    assert isinstance(body, dict)
    assert body["network"] == {"denyOut": ["203.0.113.7"], "allowPublicTraffic": False}
    assert body["allow_internet_access"] is False
    assert sbx.traffic_access_token == "t" * 64
    assert sbx.get_host(8000).startswith(f"8000-{SID}.")


def test_a_public_sandbox_has_no_token_and_sends_no_network() -> None:
    api = Api(201, CREATED)
    sbx = Sandbox.create("base", **api.opts())
    assert sbx.traffic_access_token is None
    assert "network" not in api.seen[0][2]  # type: ignore[operator]


def test_update_network_by_instance_and_by_id() -> None:
    seen: list[tuple[str, str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, json.loads(request.content)))
        return httpx.Response(201, json=CREATED) if request.method == "POST" else httpx.Response(204)

    opts = {"api_key": "k", "api_url": "http://sandhive.test", "transport": httpx.MockTransport(handler)}
    Sandbox.update_network(SID, {"deny_out": ["1.2.3.4"]}, **opts)
    sbx = Sandbox.create("base", **opts)
    assert sbx.update_network({}) is None
    assert [s for s in seen if s[0] == "PUT"] == [("PUT", f"/sandboxes/{SID}/network", {"denyOut": ["1.2.3.4"]}),
                                                  ("PUT", f"/sandboxes/{SID}/network", {})]


def test_a_400_is_an_invalid_argument_with_the_servers_words() -> None:
    message = "network.denyOut: 'nope' is not an IP address or CIDR range"
    api = Api(400, {"code": 400, "message": message})
    with pytest.raises(InvalidArgumentException, match="is not an IP address or CIDR range"):
        Sandbox.update_network(SID, {"deny_out": ["nope"]}, **api.opts())
    with pytest.raises(InvalidArgumentException, match="CIDR range or domain name"):
        Sandbox.create("base", network={"allow_out": ["a b"]}, **Api(400, {
            "code": 400, "message": "network.allowOut: 'a b' is not an IP address, CIDR range or domain name "
                                    "(example.com, *.example.com)"}).opts())


def test_get_info_reads_the_network_back_in_snake_case() -> None:
    got = Sandbox.get_info(SID, **Api(200, DETAIL).opts())
    assert got.allow_internet_access is False
    assert got.network == {"deny_out": ["203.0.113.7"], "allow_public_traffic": False, "mask_request_host": "a:${PORT}"}
    assert info(None) is None and info({}) is None


async def test_the_async_face_sends_the_same() -> None:
    api = Api(201, {**CREATED, "trafficAccessToken": "x"})
    sbx = await AsyncSandbox.create("base", network={"deny_out": ["1.2.3.4"]}, **api.opts())
    assert sbx.traffic_access_token == "x"
    put = Api(204)
    await AsyncSandbox.update_network(SID, {"allow_out": ["1.2.3.4"], "allow_internet_access": False}, **put.opts())
    assert api.seen[0][2]["network"] == {"denyOut": ["1.2.3.4"]}  # type: ignore[index]
    assert put.seen == [("PUT", f"/sandboxes/{SID}/network", {"allowOut": ["1.2.3.4"],
                                                              "allow_internet_access": False})]
    assert (await AsyncSandbox.get_info(SID, **Api(200, DETAIL).opts())).network == {
        "deny_out": ["203.0.113.7"], "allow_public_traffic": False, "mask_request_host": "a:${PORT}"}
