"""The egress filter's readers of untrusted first bytes (node/sniff.py: HTTP Host, TLS SNI), its domain matching,
and the stub resolver's reply parser (node/resolve.py). Pure functions; the filter itself is exercised against a
live server in tests/hostile/test_egress_rules.py."""

from __future__ import annotations

import ssl
import struct

import pytest

from sandhive.node.egress import EgressPolicy, domain_pattern
from sandhive.node.resolve import ResolveError, parse, query
from sandhive.node.sniff import MAX_PEEK, host_name, matches, peek


def client_hello(server_name: str | None) -> bytes:
    """A real ClientHello, written by Python's own TLS stack into a memory BIO."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_sni_of_a_real_client_hello() -> None:
    hello = client_hello("Allowed.Test")
    result = peek(hello)
    assert result.done and result.kind == "tls" and result.name == "allowed.test"
    assert peek(client_hello(None)) .name is None  # no SNI: nothing to match
    assert peek(client_hello("203.0.113.7")).name is None  # Python sends no SNI for an address


def test_truncated_client_hello_waits_then_every_cut_is_judged_safely() -> None:
    hello = client_hello("allowed.test")
    for cut in range(1, len(hello)):
        result = peek(hello[:cut])
        assert not result.done or result.name is None, cut  # a prefix never yields a name
    # lengths that lie: each one is refused, never read past
    record_length = int.from_bytes(hello[3:5], "big")
    for offset in range(5, min(len(hello), 5 + record_length)):
        broken = bytearray(hello)
        broken[offset] ^= 0xFF
        result = peek(bytes(broken))
        assert result.done or len(broken) < MAX_PEEK
        if result.name is not None:  # a flipped byte inside the random, cipher list, ... may still parse
            assert result.name == "allowed.test" or result.name.isascii()


@pytest.mark.parametrize("data", [
    b"\x16\x02\x00\x00\x10" + b"\0" * 16,  # not a TLS 1.x record version
    b"\x16\x03\x01\xff\xff",  # a record longer than TLS allows
    b"\x16\x03\x01\x00\x08\x02\x00\x00\x04\x03\x03\x00\x00",  # a ServerHello
    b"\x16\x03\x01\x00\x08\x01\x00\xff\xff\x03\x03\x00\x00",  # a ClientHello longer than its record
])
def test_malformed_tls_is_invalid(data: bytes) -> None:
    assert peek(data).done and peek(data).name is None


def test_two_server_names_are_refused() -> None:
    name = b"allowed.test"
    entry = b"\x00" + struct.pack(">H", len(name)) + name
    names = struct.pack(">H", 2 * len(entry)) + entry * 2
    extension = struct.pack(">HH", 0, len(names)) + names
    body = b"\x03\x03" + b"\0" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + struct.pack(">H", len(extension)) \
        + extension
    hello = b"\x01" + len(body).to_bytes(3, "big") + body
    record = b"\x16\x03\x01" + struct.pack(">H", len(hello)) + hello
    assert peek(record).done and peek(record).name is None
    single = struct.pack(">H", len(entry)) + entry
    extension = struct.pack(">HH", 0, len(single)) + single
    body = body[:body.index(b"\x01\x00") + 2] + struct.pack(">H", len(extension)) + extension
    hello = b"\x01" + len(body).to_bytes(3, "big") + body
    assert peek(b"\x16\x03\x01" + struct.pack(">H", len(hello)) + hello).name == "allowed.test"


def test_http_host() -> None:
    request = b"GET /x HTTP/1.1\r\nUser-Agent: t\r\nHost: Allowed.Test:8080\r\n\r\n"
    assert peek(request).name == "allowed.test" and peek(request).kind == "http"
    assert peek(b"GET / HTTP/1.0\r\nhost: allowed.test.\r\n\r\nbody").name == "allowed.test"
    for cut in range(1, len(request) - 1):
        result = peek(request[:cut])
        assert not result.done, cut  # a slow writer is waited for


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n\r\n",  # no Host
    b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",  # two
    b"GET / HTTP/1.1\r\nHost : a.test\r\n\r\n",  # space before the colon
    b"GET / HTTP/1.1\r\n Host: a.test\r\n\r\n",  # folded
    b"GET / HTTP/1.1\r\nX: y\nHost: a.test\r\n\r\n",  # a bare LF hiding a header
    b"GET / HTTP/2.0\r\nHost: a.test\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: [2001:db8::1]\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 203.0.113.7\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a.test:99999x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a_.test\xff\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a..test\r\n\r\n",
])
def test_bad_http_names_nothing(data: bytes) -> None:
    result = peek(data)
    assert result.done and result.name is None


def test_garbage_and_oversized_heads_are_judged_at_once() -> None:
    assert peek(b"\x00\x01binary").done
    assert peek(b"SSH-2.0-OpenSSH\r\n").done
    assert peek(b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_PEEK).done
    assert not peek(b"").done and not peek(b"GE").done


def test_names_and_patterns() -> None:
    assert host_name("Example.COM.") == "example.com"
    assert host_name("-bad.test") is None and host_name("a" * 64 + ".test") is None and host_name("") is None
    assert domain_pattern("*.Example.test") == "*.example.test" and domain_pattern("*") == "*"
    assert domain_pattern("10.0.0.0/8") is None and domain_pattern("*.*.test") is None
    assert domain_pattern("a.*.test") is None and domain_pattern("1.2.3.4") is None
    patterns = ("allowed.test", "*.example.test")
    assert matches("allowed.test", patterns) and matches("a.example.test", patterns)
    assert matches("b.a.example.test", patterns)
    assert not matches("example.test", patterns)  # the apex is not below itself (as E2B's suffix match)
    assert not matches("xexample.test", patterns) and not matches("other.test", patterns)
    assert matches("anything.test", ("*",))


def test_policy_splits_domains_from_ranges() -> None:
    policy = EgressPolicy.of(["Allowed.test", "203.0.113.0/24", "*.example.test", "allowed.test"], ["0.0.0.0/0"])
    assert policy.domains == ("allowed.test", "*.example.test") and len(policy.allow) == 1
    assert not policy.allows("198.51.100.1")  # by address alone: denied (the filter judges by name)


def _reply(ident: int, name: str, answers: bytes, count: int, flags: int = 0x8180) -> bytes:
    return struct.pack(">HHHHHH", ident, flags, 1, count, 0, 0) + query(name, ident)[12:] + answers


def test_resolver_reply_parsing() -> None:
    # allowed.test CNAME cdn.test; cdn.test A 203.0.113.9; other.test A 1.2.3.4 (not ours: ignored)
    cname_target = b"\x03cdn\x04test\x00"
    answers = (b"\xc0\x0c" + struct.pack(">HHIH", 5, 1, 60, len(cname_target)) + cname_target
               + cname_target + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([203, 0, 113, 9])
               + b"\x05other\x04test\x00" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([1, 2, 3, 4]))
    assert parse(_reply(7, "allowed.test", answers, 3), 7, "allowed.test") == (["203.0.113.9"], 60)
    assert parse(_reply(7, "allowed.test", b"", 0, 0x8183), 7, "allowed.test") == ([], 0)  # NXDOMAIN
    for bad in (_reply(8, "allowed.test", answers, 3),  # another id
                _reply(7, "allowed.test", answers, 3)[:40],  # truncated
                _reply(7, "allowed.test", answers, 3, 0x8382),  # TC bit / SERVFAIL
                _reply(7, "other.test", answers, 3),  # another question
                _reply(7, "allowed.test", b"\xc0\x30" + b"\0" * 10, 1)):  # a pointer forwards
        with pytest.raises(ResolveError):
            parse(bad, 7, "allowed.test")


def test_the_resolver_keeps_answers_for_their_ttl_and_asks_once_for_concurrent_lookups(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from sandhive.node import resolve

    asked: list[str] = []
    now = [1000.0]
    answers = {"api.test": resolve.Answer(["203.0.113.9"], 30), "none.test": resolve.Answer([], 0)}

    async def fake_resolve4(name: str, nameservers: object, timeout: float = 2.0) -> resolve.Answer:
        asked.append(name)
        await asyncio.sleep(0.01)
        if name not in answers:
            raise ResolveError("timeout")
        return answers[name]

    monkeypatch.setattr(resolve, "resolve4", fake_resolve4)

    async def scenario() -> None:
        resolver = resolve.Resolver(["192.0.2.53"], clock=lambda: now[0])
        got = await asyncio.gather(*(resolver.addresses("api.test") for _ in range(5)))
        assert got == [["203.0.113.9"]] * 5 and asked == ["api.test"]  # one query for five lookups
        now[0] += 29
        assert await resolver.addresses("api.test") == ["203.0.113.9"] and len(asked) == 1
        now[0] += 2  # past its TTL
        await resolver.addresses("api.test")
        assert len(asked) == 2
        assert await resolver.addresses("none.test") == []
        now[0] += resolve.NEGATIVE_TTL - 1
        await resolver.addresses("none.test")
        assert asked.count("none.test") == 1
        for _ in range(2):  # a failure is not kept
            with pytest.raises(ResolveError):
                await resolver.addresses("down.test")
        assert asked.count("down.test") == 2
        monkeypatch.setattr(resolve, "MAX_CACHED", 2)
        answers.update({"a.test": resolve.Answer(["192.0.2.1"], 60), "b.test": resolve.Answer(["192.0.2.2"], 60)})
        for name in ("a.test", "b.test", "api.test"):
            await resolver.addresses(name)
        assert len(resolver._cache) <= 2

    asyncio.run(scenario())
