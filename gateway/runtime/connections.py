"""The connections a listener takes: its own accept loop, total and per-client caps, and
logs that say what happened without repeating it thousands of times a second.

asyncio's own accept loop, once the process is out of file descriptors, logs a traceback
for each of up to 100 failed accept() calls per wake-up and schedules as many retries,
each of which fails the same way (a gateway wrote ~390 MB of logs in 12 s). This loop
accepts up to ACCEPT_BATCH connections per wake-up, and after a failed accept() stops
accepting for ACCEPT_RETRY_S, once; the failure is logged at most once per
LOG_INTERVAL_S with how often it happened.

A connection over a cap is answered by the listener itself (the protocol's refusal, such
as SMTP's 421) and closed, before any protocol object exists for it. A client is an IPv4
address or an IPv6 /64 (one host commonly has a whole /64). A connection from one of the
listener's trusted proxies counts in all only: every client behind the proxy has its
address, so a per-client cap on it would be a cap on all of them (the proxy limits clients).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from gateway.config.settings import TrustedProxies
from gateway.runtime.logs import log_event
from gateway.runtime.metrics import Metrics
from gateway.runtime.networks import network_of

log = logging.getLogger("gateway.connections")

ACCEPT_BATCH = 100
ACCEPT_RETRY_S = 1.0
LOG_INTERVAL_S = 10.0
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Refused connections kept half-open at once so that the client reads its refusal; past
# this many, a refused connection is closed at once.
MAX_LINGERING = 1024
# Descriptors the process needs besides its connections: store, upstream pools, spool
# files, logs, worker threads' pipes.
DESCRIPTOR_RESERVE = 256
LISTEN_BACKLOG = 1024
NO_PROXIES = TrustedProxies()

# (release, from_proxy) -> the protocol of an admitted connection.
ProtocolFactory = Callable[[Callable[[], None], bool], asyncio.BaseProtocol]


def peer_host(peername: Any) -> str:
    """The address of a socket peer (`getpeername()`'s host; a Unix socket's path)."""
    return str(peername[0] if isinstance(peername, tuple) and peername else peername)


def client_key(peername: Any) -> str:
    """Who a connection counts against: its IPv4 address, or its IPv6 /64."""
    return network_of(peer_host(peername))


class ThrottledLog:
    """One log event at most every `interval_s`, carrying how many times it happened since
    the last line (`occurrences`)."""

    def __init__(
        self, event: str, level: int = logging.WARNING, interval_s: float = LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.event, self.level, self.interval_s, self.clock = event, level, interval_s, clock
        self._last: float | None = None
        self._since_last = 0

    def note(self, **fields: Any) -> None:
        self._since_last += 1
        now = self.clock()
        if self._last is not None and now - self._last < self.interval_s:
            return
        log_event(log, self.event, self.level, occurrences=self._since_last, **fields)
        self._last, self._since_last = now, 0


class ConnectionLimits:
    """Open connections of one listener, in all and per client; `names` are the
    configuration keys of the two caps, for the refusals."""

    def __init__(self, total: int, per_client: int, names: tuple[str, str]) -> None:
        self.total, self.per_client = total, per_client
        self.total_name, self.per_client_name = names
        self.open = 0
        self.by_client: dict[str, int] = {}

    def refusal(self, client: str | None) -> str:
        """Empty when `client` may open one more connection, else the cap it would break:
        "client" or "total". `client` None is a trusted proxy, held to the total only."""
        if client is not None and self.by_client.get(client, 0) >= self.per_client:
            return "client"
        if self.open >= self.total:
            return "total"
        return ""

    def opened(self, client: str | None) -> Callable[[], None]:
        """Count the connection (per client too unless `client` is None); returns its
        release, which counts only once."""
        self.open += 1
        if client is not None:
            self.by_client[client] = self.by_client.get(client, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.open -= 1
            if client is None:
                return
            left = self.by_client[client] - 1
            if left:
                self.by_client[client] = left
            else:
                del self.by_client[client]

        return release


class Listener:
    """Accepts connections on `sock` for `protocol_factory`, under `limits`.

    `protocol_factory(release, from_proxy)` makes the protocol of an admitted connection,
    which must call `release()` when the connection is lost; `from_proxy` says the peer is
    one of `trusted_proxies` (whose connections count against the total cap only). A
    connection over a cap is sent `refusal_reply(scope)` and closed; with `linger_s`, only
    its sending side is closed first and it is read and closed `linger_s` later, so that a
    client that wrote before reading (HTTP) still gets the refusal rather than a reset.
    With `tls`, an admitted connection must complete a TLS handshake within
    `tls_handshake_timeout_s` before its protocol sees it (a refusal is sent in clear).
    """

    def __init__(
        self, name: str, sock: socket.socket, protocol_factory: ProtocolFactory,
        limits: ConnectionLimits, refusal_reply: Callable[[str], bytes], metrics: Metrics,
        *, linger_s: float = 0.0, trusted_proxies: TrustedProxies = NO_PROXIES,
        tls: ssl.SSLContext | None = None, tls_handshake_timeout_s: float = 60.0,
    ) -> None:
        self.name, self.sock, self.limits = name, sock, limits
        self.trusted_proxies = trusted_proxies
        self._factory, self._refusal_reply, self._metrics = protocol_factory, refusal_reply, metrics
        self._linger_s = linger_s
        self._tls, self._tls_handshake_timeout_s = tls, tls_handshake_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._lingering: dict[socket.socket, asyncio.TimerHandle] = {}
        self._connecting: set[asyncio.Task[None]] = set()
        self._accept_failures = ThrottledLog("accept-failed", logging.ERROR)
        self._refusals = ThrottledLog("connection-refused", logging.WARNING)
        self.serving = False

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        self._listen()

    def close(self) -> None:
        """Stop accepting; connections already open stay open."""
        if self._loop is not None and self.serving:
            self._loop.remove_reader(self.sock.fileno())
        self.serving = False
        if self._retry is not None:
            self._retry.cancel()
        for conn, handle in list(self._lingering.items()):
            handle.cancel()
            conn.close()
        self._lingering.clear()
        self.sock.close()

    def _listen(self) -> None:
        self._retry = None
        assert self._loop is not None
        if self.sock.fileno() < 0:
            return
        self._loop.add_reader(self.sock.fileno(), self._accept)
        self.serving = True

    def _pause(self) -> None:
        assert self._loop is not None
        self._loop.remove_reader(self.sock.fileno())
        self.serving = False
        self._retry = self._loop.call_later(ACCEPT_RETRY_S, self._listen)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._metrics.accept_errors.labels(self.name).inc()
                self._accept_failures.note(
                    listener=self.name, error=exc.strerror or str(exc),
                    errno=errno.errorcode.get(exc.errno or 0, str(exc.errno)),
                    open_connections=self.limits.open,
                    hint="raise the descriptor limit (ulimit -n) or lower the connection caps"
                    if exc.errno in RESOURCE_ERRNOS else "",
                )
                self._pause()
                return
            conn.setblocking(False)
            self._admit(conn, client_key(peer), self.trusted_proxies.trusts(peer_host(peer)))

    def _admit(self, conn: socket.socket, client: str, from_proxy: bool) -> None:
        counted = None if from_proxy else client
        scope = self.limits.refusal(counted)
        if scope:
            self._refuse(conn, client, scope)
            return
        release = self.limits.opened(counted)
        assert self._loop is not None
        task = self._loop.create_task(self._connect(conn, release, from_proxy))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(
        self, conn: socket.socket, release: Callable[[], None], from_proxy: bool
    ) -> None:
        assert self._loop is not None
        try:
            await self._loop.connect_accepted_socket(
                lambda: self._factory(release, from_proxy), conn, ssl=self._tls,
                ssl_handshake_timeout=self._tls_handshake_timeout_s if self._tls else None,
            )
        except Exception as exc:  # the connection went before it was set up
            release()
            conn.close()
            log_event(log, "connection-setup-failed", logging.DEBUG, listener=self.name,
                      error=str(exc))

    def _refuse(self, conn: socket.socket, client: str, scope: str) -> None:
        self._metrics.connections_refused.labels(self.name, scope).inc()
        self._refusals.note(
            listener=self.name, client=client, scope=scope,
            cap=self.limits.per_client_name if scope == "client" else self.limits.total_name,
            open_connections=self.limits.open,
        )
        with contextlib.suppress(OSError):
            conn.send(self._refusal_reply(scope))
        if not self._linger_s or len(self._lingering) >= MAX_LINGERING:
            conn.close()
            return
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)
        assert self._loop is not None
        self._lingering[conn] = self._loop.call_later(self._linger_s, self._close_lingering, conn)

    def _close_lingering(self, conn: socket.socket) -> None:
        """Read what the client sent (a reset would otherwise follow the close), then close."""
        self._lingering.pop(conn, None)
        with contextlib.suppress(OSError):
            for _ in range(16):
                if not conn.recv(65536):
                    break
        conn.close()


def bind_listener(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on `host:port` (IPv6 for a host with a colon); `reuse_port`
    for the workers' listeners sharing one port (`gateway.runtime.processes`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server(
        (host, port), family=family, backlog=LISTEN_BACKLOG, reuse_port=reuse_port
    )


def make_room_for_descriptors(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to `needed` where the hard limit allows; returns the
    soft limit now in force (RLIM_INFINITY counts as enough)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed if soft == resource.RLIM_INFINITY else soft
    wanted = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if wanted > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return soft
