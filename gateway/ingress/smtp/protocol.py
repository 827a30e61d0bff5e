"""The SMTP server itself (aiosmtpd) on the gateway's event loop: its sessions, their
drain at shutdown, TLS, limits, and the enhanced replies for aiosmtpd's own refusals.

Connections come through `gateway.runtime.connections.Listener`, which holds them to
`smtp.max_connections` in all and `smtp.max_connections_per_client` per client (421
beyond); a session that has not said EHLO or HELO within `smtp.first_command_timeout_s` is
told 421 and closed; without AUTH (the unsubscribe mailbox is the only address that takes
mail then) a message may be at most `smtp.max_unauthenticated_bytes`. A connection from
one of `smtp.trusted_proxies` must begin with a PROXY protocol header naming the client (see
`gateway.ingress.smtp.client_address`), within the same `smtp.first_command_timeout_s`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword, syntax

from gateway.config.settings import Config
from gateway.ingress.smtp.client_address import client_address
from gateway.ingress.smtp.handler import AccountAuthenticator, SubmissionHandler
from gateway.runtime.connections import ConnectionLimits, Listener
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
# A trusted proxy's header is due within aiosmtpd's `proxy_protocol_timeout`, set past the
# first-command deadline (which closes a silent proxy with a reply saying why) and, as
# aiosmtpd asks, at least 3 s.
PROXY_TIMEOUT_MARGIN_S = 1.0
PROXY_TIMEOUT_FLOOR_S = 3.0
# Commands that move no mail, per connection: a client repeating them past these is flooding
# and is told 421 and disconnected. Mail commands stay unlimited ("*") for pooled clients.
COMMAND_LIMITS = {
    "*": 2**31, "NOOP": 1000, "HELO": 10, "EHLO": 10, "AUTH": 10, "STARTTLS": 2,
    "VRFY": 10, "EXPN": 10, "HELP": 10,
}

# The same refusals for a session without AUTH, whose limit is smtp.max_unauthenticated_bytes.
UNAUTHENTICATED_SIZE_REFUSALS = {
    "552 Error: message size exceeds fixed maximum message size": (
        "552 5.3.4 MESSAGE_TOO_LARGE: the declared SIZE exceeds what a session without AUTH "
        "may send (smtp.max_unauthenticated_bytes, {limit} bytes)"
    ),
    "552 Error: Too much mail data": (
        "552 5.3.4 MESSAGE_TOO_LARGE: without AUTH a message may be at most "
        "smtp.max_unauthenticated_bytes ({limit} bytes)"
    ),
}


class GatewaySMTP(SMTP):
    """aiosmtpd's server, counting open sessions so shutdown can drain them, releasing its
    place under the connection caps when it closes, holding sessions without AUTH to a
    small message size, and reading a trusted proxy's PROXY protocol header.

    `from_proxy`: the peer is one of `smtp.trusted_proxies`, so the connection must begin
    with a PROXY header. aiosmtpd reads it before the greeting (`proxy_protocol_timeout`,
    and `SubmissionHandler.handle_PROXY` accepts a valid one); a connection without a valid
    header is closed by aiosmtpd and logged here, one that sends nothing is closed at our
    first-command deadline, which comes first and says why."""

    def __init__(
        self, handler: SubmissionHandler, sessions: SessionTracker, *,
        accounts: AccountAuthenticator | None = None, release: Callable[[], None] = lambda: None,
        first_command_timeout_s: float = 10.0,
        max_unauthenticated_bytes: int | None = None, from_proxy: bool = False,
        **kwargs: Any,
    ) -> None:
        if from_proxy:
            kwargs["proxy_protocol_timeout"] = max(
                PROXY_TIMEOUT_FLOOR_S, first_command_timeout_s + PROXY_TIMEOUT_MARGIN_S
            )
        super().__init__(handler, **kwargs)
        self._accounts = accounts
        self._sessions = sessions
        self._release = release
        self._from_proxy = from_proxy
        self._first_command_timeout_s = first_command_timeout_s
        self._full_size_limit = self.data_size_limit
        limits = [v for v in (self.data_size_limit, max_unauthenticated_bytes) if v]
        self._unauthenticated_size_limit = min(limits) if limits else None
        self._first_command: asyncio.TimerHandle | None = None
        self._greeted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Called again after STARTTLS (new transport; aiosmtpd makes a new session, which
        keeps the client the proxy named)."""
        relayed = self.session.proxy_data if self.session is not None else None
        self._sessions.opened(self)
        super().connection_made(transport)
        if self.session is not None and relayed is not None:
            self.session.proxy_data = relayed
        if self._first_command is None and not self._greeted:
            self._first_command = self.loop.call_later(
                self._first_command_timeout_s, self._no_greeting
            )

    def connection_lost(self, error: Exception | None) -> None:
        header = self.session.proxy_data if self.session is not None else None
        if self._from_proxy and header is not None and not header.valid:
            assert self.session is not None
            log_event(log, "proxy-header-refused", logging.WARNING,
                      proxy=client_address(self.session),
                      problem=header.error or "not recognized")
        self._sessions.closed(self)
        self._release()
        if self._first_command is not None:
            self._first_command.cancel()
        super().connection_lost(error)

    def _no_greeting(self) -> None:
        if self._greeted or self.transport is None:
            return
        header_due = self._from_proxy and (self.session is None or not self.session.proxy_data)
        awaited = "PROXY protocol header" if header_due else "EHLO or HELO"
        self.transport.write(
            f"421 4.4.2 {self.hostname} no {awaited} within smtp.first_command_timeout_s "
            f"({self._first_command_timeout_s:g} s), closing\r\n".encode()
        )
        self.transport.close()

    def _greeting(self) -> None:
        self._greeted = True
        if self._first_command is not None:
            self._first_command.cancel()

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        self._greeting()
        await super().smtp_HELO(hostname)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        self._greeting()
        await super().smtp_EHLO(hostname)

    async def auth_PLAIN(self, _: object, args: list[str]) -> AuthResult:
        """RFC 4616, as aiosmtpd reads it, with an awaited check: the sign-in counts and
        agent keys live in the store (aiosmtpd's `authenticator` cannot await)."""
        response = await self._client_response(args, 1, "")
        if response is None:
            return AuthResult(success=False, handled=True)
        parts = response.split(b"\x00")
        if len(parts) != 3:
            await self.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._check(LoginPassword(parts[1], parts[2]))

    async def auth_LOGIN(self, _: object, args: list[str]) -> AuthResult:
        """The LOGIN mechanism (user name, then password, each base64), as aiosmtpd reads it."""
        login = await self._client_response(args, 1, self.AuthLoginUsernameChallenge)
        password = None if login is None else await self._client_response(
            args, 2, self.AuthLoginPasswordChallenge
        )
        if login is None or password is None:
            return AuthResult(success=False, handled=True)
        return await self._check(LoginPassword(login, password))

    async def _client_response(self, args: list[str], step: int, challenge: str) -> bytes | None:
        """The response sent with the AUTH command (`step` 1 only), else the answer to
        `challenge`; None once the client cancelled (`*`) or sent bad base64, which has
        been answered already."""
        if step == 1 and len(args) == 2:
            try:
                return base64.b64decode(args[1].encode(), validate=True)
            except binascii.Error:
                await self.push("501 5.5.2 Can't decode base64")
                return None
        try:
            response = await self.challenge_auth(challenge)
        except ValueError:  # longer than the reader's limit (its rest is read as a command)
            await self.push("500 5.5.6 AUTH response line too long")
            return None
        return None if response is MISSING else bytes(response)

    async def _check(self, credentials: LoginPassword) -> AuthResult:
        """Without an authenticator (a server built only to relay, as in the speedup
        tests) every AUTH fails."""
        if self._accounts is None:
            return AuthResult(success=False)
        assert self.session is not None
        return await self._accounts.check(self.session, credentials)

    def _authenticated(self) -> bool:
        return self.session is not None and bool(self.session.authenticated)

    async def push(self, status: str | bytes) -> None:
        """Give aiosmtpd's own size and line-length refusals an enhanced code and a reason."""
        text = status.decode() if isinstance(status, bytes) else status
        if text in UNAUTHENTICATED_SIZE_REFUSALS and self.data_size_limit != self._full_size_limit:
            # the smaller limit of a session without AUTH is the one that was exceeded
            text = UNAUTHENTICATED_SIZE_REFUSALS[text].format(limit=self.data_size_limit)
        await super().push(PROTOCOL_REFUSALS.get(text, text))

    async def _with_session_size_limit(self, command: Callable[[str], Any], arg: str) -> None:
        """aiosmtpd (and the DATA speedup) read `data_size_limit` when MAIL or DATA begins:
        a session without AUTH sees the smaller limit for the length of the command. EHLO
        keeps announcing the full SIZE, for clients that authenticate after it."""
        if not self._authenticated():
            self.data_size_limit = self._unauthenticated_size_limit
        try:
            await command(arg)
        finally:
            self.data_size_limit = self._full_size_limit

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str) -> None:
        await self._with_session_size_limit(super().smtp_MAIL, arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        self._sessions.transaction_started(self)
        try:
            await self._with_session_size_limit(super().smtp_DATA, arg)
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


def refusal_reply(config: Config) -> Callable[[str], bytes]:
    """What a connection over a cap is told before it is closed."""
    smtp = config.smtp

    def reply(scope: str) -> bytes:
        if scope == "client":
            return (f"421 4.7.0 {smtp.hostname} too many connections from your address "
                    f"(smtp.max_connections_per_client = {smtp.max_connections_per_client}), "
                    "try again later\r\n").encode()
        return (f"421 4.3.2 {smtp.hostname} too many connections (smtp.max_connections = "
                f"{smtp.max_connections}), try again later\r\n").encode()

    return reply


def start_smtp_server(
    config: Config, handler: SubmissionHandler, authenticator: AccountAuthenticator,
    sessions: SessionTracker, listener: socket.socket, metrics: Metrics,
    *, tls: ssl.SSLContext | None,
) -> Listener:
    """Accepting on `listener` (bound by the caller, or a worker's inherited socket);
    `tls` offers STARTTLS (`gateway.runtime.tls`, built from smtp.tls_cert/tls_key)."""
    loop = asyncio.get_running_loop()
    auth_needs_tls = not (config.smtp.listen.is_loopback or config.smtp.allow_insecure_auth)

    def protocol(release: Callable[[], None], from_proxy: bool) -> GatewaySMTP:
        return GatewaySMTP(
            handler,
            sessions,
            release=release,
            from_proxy=from_proxy,
            first_command_timeout_s=config.smtp.first_command_timeout_s,
            max_unauthenticated_bytes=config.smtp.max_unauthenticated_bytes,
            data_size_limit=config.smtp.max_message_bytes,
            enable_SMTPUTF8=True,
            hostname=config.smtp.hostname,
            ident="compliance-gateway",
            tls_context=tls,
            require_starttls=False,
            auth_required=False,
            auth_require_tls=auth_needs_tls,
            accounts=authenticator,
            command_call_limit=COMMAND_LIMITS,
            loop=loop,
        )

    server = Listener(
        "smtp", listener, protocol,
        ConnectionLimits(
            config.smtp.max_connections, config.smtp.max_connections_per_client,
            ("smtp.max_connections", "smtp.max_connections_per_client"),
        ),
        refusal_reply(config), metrics, trusted_proxies=config.smtp.trusted_proxies,
    )
    server.start()
    return server
