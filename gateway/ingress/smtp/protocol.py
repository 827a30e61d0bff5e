"""The SMTP server itself (aiosmtpd) on the gateway's event loop: its sessions, their
drain at shutdown, TLS, limits, and the enhanced replies for aiosmtpd's own refusals."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any

from aiosmtpd.smtp import SMTP, syntax

from gateway.config.settings import Config
from gateway.ingress.smtp.handler import AccountAuthenticator, SubmissionHandler
from gateway.runtime.logs import log_event
from gateway.runtime.metrics import Metrics

log = logging.getLogger("gateway.smtp")

# aiosmtpd's refusals (the DATA speedup gives the same texts), with an enhanced code and a
# reason; a text aiosmtpd changes goes out as it is.
PROTOCOL_REFUSALS = {
    "552 Error: message size exceeds fixed maximum message size": (
        "552 5.3.4 MESSAGE_TOO_LARGE: the declared SIZE exceeds smtp.max_message_bytes"
    ),
    "552 Error: Too much mail data": (
        "552 5.3.4 MESSAGE_TOO_LARGE: the message exceeds smtp.max_message_bytes"
    ),
    "500 Line too long (see RFC5321 4.5.3.1.6)": (
        "500 5.6.0 MESSAGE_MALFORMED: a line is longer than 998 octets (RFC 5322 2.1.1); "
        "encode long lines (quoted-printable or base64)"
    ),
}
# Commands that move no mail, per connection: a client repeating them past these is flooding
# and is told 421 and disconnected. Mail commands stay unlimited ("*") for pooled clients.
COMMAND_LIMITS = {
    "*": 2**31, "NOOP": 1000, "HELO": 10, "EHLO": 10, "AUTH": 10, "STARTTLS": 2,
    "VRFY": 10, "EXPN": 10, "HELP": 10,
}

class GatewaySMTP(SMTP):
    """aiosmtpd's server, counting open sessions so shutdown can drain them."""

    def __init__(self, handler: SubmissionHandler, sessions: SessionTracker, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sessions = sessions

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sessions.opened(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._sessions.closed(self)
        super().connection_lost(error)

    async def push(self, status: str | bytes) -> None:
        """Give aiosmtpd's own size and line-length refusals an enhanced code and a reason."""
        text = status.decode() if isinstance(status, bytes) else status
        await super().push(PROTOCOL_REFUSALS.get(text, text))

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        self._sessions.transaction_started(self)
        try:
            await super().smtp_DATA(arg)
        except Exception:
            # A failed transaction must not poison the next MAIL (aiosmtpd keeps its envelope).
            self.envelope = self._create_envelope()
            raise
        finally:
            self._sessions.transaction_finished(self)


class SessionTracker:
    """Which SMTP sessions are open and which are inside DATA, for a graceful SIGTERM."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.open: set[GatewaySMTP] = set()
        self.busy: set[GatewaySMTP] = set()
        self.idle = asyncio.Event()
        self.idle.set()

    def opened(self, session: GatewaySMTP) -> None:
        self.open.add(session)
        self.metrics.smtp_sessions.set(len(self.open))

    def closed(self, session: GatewaySMTP) -> None:
        self.open.discard(session)
        self.transaction_finished(session)
        self.metrics.smtp_sessions.set(len(self.open))

    def transaction_started(self, session: GatewaySMTP) -> None:
        self.busy.add(session)
        self.idle.clear()

    def transaction_finished(self, session: GatewaySMTP) -> None:
        self.busy.discard(session)
        if not self.busy:
            self.idle.set()

    async def drain(self, timeout: float) -> None:
        """Let transactions in DATA finish, then close every session."""
        try:
            await asyncio.wait_for(self.idle.wait(), timeout)
        except TimeoutError:
            log_event(log, "drain-timeout", logging.WARNING, busy=len(self.busy))
        for session in list(self.open):
            if session.transport is not None:
                session.transport.close()


def tls_context(config: Config) -> ssl.SSLContext | None:
    if config.smtp.tls_cert is None or config.smtp.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.smtp.tls_cert, config.smtp.tls_key)
    return context


async def start_smtp_server(
    config: Config, handler: SubmissionHandler, authenticator: AccountAuthenticator,
    sessions: SessionTracker, listener: socket.socket | None = None,
) -> asyncio.Server:
    """On `config.smtp.listen`, or on `listener` (a worker's inherited socket)."""
    loop = asyncio.get_running_loop()
    context = tls_context(config)
    auth_needs_tls = not (config.smtp.listen.is_loopback or config.smtp.allow_insecure_auth)

    def protocol() -> GatewaySMTP:
        return GatewaySMTP(
            handler,
            sessions,
            data_size_limit=config.smtp.max_message_bytes,
            enable_SMTPUTF8=True,
            hostname=config.smtp.hostname,
            ident="compliance-gateway",
            tls_context=context,
            require_starttls=False,
            auth_required=False,
            auth_require_tls=auth_needs_tls,
            authenticator=authenticator,
            command_call_limit=COMMAND_LIMITS,
            loop=loop,
        )

    if listener is not None:
        return await loop.create_server(protocol, sock=listener)
    return await loop.create_server(protocol, config.smtp.listen.host, config.smtp.listen.port)
