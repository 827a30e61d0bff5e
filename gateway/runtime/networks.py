"""Which network a client address stands for, where one client commonly holds many
addresses: an IPv6 client a whole /64, an attacker often a whole IPv4 /24."""

from __future__ import annotations

import functools
import ipaddress

IPV6_CLIENT_PREFIX = 64


@functools.lru_cache(maxsize=4096)
def network_of(host: str, ipv4_prefix: int = 32) -> str:
    """`host`'s IPv4 network of `ipv4_prefix` bits (also for an IPv4-mapped IPv6 address;
    at 32 bits the address itself) or its IPv6 /64; anything else (a Unix socket's path)
    as it is."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is None:
            return str(ipaddress.ip_network(f"{address}/{IPV6_CLIENT_PREFIX}", strict=False))
        address = address.ipv4_mapped
    if ipv4_prefix == 32:
        return str(address)
    return str(ipaddress.ip_network(f"{address}/{ipv4_prefix}", strict=False))
