"""The default egress policy as nft text (no root, no nft): what is dropped, the DNS path, and the allow list."""

from __future__ import annotations

import ipaddress

import pytest

from sandhive.node import network


def _set(script: str, name: str) -> set[str]:
    for line in script.splitlines():
        if line.startswith(f"add element inet {network.EGRESS_TABLE} {name} "):
            return {e.strip() for e in line.split("{", 1)[1].rsplit("}", 1)[0].split(",")}
    return set()


def test_private_ranges_dropped_after_dns_and_allow() -> None:
    script = network.egress_script(["10.255.255.53"], [ipaddress.ip_network("10.9.0.0/16")])
    blocked = _set(script, "blocked4")
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8",
            "169.254.0.0/16"} <= blocked
    assert {"fc00::/7", "fe80::/10"} <= _set(script, "blocked6")
    assert _set(script, "dns4") == {"10.255.255.53"} and _set(script, "allow4") == {"10.9.0.0/16"}
    rules = [line for line in script.splitlines() if line.startswith("add rule")]
    order = [next(i for i, r in enumerate(rules) if word in r) for word in ("@dns4", "@allow4", "@blocked4")]
    assert order == sorted(order)
    assert "dport 53" in rules[order[0]]


def test_documentation_ranges_stay_reachable() -> None:
    """Closed networks put the outside world there (pypi.org is 203.0.113.80 on the CI hosts): dropping them
    broke `pip install` in every sandbox and build, and protects nothing the internet routes."""
    blocked = [ipaddress.ip_network(n) for n in _set(network.egress_script([], []), "blocked4")]
    for doc_range in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "198.18.0.0/15"):
        assert not any(ipaddress.ip_network(doc_range).overlaps(b) for b in blocked), doc_range


def test_host_lan_is_dropped_and_overlaps_collapse() -> None:
    script = network.egress_script([], [], [ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("10.1.0.0/16"),
                                            ipaddress.ip_network("8.8.4.0/24")])
    assert "8.8.4.0/24" in _set(script, "blocked4") and "10.1.0.0/16" not in _set(script, "blocked4")


def test_allow_none_keeps_the_loaded_allowances() -> None:
    script = network.egress_script([], None)
    assert "flush set inet sandhive_egress allow4" not in script
    assert "flush set inet sandhive_egress allow4" in network.egress_script([], [])


def test_a_server_start_keeps_the_granted_ranges() -> None:
    """`allow_egress` grants sit in sets no (re)load flushes, accepted before the drops: a server starting on
    the same host (which replaces `--egress-allow`) once took a build's registry grant away mid-push, and the
    push hung on dropped packets."""
    for script in (network.egress_script([], []), network.egress_script([], None)):
        assert not any(line.startswith("flush set") and " grant" in line for line in script.splitlines())
        rules = [line for line in script.splitlines() if line.startswith("add rule")]
        grant = next(i for i, r in enumerate(rules) if "ip daddr @grant4 accept" in r)
        assert grant < next(i for i, r in enumerate(rules) if "@blocked4 drop" in r)
        assert any("ip6 daddr @grant6 accept" in r for r in rules)


def test_bad_cidr_is_named() -> None:
    with pytest.raises(ValueError, match="not-a-range"):
        network.parse_egress_allow(["10.0.0.0/8", "not-a-range"])
