"""WebSocket sessions through a real EdgeProxy to a real upstream echo server."""

from __future__ import annotations

import json
import socket

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.helpers import free_port
from tests.proxy.conftest import SANDBOX_ID, Rig


def _ws_url(rig: Rig, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{rig.proxy.port}{path}"


def _connect(rig: Rig, path: str = "/ws", **kwargs: object):
    headers = kwargs.pop("headers", rig.sandbox_headers())
    return connect(_ws_url(rig, path), additional_headers=headers, proxy=None, open_timeout=5, **kwargs)


def test_echo_text_and_binary(rig: Rig) -> None:
    with _connect(rig) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        blob = bytes(range(256)) * 100
        ws.send(blob)
        assert ws.recv(timeout=5) == blob
        ws.send("")
        assert ws.recv(timeout=5) == ""


def test_end_to_end_headers_reach_the_upstream(rig: Rig) -> None:
    headers = {**rig.sandbox_headers(), "Cookie": "session=abc", "X-Custom": "value 1"}
    with _connect(rig, headers=headers) as ws:
        ws.send("headers?")
        seen = json.loads(ws.recv(timeout=5))
    assert ["cookie", "session=abc"] in seen
    assert ["x-custom", "value 1"] in seen
    assert ["x-forwarded-proto", "http"] in seen
    assert ["x-forwarded-for", "127.0.0.1"] in seen


def test_subprotocol_is_negotiated_end_to_end(rig: Rig) -> None:
    with _connect(rig, subprotocols=["jupyter.v1"]) as ws:
        assert ws.subprotocol == "jupyter.v1"


def test_upstream_close_code_reaches_the_client(rig: Rig) -> None:
    with _connect(rig) as ws:
        ws.send("close:4001")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "asked to")


def test_client_close_code_reaches_the_upstream(rig: Rig) -> None:
    rig.state.ws_closed.clear()
    rig.state.ws_close_codes.clear()
    with _connect(rig) as ws:
        ws.send("ping")
        assert ws.recv(timeout=5) == "ping"
        ws.close(4002, "client done")
    assert rig.state.ws_closed.wait(5)
    assert rig.state.ws_close_codes == [4002]


def test_host_routing(rig: Rig) -> None:
    # websockets takes Host from the URI; hand it a socket already connected to the proxy on loopback.
    sock = socket.create_connection(("127.0.0.1", rig.proxy.port), timeout=5)
    url = f"ws://{rig.upstream.port}-{SANDBOX_ID}.localhost:{rig.proxy.port}/ws"
    with connect(url, sock=sock, proxy=None, open_timeout=5) as ws:
        ws.send("via host")
        assert ws.recv(timeout=5) == "via host"


def test_api_websocket_falls_through(rig: Rig) -> None:
    with _connect(rig, "/api-ws", headers={}) as ws:
        assert ws.recv(timeout=5) == "api-ws"


def test_unknown_sandbox_and_closed_port_are_502(rig: Rig) -> None:
    with pytest.raises(InvalidStatus) as info:
        _connect(rig, headers=rig.sandbox_headers(sandbox_id="inope"))
    assert info.value.response.status_code == 502
    assert b"was not found" in info.value.response.body
    with pytest.raises(InvalidStatus) as info:
        _connect(rig, headers=rig.sandbox_headers(free_port()))
    assert info.value.response.status_code == 502
    assert b"port is not open" in info.value.response.body


def test_upstream_refusal_status_is_relayed(rig: Rig) -> None:
    with pytest.raises(InvalidStatus) as info:
        _connect(rig, "/no-such-ws")
    assert info.value.response.status_code == 403  # Starlette refuses an unknown WebSocket route with 403


def test_bad_target_and_internal_route_are_refused(rig: Rig) -> None:
    with pytest.raises(InvalidStatus) as info:
        _connect(rig, headers={"E2b-Sandbox-Id": SANDBOX_ID, "E2b-Sandbox-Port": "nope"})
    assert info.value.response.status_code == 400
    with pytest.raises(InvalidStatus) as info:
        _connect(rig, "/init", headers=rig.sandbox_headers(49983))
    assert info.value.response.status_code == 404
