"""SMTP submission ingress (aiosmtpd) on the gateway's event loop.

Recipients are screened at RCPT (550 per refused recipient, the rest still go), the whole
message at DATA; 250 is said only after the upstream accepted. The unsubscribe mailbox is
the one address that takes mail without AUTH, and only for itself.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from gateway.addresses import InvalidAddress, email_key
from gateway.auth.credentials import account_with_secret
from gateway.auth.login_limits import LOCKED_OUT_TEXT, LoginLimiter
from gateway.config.settings import Config
from gateway.mail.parse import parse_email
from gateway.model import Account, Channel, EmailContent, OutboundMessage, Reason
from gateway.pipeline.process import (
    Outcome,
    Pipeline,
    TemporaryFailure,
    delivery_key,
    is_small_mime,
)
from gateway.runtime.clock import Clock
from gateway.runtime.ids import unique_hex
from gateway.runtime.logs import log_event
from gateway.runtime.metrics import Metrics
from gateway.services.unsubscribe import Unsubscribe
from gateway.store.base import StoreUnavailable

log = logging.getLogger("gateway.smtp")

AUTH_REQUIRED = "530 5.7.0 Authentication required"
LOCKED_OUT = f"454 4.7.0 {LOCKED_OUT_TEXT}"
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
TOKEN_IN_SUBJECT = re.compile(r"unsubscribe\s+(\S+)", re.IGNORECASE)


def reply_for_reasons(reasons: tuple[Reason, ...]) -> str:
    codes = ",".join(dict.fromkeys(r.code for r in reasons))
    detail = "; ".join(dict.fromkeys(r.message for r in reasons))
    return _one_line(f"550 5.7.1 {codes}: {detail}")


def _one_line(reply: str, limit: int = 500) -> str:
    """SMTP replies are single CRLF-free lines; agents' text must never break the protocol."""
    return re.sub(r"[\r\n]+", " ", reply)[:limit]


class AccountAuthenticator:
    """Checks AUTH PLAIN/LOGIN against [[accounts]] in constant time per account; a client
    address or account name with too many recent failures waits (454) unheard."""

    def __init__(
        self, accounts: Callable[[], tuple[Account, ...]], limiter: LoginLimiter
    ) -> None:
        self.accounts = accounts
        self.limiter = limiter

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        known = login if any(account.name == login for account in self.accounts()) else None
        peer = str(session.peer[0]) if isinstance(session.peer, tuple) else str(session.peer)
        if self.limiter.locked(peer, known):
            return AuthResult(success=False, handled=False, message=LOCKED_OUT)
        match = account_with_secret(
            self.accounts(), auth_data.password, lambda account: account.name == login
        )
        if match is None:
            log_event(
                log, "auth-failed", logging.WARNING,
                login=known or "(not an account name)", peer=str(session.peer),
            )
            self.limiter.failed(peer, known, "smtp")
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=match)


