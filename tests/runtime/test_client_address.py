"""Who the client of an HTTP request is behind trusted proxies: X-Forwarded-For walked from
the right, and never read from anyone else (the gateway's own requests are in
tests/web/test_client_address.py)."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.config.settings import TrustedProxies
from gateway.runtime.client_address import forwarded_client, hop_address

PROXIES = TrustedProxies(tuple(
    ipaddress.ip_network(n) for n in ("127.0.0.1/32", "10.0.0.0/8", "2001:db8:ffff::/48")
))


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        # a trusted peer: the right-most address that is not a trusted proxy
        ("127.0.0.1", ["203.0.113.7"], "203.0.113.7"),
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", ["198.51.100.66, 203.0.113.7"], "203.0.113.7"),  # left-most spoofed
        ("127.0.0.1", ["198.51.100.66, 203.0.113.7, 10.1.2.3"], "203.0.113.7"),
        ("127.0.0.1", ["198.51.100.66", "203.0.113.7, 10.1.2.3"], "203.0.113.7"),  # 2 lines
        ("127.0.0.1", ["10.9.9.9, 10.1.2.3"], "10.9.9.9"),  # all trusted: the farthest
        ("127.0.0.1", [" 203.0.113.7 ,10.1.2.3 "], "203.0.113.7"),
        ("127.0.0.1", ["2001:DB8::7"], "2001:db8::7"),
        ("127.0.0.1", ["[2001:db8::7]:4711"], "2001:db8::7"),
        ("127.0.0.1", ["203.0.113.7:4711"], "203.0.113.7"),
        ("127.0.0.1", ["203.0.113.7, 2001:db8:ffff::1"], "203.0.113.7"),
        ("::ffff:127.0.0.1", ["203.0.113.7"], "203.0.113.7"),  # a dual-stack listener's peer
        # garbage ends the walk at the nearest trusted hop, never names a client
        ("127.0.0.1", ["garbage"], "127.0.0.1"),
        ("127.0.0.1", ["unknown"], "127.0.0.1"),
        ("127.0.0.1", [""], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.7, garbage"], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.7, garbage, 10.1.2.3"], "10.1.2.3"),
        ("127.0.0.1", ["203.0.113.7,"], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.7 10.1.2.3"], "127.0.0.1"),
        ("127.0.0.1", ["999.0.113.7"], "127.0.0.1"),
        ("127.0.0.1", ["fe80::1%eth0"], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.7\r\nX-Evil: 1"], "127.0.0.1"),
        # an untrusted peer's header is never read
        ("198.51.100.1", ["203.0.113.7"], "198.51.100.1"),
        ("198.51.100.1", ["10.1.2.3"], "198.51.100.1"),
        ("", ["203.0.113.7"], ""),
    ],
)
def test_the_client_is_the_right_most_address_no_trusted_proxy_wrote(
    peer: str, forwarded_for: list[str], client: str
) -> None:
    assert forwarded_client(peer, forwarded_for, PROXIES) == client


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert forwarded_client("127.0.0.1", ["203.0.113.7"], TrustedProxies()) == "127.0.0.1"


@pytest.mark.parametrize(
    ("hop", "address"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("203.0.113.7:80", "203.0.113.7"),
        ("2001:0db8:0:0:0:0:0:7", "2001:db8::7"),
        ("[2001:db8::7]", "2001:db8::7"),
        ("[2001:db8::7]:443", "2001:db8::7"),
        ("2001:db8::7:80", "2001:db8::7:80"),  # a bare IPv6 address, not one with a port
        ("_hidden", None),
        ("example.com", None),
        ("203.0.113", None),
        ("1", None),
        ("[2001:db8::7", None),
        ("203.0.113.7:", None),
    ],
)
def test_an_entry_is_an_ip_address_with_or_without_a_port(hop: str, address: str | None) -> None:
    assert hop_address(hop) == address


@pytest.mark.parametrize(
    ("address", "trusted"),
    [
        ("127.0.0.1", True),
        ("::ffff:127.0.0.1", True),
        ("10.200.0.1", True),
        ("11.0.0.1", False),
        ("2001:db8:ffff:1::1", True),
        ("2001:db8:fffe::1", False),
        ("localhost", False),
        ("", False),
    ],
)
def test_trusted_proxies_are_addresses_in_the_networks(address: str, trusted: bool) -> None:
    assert PROXIES.trusts(address) is trusted
