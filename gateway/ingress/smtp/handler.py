"""SMTP submission: what the gateway does with each command (aiosmtpd's handler hooks).

Recipients are screened at RCPT (550 per refused recipient, the rest still go), the whole
message at DATA; 250 is said only after the upstream accepted, and names the message's
gateway id (`250 2.0.0 OK queued as ID`), the `upstream_id` its decisions carry. The
unsubscribe mailbox is the one address that takes mail without AUTH, and only for itself:
of a message only to the mailbox, only the header block is read (the token rides in the
subject).
"""

from __future__ import annotations

import asyncio
import logging
import re

from aiosmtpd.proxy_protocol import ProxyData
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from gateway.addresses import InvalidAddress, email_key
from gateway.auth.authenticate import Authenticator
from gateway.auth.login_limits import LOCKED_OUT_TEXT, LockedOut
from gateway.ingress.smtp.client_address import client_address
from gateway.mail.parse import MAX_FOOTED_PARTS, mailbox_subject, parse_email
from gateway.model import Account, Channel, EmailContent, OutboundMessage, Reason
from gateway.pipeline.process import (
    ALREADY_DELIVERED,
    Outcome,
    Pipeline,
    TemporaryFailure,
    delivery_key,
    is_small_mime,
)
from gateway.runtime.clock import Clock
from gateway.runtime.ids import unique_hex
from gateway.runtime.logs import log_event
from gateway.services.unsubscribe import Unsubscribe
from gateway.store.base import StoreUnavailable

log = logging.getLogger("gateway.smtp")

AUTH_REQUIRED = "530 5.7.0 Authentication required"
LOCKED_OUT = f"454 4.7.0 {LOCKED_OUT_TEXT}"
CREDENTIALS_UNCHECKED = (
    "454 4.7.0 STORE_UNAVAILABLE: credentials cannot be checked just now, try later"
)
TOKEN_IN_SUBJECT = re.compile(r"unsubscribe\s+(\S+)", re.IGNORECASE)


def reply_for_reasons(reasons: tuple[Reason, ...]) -> str:
    codes = ",".join(dict.fromkeys(r.code for r in reasons))
    detail = "; ".join(dict.fromkeys(r.message for r in reasons))
    return _one_line(f"550 5.7.1 {codes}: {detail}")


def _one_line(reply: str, limit: int = 500) -> str:
    """SMTP replies are single CRLF-free lines; agents' text must never break the protocol."""
    return re.sub(r"[\r\n]+", " ", reply)[:limit]


class AccountAuthenticator:
    """Checks AUTH PLAIN/LOGIN (an agent key or the account's secret, see `Authenticator`):
    a source prefix or account name with too many recent failures waits (454) unheard, and
    so does everyone while the store that keeps the counts and keys cannot be read."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    async def check(self, session: Session, credentials: LoginPassword) -> AuthResult:
        login = credentials.login.decode("utf-8", "replace")
        client = client_address(session)
        try:
            match = await self.authenticator.account(
                client, "smtp", credentials.password, login=login,
                name_ok=lambda account: account.name == login,
            )
        except LockedOut:
            return AuthResult(success=False, handled=False, message=LOCKED_OUT)
        except StoreUnavailable:
            return AuthResult(success=False, handled=False, message=CREDENTIALS_UNCHECKED)
        if match is None:
            log_event(log, "auth-failed", logging.WARNING, login=login[:64], peer=client)
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=match)


class SubmissionHandler:
    def __init__(
        self,
        pipeline: Pipeline,
        unsubscribe: Unsubscribe,
        clock: Clock,
        max_recipients: int,
        max_footed_parts: int = MAX_FOOTED_PARTS,
    ) -> None:
        self.pipeline = pipeline
        self.unsubscribe = unsubscribe
        self.clock = clock
        self.max_recipients = max_recipients
        self.max_footed_parts = max_footed_parts
        self.mailbox_key = email_key(unsubscribe.mailbox) if unsubscribe.mailbox else ""

    async def handle_PROXY(
        self, server: SMTP, session: Session, envelope: Envelope, header: ProxyData
    ) -> bool:
        """A valid PROXY header: only connections from `smtp.trusted_proxies` are read for
        one, so the client it names is the session's client (`client_address`)."""
        return True

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
            gateway_id_given=True,
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
            if not self._already_listed(envelope, address):  # a repeated RCPT adds nothing
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
        if not recipients:  # only the mailbox (all a session without AUTH can reach)
            return await self._take_unsubscribe(mailbox_subject(raw))
        if is_small_mime(len(raw), raw.count(b"\n--")):
            email = parse_email(raw, max_footed_parts=self.max_footed_parts)
        else:  # parsing cost grows with size and with the number of parts
            email = await asyncio.to_thread(
                parse_email, raw, max_footed_parts=self.max_footed_parts
            )
        if mailbox_rcpts:
            await self._take_unsubscribe(email.subject)
        message = self._message(session.auth_data, envelope, recipients, email, raw)
        try:
            outcome = await self.pipeline.process(message)
        except TemporaryFailure as exc:
            return _one_line(f"451 4.3.0 {exc.reason}: {exc.text}")
        return self._data_reply(outcome, message.id)

    def _data_reply(self, outcome: Outcome, gateway_id: str) -> str:
        """One reply for the whole transaction, so any refusal by the provider is a 5xx.

        The agent learns that something failed (a 250 would hide it, and no bounce follows);
        recipients already accepted are named and, thanks to the delivery ledger, are not
        sent a second copy if the agent resubmits. A 250 is `250 2.0.0 OK queued as ID`,
        followed by what else happened, in brackets, when anything did: recipients blocked
        at DATA, copies an earlier attempt delivered (not sent again).
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
        notes = []
        repeated = sum(d.receipt.upstream_id == ALREADY_DELIVERED for d in outcome.delivered)
        if repeated:
            notes.append(f"{repeated} delivered by an earlier attempt, not sent again")
        if decision.blocked_recipients:
            blocked = decision.blocked_recipients
            codes = ",".join(dict.fromkeys(r.code for b in blocked for r in b.reasons))
            notes.append(f"blocked {len(blocked)}: {codes}")
        extra = f" ({'; '.join(notes)})" if notes else ""
        return _one_line(f"250 2.0.0 OK queued as {gateway_id}{extra}")

    async def handle_exception(self, error: Exception) -> str:
        """Anything unexpected is a temporary failure: nothing unchecked was sent, the agent
        retries, and the reply never carries the exception's text."""
        log.error("unexpected error in SMTP transaction", exc_info=error)
        return "451 4.3.0 INTERNAL_ERROR: temporary failure, try again later"

    async def _take_unsubscribe(self, subject: str) -> str:
        """Mail to the mailto: link from List-Unsubscribe; the token rides in the subject."""
        match = TOKEN_IN_SUBJECT.search(subject)
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