class SubmissionHandler:
    def __init__(
        self,
        pipeline: Pipeline,
        unsubscribe: Unsubscribe,
        clock: Clock,
        max_recipients: int,
    ) -> None:
        self.pipeline = pipeline
        self.unsubscribe = unsubscribe
        self.clock = clock
        self.max_recipients = max_recipients
        self.mailbox_key = email_key(unsubscribe.mailbox) if unsubscribe.mailbox else ""

    def _message(
        self, account: Account, envelope: Envelope, recipients: tuple[str, ...],
        email: EmailContent | None = None, raw: bytes = b"",
    ) -> OutboundMessage:
        sender = envelope.mail_from or ""
        return OutboundMessage(
            id=unique_hex(),
            channel=Channel.EMAIL,
            ingress="smtp",
            account=account,
            envelope_sender=sender,
            recipients=recipients,
            received_at=self.clock.now(),
            idempotency_key=delivery_key(account.name, sender, raw) if raw else "",
            email=email,
        )

    def _is_mailbox(self, address: str) -> bool:
        try:
            return bool(self.mailbox_key) and email_key(address) == self.mailbox_key
        except InvalidAddress:
            return False

    @staticmethod
    def _already_listed(envelope: Envelope, address: str) -> bool:
        try:
            key = email_key(address)
            return any(email_key(r) == key for r in envelope.rcpt_tos)
        except InvalidAddress:
            return address in envelope.rcpt_tos

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        if self._is_mailbox(address):
            envelope.rcpt_tos.append(address)
            return "250 2.1.5 OK"
        if not session.authenticated:
            return AUTH_REQUIRED
        if self._already_listed(envelope, address):
            return "250 2.1.5 OK (duplicate recipient, one copy will be sent)"
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return f"452 4.5.3 Too many recipients (at most {self.max_recipients} per message)"
        message = self._message(session.auth_data, envelope, (address,))
        try:
            decision, _ = await self.pipeline.screen(message)
        except TemporaryFailure as exc:
            return _one_line(f"451 4.3.0 {exc.reason}: {exc.text}")
        if not decision.allowed:
            return reply_for_reasons(decision.blocked_recipients[0].reasons)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.original_content or b""
        mailbox_rcpts = [r for r in envelope.rcpt_tos if self._is_mailbox(r)]
        recipients = tuple(r for r in envelope.rcpt_tos if not self._is_mailbox(r))
        if is_small_mime(len(raw), raw.count(b"\n--")):
            email = parse_email(raw, smtputf8=envelope.smtp_utf8)
        else:  # parsing cost grows with size and with the number of parts
            email = await asyncio.to_thread(parse_email, raw, smtputf8=envelope.smtp_utf8)
        unsubscribe_reply = await self._take_unsubscribe(email) if mailbox_rcpts else None
        if not recipients:
            return unsubscribe_reply or "250 2.0.0 OK"
        message = self._message(session.auth_data, envelope, recipients, email, raw)
        try:
            outcome = await self.pipeline.process(message)
        except TemporaryFailure as exc:
            return _one_line(f"451 4.3.0 {exc.reason}: {exc.text}")
        return self._data_reply(outcome)

    def _data_reply(self, outcome: Outcome) -> str:
        """One reply for the whole transaction, so any refusal by the provider is a 5xx.

        The agent learns that something failed (a 250 would hide it, and no bounce follows);
        recipients already accepted are named and, thanks to the delivery ledger, are not
        sent a second copy if the agent resubmits.
        """
        decision = outcome.decision
        if outcome.refused:
            first = outcome.refused[0].error
            code = first.code if 500 <= first.code < 600 else 554
            refused = ", ".join(f"{r.recipient} ({r.error.code} {r.error.text})"
                                for r in outcome.refused)
            delivered = ", ".join(d.recipient for d in outcome.delivered) or "none"
            return _one_line(
                f"{code} 5.0.0 UPSTREAM_REJECTED: upstream refused {refused}; "
                f"delivered to: {delivered}"
            )
        if not outcome.delivered:
            return reply_for_reasons(decision.all_reasons())
        notes = [f"delivered to {len(outcome.delivered)}"]
        if decision.blocked_recipients:
            blocked = decision.blocked_recipients
            codes = ",".join(dict.fromkeys(r.code for b in blocked for r in b.reasons))
            notes.append(f"blocked {len(blocked)} ({codes})")
        return _one_line("250 2.0.0 OK " + "; ".join(notes))

    async def handle_exception(self, error: Exception) -> str:
        """Anything unexpected is a temporary failure: nothing unchecked was sent, the agent
        retries, and the reply never carries the exception's text."""
        log.error("unexpected error in SMTP transaction", exc_info=error)
        return "451 4.3.0 INTERNAL_ERROR: temporary failure, try again later"

    async def _take_unsubscribe(self, email: EmailContent) -> str:
        """Mail to the mailto: link from List-Unsubscribe; the token rides in the subject."""
        match = TOKEN_IN_SUBJECT.search(email.subject)
        try:
            claims = (
                await self.unsubscribe.honor(match.group(1), source="mailto") if match else None
            )
        except StoreUnavailable:
            return "451 4.3.0 STORE_UNAVAILABLE: opt-out not recorded yet, try again later"
        if claims is None:
            return "550 5.7.1 UNSUBSCRIBE_TOKEN_INVALID: no valid unsubscribe token in the subject"
        log_event(log, "unsubscribed", source="mailto", recipient=claims.recipient)
        return "250 2.0.0 OK unsubscribed"


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
