"""The network a client address stands for: the connection caps group by IPv4 address and
IPv6 /64, the sign-in limits by IPv4 /24 and IPv6 /64; one function serves both."""

from __future__ import annotations

import pytest

from gateway.runtime.networks import network_of

CASES = [
    ("203.0.113.7", 32, "203.0.113.7"),
    ("203.0.113.7", 24, "203.0.113.0/24"),
    ("::ffff:203.0.113.7", 24, "203.0.113.0/24"),
    ("::ffff:203.0.113.7", 32, "203.0.113.7"),
    ("2001:db8:1:2:3:4:5:6", 32, "2001:db8:1:2::/64"),
    ("2001:db8:1:2:3:4:5:6", 24, "2001:db8:1:2::/64"),
    ("fe80::1%eth0", 24, "fe80::/64"),
    ("/run/gateway.sock", 24, "/run/gateway.sock"),
    ("", 24, ""),
]


@pytest.mark.parametrize(("host", "bits", "network"), CASES)
def test_the_network_a_client_stands_for(host: str, bits: int, network: str) -> None:
    assert network_of(host, bits) == network
