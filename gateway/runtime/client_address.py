"""Who sent an HTTP request, behind a reverse proxy or load balancer.

The socket peer is the client, unless it is one of `http.trusted_proxies`: then the client
is named by X-Forwarded-For, to which each proxy appends the address it received the
request from. Only the right-hand end of that list was written by proxies the gateway
trusts; whatever stands left of the first address that is not a trusted proxy was written
by the client and may be made up. So the list is walked from the right, past trusted
proxies, and the first other address is the client. An entry that is not an address ends
the walk at the nearest trusted hop: garbage names nobody, and the client must not be able
to pick an address (a fresh one per guess would escape the sign-in limits) by writing it.
A request from any other peer is never read for the header at all.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from aiohttp import web

from gateway.config.settings import TrustedProxies

# The HTTP listener's trusted proxies, on the application (`Gateway.http_app`); an
# application without them trusts no proxy.
TRUSTED_PROXIES = web.AppKey("trusted_proxies", TrustedProxies)
# An address as proxies write it into X-Forwarded-For: bare, or with a port (IPv6 then in
# brackets, as some load balancers write it).
FORWARDED_HOP = re.compile(
    r"\[(?P<bracketed>[0-9A-Fa-f:.]+)\](?::\d{1,5})?"
    r"|(?P<ipv4>[0-9.]+)(?::\d{1,5})?"
    r"|(?P<bare>[0-9A-Fa-f:.]+)"
)


def client_address(request: web.Request) -> str:
    """The address of the client that sent `request`: what the sign-in limits count
    against and what logs and audit entries name."""
    peer = request.remote or ""
    trusted = request.config_dict.get(TRUSTED_PROXIES)
    if trusted is None:
        return peer
    return forwarded_client(peer, request.headers.getall("X-Forwarded-For", ()), trusted)


def forwarded_client(peer: str, forwarded_for: Iterable[str], trusted: TrustedProxies) -> str:
    """The client of a request from `peer` carrying these X-Forwarded-For values (in the
    order of their header lines, which proxies append to as to one list)."""
    if not trusted.trusts(peer):
        return peer
    nearest_trusted = peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        address = hop_address(hop)
        if address is None:
            return nearest_trusted
        if not trusted.trusts(address):
            return address
        nearest_trusted = address
    return nearest_trusted


def hop_address(hop: str) -> str | None:
    """One X-Forwarded-For entry's IP address in its usual form, or None when it is none."""
    match = FORWARDED_HOP.fullmatch(hop)
    if match is None:
        return None
    try:
        return str(ipaddress.ip_address(next(g for g in match.groups() if g is not None)))
    except ValueError:
        return None
