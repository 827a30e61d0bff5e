"""Who an SMTP session's client is, behind a proxy that speaks the PROXY protocol.

A connection from one of `smtp.trusted_proxies` begins with HAProxy's PROXY protocol header
(v1 text or v2 binary), which names the client the proxy took the connection from; the
header is read with aiosmtpd's own parser (`aiosmtpd.proxy_protocol.get_proxy`) and kept as
the session's `proxy_data`, which aiosmtpd sets for nothing else. Any other connection is
never read for a header: a client naming itself could pick any address.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from aiosmtpd.proxy_protocol import V2_CMD, ProxyData
from aiosmtpd.smtp import Session


def client_address(session: Session) -> str:
    """The address of the session's client: what the sign-in limits count against and what
    logs name. The one its trusted proxy's header names, else the socket peer's."""
    relayed = _relayed_address(session.proxy_data)
    if relayed:
        return relayed
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


def _relayed_address(header: ProxyData | None) -> str:
    """The client's IP address a valid PROXY header carries, or "" when it carries none:
    a v2 LOCAL connection (the proxy's own health check), v1 UNKNOWN, a Unix socket. The
    protocol says the connection's own endpoints count then, so the proxy is the client."""
    if header is None or not header.valid or header.command == V2_CMD.LOCAL:
        return ""
    if isinstance(header.src_addr, IPv4Address | IPv6Address):
        return str(header.src_addr)
    return ""

