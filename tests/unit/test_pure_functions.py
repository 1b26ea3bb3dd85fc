"""Pure functions behind the wire: proxy routing, list paging and filters, access tokens and signed file URLs,
Dockerfile checks. No server; each case is one the integration suites reach only through a live request."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from sandhive.api.listing import build_query, parse_metadata, parse_started_after, parse_states
from sandhive.api.tokens import access_token, load_secret
from sandhive.errors import UserError
from sandhive.node.runtime import ENVD_PORT
from sandhive.proxy.routing import BadTarget, is_internal, parse_target
from sandhive.sdk.signing import signature
from sandhive.store.paging import decode_cursor, encode_cursor
from sandhive.templates.dockerfile import DockerfileError, parse

SID = "iabc123"


# ---- proxy routing -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("headers", "host", "domain", "target"), [
    ({"E2b-Sandbox-Id": SID, "E2b-Sandbox-Port": "8080"}, "api.local", None, (SID, 8080)),
    ({"e2b-sandbox-id": f" {SID} ", "E2B-SANDBOX-PORT": " 49983 "}, None, None, (SID, 49983)),  # any case, trimmed
    ({}, f"8080-{SID}.sandhive.test", None, (SID, 8080)),
    ({}, f"8080-{SID}.sandhive.test:443", "sandhive.test", (SID, 8080)),
    ({}, f"8080-{SID}.other.test", "sandhive.test", None),  # not under our domain: API traffic
    ({}, "api.sandhive.test", None, None),
    ({}, f"8080-{SID}", None, None),  # no dot: a bare name is never a sandbox host
    ({}, "[::1]:3000", None, None),
    ({}, None, None, None),
])
def test_parse_target(headers: dict[str, str], host: str | None, domain: str | None,
                      target: tuple[str, int] | None) -> None:
    assert parse_target(headers, host, domain) == target


@pytest.mark.parametrize(("headers", "host"), [
    ({"E2b-Sandbox-Id": SID}, None),  # one header without the other
    ({"E2b-Sandbox-Port": "80"}, None),
    ({"E2b-Sandbox-Id": SID, "E2b-Sandbox-Port": "0"}, None),
    ({"E2b-Sandbox-Id": SID, "E2b-Sandbox-Port": "65536"}, None),
    ({"E2b-Sandbox-Id": SID, "E2b-Sandbox-Port": "0x50"}, None),
    ({}, f"99999-{SID}.sandhive.test"),
])
def test_bad_targets_are_refused(headers: dict[str, str], host: str | None) -> None:
    with pytest.raises(BadTarget):
        parse_target(headers, host)


@pytest.mark.parametrize(("port", "path", "internal"), [
    (ENVD_PORT, "/init", True),
    (ENVD_PORT, "//init/", True),
    (ENVD_PORT, "/files/../init", True),  # dot segments cannot smuggle a node-only route through
    (ENVD_PORT, "/./upgrade", True),
    (ENVD_PORT, "/files", False),
    (ENVD_PORT, "/initx", False),
    (8080, "/init", False),  # a user's own server may have an /init
])
def test_node_only_envd_routes(port: int, path: str, internal: bool) -> None:
    assert is_internal(port, path) is internal


# ---- paging and list filters ---------------------------------------------------------------------------

def test_a_cursor_round_trips_and_garbage_is_invalid() -> None:
    started = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    token = encode_cursor(SimpleNamespace(started_at=started, sandbox_id=SID))  # type: ignore[arg-type]
    assert "=" not in token
    assert decode_cursor(token) == (started, SID)
    for bad in ("", "not base64!", encode_cursor(SimpleNamespace(  # type: ignore[arg-type]
            started_at=datetime(2026, 5, 1), sandbox_id=SID))):  # a naive time is not one of ours
        with pytest.raises(ValueError, match="invalid next token"):
            decode_cursor(bad)


def test_list_filters_parse_what_the_sdk_sends() -> None:
    assert parse_metadata("user%3Dme=a%26b&k=") == {"user=me": "a&b", "k": ""}
    assert parse_states("paused,running,paused") == ("paused", "running")
    assert parse_states(None) == ("running", "paused")
    assert parse_started_after("2026-05-01T12:00:00 00:00") == datetime(2026, 5, 1, 12, tzinfo=UTC)  # "+" as space
    q = build_query(metadata=None, state="running", order=None, started_after=None, template="", next_token="",
                    limit=5)
    assert (q.states, q.order, q.template, q.cursor, q.limit) == (("running",), "desc", None, None, 5)


@pytest.mark.parametrize("call", [
    lambda: parse_states("killed"),
    lambda: parse_states(","),
    lambda: parse_started_after("2026-05-01T12:00:00"),  # no offset
    lambda: parse_started_after("yesterday"),
    lambda: build_query(metadata=None, state=None, order="sideways", started_after=None, template=None,
                        next_token=None, limit=1),
])
def test_bad_list_filters_are_400(call: object) -> None:
    with pytest.raises(UserError) as info:
        call()  # type: ignore[operator]
    assert info.value.status == 400


# ---- tokens and signatures -----------------------------------------------------------------------------

def test_access_tokens_are_per_sandbox_and_per_seed(tmp_path: Path) -> None:
    seed = load_secret(tmp_path)
    assert load_secret(tmp_path) == seed  # created once, then read
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600
    token = access_token(seed, SID)
    assert len(token) == 64 and token == access_token(seed, SID)
    assert token != access_token(seed, SID + "x") and token != access_token(b"other" * 8, SID)


def test_a_truncated_seed_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("short\n")
    with pytest.raises(RuntimeError, match="empty or truncated"):
        load_secret(tmp_path)


def test_file_signatures_are_envds_v1_scheme() -> None:
    raw = "/home/user/a.txt:read:user:tok:1700000000"
    expected = "v1_" + base64.b64encode(hashlib.sha256(raw.encode()).digest()).rstrip(b"=").decode()
    assert signature("/home/user/a.txt", "read", "user", "tok", 1700000000) == expected
    assert signature("/a", "read", None, "tok", None) != signature("/a", "write", None, "tok", None)


# ---- Dockerfile checks ---------------------------------------------------------------------------------

@pytest.mark.parametrize("run", [
    "RUN --mount=type=cache,target=/root/.cache pip install x",
    "RUN --mount=type=bind,source=req.txt,target=/r.txt cat /r.txt",
    "RUN --mount=type=tmpfs,target=/scratch true",
    "RUN --network=none true",
])
def test_allowed_run_flags(run: str) -> None:
    assert parse(f"FROM debian:bookworm\n{run}\n").final.base == "debian:bookworm"


@pytest.mark.parametrize(("run", "words"), [
    ("RUN --mount=type=bind,source=/,target=/h,rw true", "read-only"),
    ("RUN --mount=type=bind,target=/h,readwrite=true true", "read-only"),
    ("RUN --mount=type=secret,id=x true", "type=secret is not allowed"),
    ("RUN --mount=type=ssh true", "type=ssh is not allowed"),
    ("RUN --mount=type=cache,from=x,target=/c true", "from= is not allowed"),
    ("RUN --mount=type=bind,from=alpine,target=/a true", "earlier stage"),
    ("RUN --security=insecure true", "not allowed"),
    ("RUN --network=bridge true", "not supported"),
])
def test_run_flags_that_reach_beyond_the_build_are_refused(run: str, words: str) -> None:
    with pytest.raises(DockerfileError, match=words):
        parse(f"FROM debian:bookworm\n{run}\n")


def test_a_bind_from_an_earlier_stage_is_allowed_and_from_a_later_one_is_not() -> None:
    ok = ("FROM debian:bookworm AS build\nRUN true\nFROM debian:bookworm\n"
          "RUN --mount=type=bind,from=build,target=/b ls\n")
    assert len(parse(ok).stages) == 2
    with pytest.raises(DockerfileError, match="earlier stage"):
        parse("FROM debian:bookworm\nRUN --mount=type=bind,from=1,target=/b ls\nFROM debian:bookworm AS x\n")

