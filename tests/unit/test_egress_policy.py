"""A sandbox's own egress rules (issue 16): E2B's fields → kernel ranges (`node.egress`), and the API's checks
and full-replacement updates (`api.network`). Pure functions; the kernel side is in
tests/hostile/test_egress_rules.py."""

from __future__ import annotations

import ipaddress
import json

import pytest

from sandhive.api import network
from sandhive.errors import UserError
from sandhive.node.egress import EgressPolicy, _changes, _parse_elements


def test_allow_beats_deny_and_internet_off_denies_everything_else() -> None:
    policy = EgressPolicy.of(["203.0.113.7"], ["203.0.113.0/24"])
    assert policy.allows("203.0.113.7") and not policy.allows("203.0.113.8") and policy.allows("198.51.100.1")
    closed = EgressPolicy.of(["203.0.113.7"], internet=False)
    assert closed.allows("203.0.113.7") and not closed.allows("1.1.1.1") and not closed.allows("2001:db8::1")
    assert EgressPolicy.of().empty and not closed.empty


def test_ranges_are_collapsed_and_bad_ones_named() -> None:
    policy = EgressPolicy.of(deny_out=["10.0.0.0/9", "10.128.0.0/9", "10.1.2.3"])
    assert policy.deny == (ipaddress.ip_network("10.0.0.0/8"),)
    with pytest.raises(ValueError, match="'example.com'"):
        EgressPolicy.of(deny_out=["example.com"])  # names are allowOut's only
    with pytest.raises(ValueError, match="'not a name!'"):
        EgressPolicy.of(["not a name!"])


def test_kernel_elements_per_veth_and_family() -> None:
    lines = _changes("add", "shv3", EgressPolicy.of(["2001:db8::/32"], ["0.0.0.0/0"]))
    assert lines == ['add element inet sandhive_egress rallow6 { "shv3" . 2001:db8::/32 }',
                     'add element inet sandhive_egress rdeny4 { "shv3" . 0.0.0.0/0 }']


def test_rules_read_back_from_nft_json() -> None:
    listing = json.dumps({"nftables": [{"metainfo": {}}, {"set": {"elem": [
        {"concat": ["shv5", {"prefix": {"addr": "10.0.0.0", "len": 8}}]},
        {"concat": ["shv6", "1.2.3.4"]},
        {"concat": ["shv7", {"range": ["10.0.0.1", "10.0.0.2"]}]}]}}]})
    assert _parse_elements(listing) == [("shv5", ipaddress.ip_network("10.0.0.0/8")),
                                        ("shv6", ipaddress.ip_network("1.2.3.4/32")),
                                        ("shv7", ipaddress.ip_network("10.0.0.1/32")),
                                        ("shv7", ipaddress.ip_network("10.0.0.2/32"))]
    assert _parse_elements("not json") == []


def test_an_update_replaces_the_egress_rules_and_keeps_the_port_settings() -> None:
    current = {"allowPublicTraffic": False, "allowOut": ["1.2.3.4"], "denyOut": ["0.0.0.0/0"]}
    assert network.updated(current, {"denyOut": ["5.6.7.0/24"]}) == {"allowPublicTraffic": False,
                                                                     "denyOut": ["5.6.7.0/24"]}
    assert network.updated(None, {}) is None
    assert network.has_rules({"denyOut": ["5.6.7.0/24"]}) and not network.has_rules({"allowPublicTraffic": False})


@pytest.mark.parametrize(("update", "words"), [
    ({"allowOut": ["exa mple.com"]}, "not an IP address, CIDR range or domain name"),
    ({"allowOut": ["a.*.example.com"]}, "not an IP address, CIDR range or domain name"),
    ({"denyOut": ["example.com"]}, "not an IP address"),
    ({"denyOut": ["10.0.0.0/33"]}, "not an IP address"),
    ({"denyOut": "10.0.0.0/8"}, "must be a list"),
    ({"dnsServers": ["2001:db8::53"]}, "at most 10 IPv4 addresses"),
    ({"dnsServers": ["192.0.2.53"] * 11}, "at most 10 IPv4 addresses"),
    ({"rules": {"10.0.0.0/8": [{"transform": {"headers": {"X": "1"}}}]}}, "rules by address are not supported"),
    ({"rules": {"a.test": [{"transform": {"headers": {"X": "a\r\nY: b"}}}]}}, "without line breaks"),
    ({"egressProxy": {"address": "proxy.test:1080"}}, "SOCKS5 egress proxy) is not supported"),
])
def test_what_cannot_be_enforced_is_a_400(update: dict[str, object], words: str) -> None:
    with pytest.raises(UserError) as caught:
        network.updated(None, update)
    assert caught.value.status == 400 and words in caught.value.message


def test_dns_servers_are_allowed_addresses_and_header_rules_reach_the_policy() -> None:
    rules = {"api.test": [{"transform": {"headers": {"X-Api-Key": "k"}}}]}
    net = network.updated(None, {"denyOut": ["0.0.0.0/0"], "dnsServers": ["192.0.2.53"], "rules": rules})
    assert net == {"denyOut": ["0.0.0.0/0"], "dnsServers": ["192.0.2.53"], "rules": rules}
    policy = network.policy(net, internet=True)
    assert policy.allows("192.0.2.53") and not policy.allows("192.0.2.54")
    assert policy.rules == (("api.test", (("X-Api-Key", "k"),)),) and policy.filtered
    assert "k" not in str(policy.to_json())  # the audit and logs name ruled domains, never header values
    assert network.updated(net, {}) is None  # omitted fields are cleared, rules and DNS servers with them


def test_domains_are_accepted_and_kept_as_given() -> None:
    net = network.updated(None, {"allowOut": ["allowed.test", "*.example.test"], "denyOut": ["0.0.0.0/0"]})
    assert net == {"allowOut": ["allowed.test", "*.example.test"], "denyOut": ["0.0.0.0/0"]}
    assert network.policy(net, internet=True).domains == ("allowed.test", "*.example.test")


def test_policy_of_stored_settings() -> None:
    assert network.policy({"allowOut": ["1.2.3.4"]}, internet=False).allows("1.2.3.4")
    assert not network.policy(None, internet=False).allows("1.2.3.4")
    assert network.policy(None, internet=True).empty
