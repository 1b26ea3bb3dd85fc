"""Header rules (node/header_rules.py): checking E2B's `rules`, choosing a name's headers, and rewriting a request
stream so that every request carries them — and nothing can be smuggled past the rewriter."""

from __future__ import annotations

import pytest

from sandhive.node.egress import domain_pattern
from sandhive.node.header_rules import RequestRewriter, RewriteError, header_rules_of, headers_for

SECRET = (("X-Api-Key", "s3cret"),)


def rules(value: object) -> object:
    return header_rules_of(value, domain_pattern)


def test_rules_are_checked_and_merged_per_domain() -> None:
    got = rules({"API.example.com": [{"transform": {"headers": {"X-A": "1"}}}, {"transform": {"headers": {"x-a": "2",
                                                                                                        "X-B": "3"}}}]})
    assert got == (("api.example.com", (("x-a", "2"), ("X-B", "3"))),)
    for bad in ({"10.0.0.0/8": [{"transform": {"headers": {"X": "1"}}}]},  # by address
                {"a.test": [{"transform": {"headers": {"Bad Name": "1"}}}]},
                {"a.test": [{"transform": {"headers": {"X": "line\r\nInjected: 1"}}}]},
                {"a.test": [{"transform": {"headers": {"Host": "other.test"}}}]},
                {"a.test": [{"transform": {"body": "x"}}]},
                {"a.test": {"transform": {}}},
                ["a.test"]):
        with pytest.raises(ValueError):
            rules(bad)


def test_the_most_specific_domain_wins() -> None:
    merged = header_rules_of({"*": [{"transform": {"headers": {"X": "any"}}}],
                              "*.example.com": [{"transform": {"headers": {"X": "wild", "Y": "y"}}}],
                              "api.example.com": [{"transform": {"headers": {"X": "exact"}}}]}, domain_pattern)
    assert dict(headers_for("api.example.com", merged)) == {"X": "exact", "Y": "y"}
    assert dict(headers_for("www.example.com", merged)) == {"X": "wild", "Y": "y"}
    assert dict(headers_for("other.test", merged)) == {"X": "any"}
    assert headers_for(None, merged) == ()


def feed_bytewise(rewriter: RequestRewriter, data: bytes) -> bytes:
    return b"".join(rewriter.feed(data[i:i + 1]) for i in range(len(data)))


def test_every_request_of_a_keep_alive_stream_gets_the_headers_and_loses_the_sandboxs_own() -> None:
    stream = (b"GET / HTTP/1.1\r\nHost: a.test\r\nx-api-key: forged\r\n\r\n"
              b"POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello"
              b"PUT /c HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"3\r\nabc\r\n0\r\nTrailer: t\r\n\r\n"
              b"GET /last HTTP/1.1\r\nHost: a.test\r\n\r\n")
    for out in (RequestRewriter(SECRET).feed(stream), feed_bytewise(RequestRewriter(SECRET), stream)):
        assert out.count(b"X-Api-Key: s3cret\r\n") == 4
        assert b"forged" not in out
        assert b"hello" in out and b"3\r\nabc\r\n0\r\nTrailer: t\r\n\r\n" in out
        # a body that looks like a request head is passed as a body, not rewritten
    body = b"GET /x HTTP/1.1\r\n\r\n"
    out = RequestRewriter(SECRET).feed(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert out.count(b"s3cret") == 1 and out.endswith(body)


def test_after_an_upgrade_the_stream_passes_untouched() -> None:
    rewriter = RequestRewriter(SECRET)
    out = rewriter.feed(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    assert out.count(b"s3cret") == 1 and out.endswith(b"GET / HTTP/1.1\r\n\r\n")
    assert rewriter.feed(b"\x81\x02hi") == b"\x81\x02hi"


@pytest.mark.parametrize("stream", [
    b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",  # smuggling by CL.TE
    b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\r\nX : a\r\n\r\n",
    b"GET /\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabX",
    b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 70000,
])
def test_a_stream_that_cannot_be_framed_ends_the_connection(stream: bytes) -> None:
    with pytest.raises(RewriteError):
        RequestRewriter(SECRET).feed(stream)
