"""The HTTP listener: aiohttp's protocol behind the gateway's own accept loop
(`gateway.runtime.connections.Listener`), held to `http.max_connections` in all and
`http.max_connections_per_client` per client (429 or 503 beyond; a connection from one of
`http.trusted_proxies` counts in all only), and closing with 408 a connection whose first
request has not finished its header block within `http.first_request_timeout_s` (a client
that connects and says nothing, or sends a header a byte at a time). Between requests
aiohttp's keep-alive timeout closes idle connections.

With `http.tls_cert` the listener speaks HTTPS only (`gateway.runtime.tls`); the first-request
timeout then also bounds the TLS handshake. With `http.internal_listen` there are two
listeners, both held to the same caps; the internal one records its connections so that
`gateway.web.access` serves them every path.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

from gateway.config.settings import HttpConfig
from gateway.runtime.connections import ConnectionLimits, Listener
from gateway.runtime.metrics import Metrics

# A refused connection is read for this long after its refusal, so that the request the
# client wrote before reading does not turn the refusal into a reset.
REFUSAL_LINGER_S = 1.0


def _plain_response(status: bytes, text: str, *headers: bytes) -> bytes:
    body = text.encode()
    return b"".join((
        b"HTTP/1.1 ", status, b"\r\nContent-Type: text/plain; charset=utf-8\r\n",
        *(header + b"\r\n" for header in headers),
        b"Connection: close\r\nContent-Length: ", str(len(body)).encode(), b"\r\n\r\n", body,
    ))


REQUEST_TIMEOUT = _plain_response(
    b"408 Request Timeout", "no request header within http.first_request_timeout_s\n"
)


class AdmittedConnection(asyncio.Protocol):
    """Stands in front of aiohttp's protocol for one connection: hands everything on, and
    closes the connection if the first request's header block is late."""

    def __init__(
        self, inner: asyncio.Protocol, release: Callable[[], None], first_request_timeout_s: float,
        internal_connections: set[asyncio.BaseTransport] | None = None,
    ) -> None:
        self._inner, self._release, self._timeout_s = inner, release, first_request_timeout_s
        self._internal = internal_connections
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if self._internal is not None:
            self._internal.add(transport)
        self._deadline = asyncio.get_running_loop().call_later(self._timeout_s, self._late)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen or b"\n\n" in seen:
                self._deadline.cancel()
                self._deadline = None
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        if self._internal is not None and self._transport is not None:
            self._internal.discard(self._transport)
        self._release()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _late(self) -> None:
        self._deadline = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(REQUEST_TIMEOUT)
            self._transport.close()


def refusal_reply(config: HttpConfig) -> Callable[[str], bytes]:
    def reply(scope: str) -> bytes:
        if scope == "client":
            status = b"429 Too Many Requests"
            text = ("too many connections from your address (http.max_connections_per_client"
                    f" = {config.max_connections_per_client})\n")
        else:
            status = b"503 Service Unavailable"
            text = f"too many connections (http.max_connections = {config.max_connections})\n"
        return _plain_response(status, text, b"Retry-After: 1")

    return reply


def start_http_listener(
    protocol: Callable[[], asyncio.Protocol], sock: socket.socket, config: HttpConfig,
    metrics: Metrics, *, name: str = "http", tls: ssl.SSLContext | None = None,
    internal_connections: set[asyncio.BaseTransport] | None = None,
) -> Listener:
    """`protocol` makes aiohttp's protocol for one connection (an `AppRunner`'s server);
    `name` labels the listener's metrics and logs (`http`, `http_internal`)."""
    listener = Listener(
        name, sock,
        # a trusted proxy's requests name their client in X-Forwarded-For (client_address)
        lambda release, _from_proxy: AdmittedConnection(
            protocol(), release, config.first_request_timeout_s, internal_connections
        ),
        ConnectionLimits(
            config.max_connections, config.max_connections_per_client,
            ("http.max_connections", "http.max_connections_per_client"),
        ),
        refusal_reply(config), metrics, linger_s=REFUSAL_LINGER_S,
        trusted_proxies=config.trusted_proxies, tls=tls,
        tls_handshake_timeout_s=config.first_request_timeout_s,
    )
    listener.start()
    return listener
