"""The normalized outbound message and the decision about it.

Every ingress adapter produces an `OutboundMessage`; the pipeline, the pure policy and the
store only ever see these types, which is what keeps one pipeline for every channel.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from typing import Any, NamedTuple


class Channel(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"
    CALL = "call"

    @property
    def is_telephony(self) -> bool:
        return self is not Channel.EMAIL


class Purpose(enum.StrEnum):
    MARKETING = "marketing"
    TRANSACTIONAL = "transactional"


class Role(enum.IntEnum):
    """Ordered so that `role >= Role.MANAGER` reads as 'manager and up'."""

    REP = 1
    MANAGER = 2
    ADMIN = 3
    OWNER = 4


@dataclass(frozen=True)
class SenderIdentity:
    """Who the footer says sent the message (CAN-SPAM and CASL identification)."""

    name: str = ""
    postal_address: str = ""
    email: str = ""
    phone: str = ""
    website: str = ""


@dataclass(frozen=True)
class Account:
    name: str
    secret: str = field(repr=False)
    role: Role
    sender_domains: tuple[str, ...]
    purpose: Purpose = Purpose.MARKETING
    identity: SenderIdentity = SenderIdentity()
    # The agent key that authenticated this request (its id), when one did; None when the
    # account's own secret did. Not part of the account's identity (equality, hash).
    key_id: str | None = field(default=None, compare=False)

    def may_send_from(self, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        return any(d == "*" or d == domain for d in self.sender_domains)


@dataclass(frozen=True)
class EmailAttachment:
    name: str
    content: bytes
    content_type: str
    content_id: str = ""


@dataclass(frozen=True)
class EmailFields:
    """An email given as fields (Postmark's API) rather than as MIME.

    The footer goes into `text_body`/`html_body` as strings, and MIME is written only for an
    upstream that needs it: building and re-parsing MIME cost ten times the rest of a send.
    `headers` are the agent's own; `provider_fields` are Postmark's delivery options (Tag,
    Metadata, TrackOpens, TrackLinks, MessageStream) as given.
    """

    sender: str
    to: str
    cc: str
    reply_to: str
    subject: str
    text_body: str
    html_body: str
    message_id: str
    date: str
    headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[EmailAttachment, ...] = ()
    provider_fields: Mapping[str, Any] = field(default_factory=dict)


class ShownAddress(NamedTuple):
    """An address a reader may take for the sender, besides From's own, and where the
    message shows it: "Sender", "Reply-To", or a header's display name or comment ("From
    display name", "Reply-To comment")."""

    address: str
    where: str


@dataclass(frozen=True)
class EmailContent:
    """What the policy needs to know about an email, extracted once by the ingress adapter.

    `problems` lists why the message cannot be checked or rewritten safely; any entry makes
    the message MESSAGE_MALFORMED. `footer_problems` lists why a footer added to one of its
    HTML bodies could not be seen (FOOTER_NOT_VISIBLE where a footer is required).
    `repairs` names what was repaired or, if a footer is added, will be removed.
    `received_head` is the header block as the agent sent it, kept when the agent signed the
    message (DKIM): the egress compares it with what it forwards.
    `other_identities` are the other addresses a reader takes for the sender, each with where
    it is shown: the Sender and Reply-To addresses, and addresses written into the display
    names and comments of From, Sender and Reply-To, as a reader sees them. `mime` is the
    parsed message the rewriter works on; a message sent through Postmark's API carries its
    `fields` instead, and a template send its `template` request (Postmark renders the body).
    """

    from_addresses: tuple[str, ...]
    subject: str
    is_reply: bool
    message_id: str
    size: int
    problems: tuple[str, ...] = ()
    other_identities: tuple[ShownAddress, ...] = ()
    footer_problems: tuple[str, ...] = ()
    repairs: tuple[str, ...] = ()
    received_head: bytes = field(default=b"", repr=False, compare=False)
    mime: EmailMessage | None = field(default=None, repr=False, compare=False)
    fields: EmailFields | None = field(default=None, repr=False, compare=False)
    template: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class DkimKey:
    """One `[[dkim]]` key: signs mail whose From domain is `domain` or a subdomain of it.
    `private_key_pem` is an RSA key as PKCS#1 PEM, the form dkimpy reads."""

    domain: str
    selector: str
    private_key_pem: bytes = field(repr=False)


@dataclass(frozen=True)
class TelephonyContent:
    """A text or a call as the agent asked for it.

    `form` keeps every field in the order received (repeated ones such as MediaUrl too), so
    the egress can forward exactly what the agent sent, with only the gateway's changes.
    """

    from_number: str
    body: str = ""
    form: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class KnownLocation:
    """What the contact registry knows about where a callee lives (any field may be empty)."""

    timezone: str = ""
    latitude: float | None = None
    longitude: float | None = None
    region: str = ""
    postal_code: str = ""


@dataclass(frozen=True)
class CalleeLocation:
    """Where the called party may be, as far as can be told.

    `zones` are every candidate IANA zone (number-derived plus known address); `regions` are
    the ISO 3166-2 codes (e.g. "US-FL", "CA-ON") whose state or provincial rules apply.
    A non-empty `problem` means the number itself is invalid. `country_name` says the
    country in words for reasons ("Jamaica"), or what is known of a number whose country
    cannot be told.
    """

    e164: str
    country: str = ""
    zones: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    problem: str = ""
    country_name: str = ""


class ConsentKind(enum.StrEnum):
    """Stable names. `express-written`: prior express written consent (47 CFR 64.1200(f)(9));
    `express`: express consent (CASL s10(1), TCPA prior express consent); `implied-purchase`
    and `implied-inquiry`: CASL implied consent; `ebr`: a US established business
    relationship (a purchase or transaction, 47 CFR 64.1200(f)(5))."""

    EXPRESS_WRITTEN = "express-written"
    EXPRESS = "express"
    IMPLIED_PURCHASE = "implied-purchase"
    IMPLIED_INQUIRY = "implied-inquiry"
    EBR = "ebr"


@dataclass(frozen=True)
class Consent:
    """Permission to contact `subject` (E.164 number or email key) on `channel`.

    `expires_at` is computed when recorded (CASL: implied-purchase 2 years, implied-inquiry
    6 months, express never) so the policy only compares times.
    """

    subject: str
    channel: Channel
    kind: ConsentKind
    obtained_at: datetime
    expires_at: datetime | None
    source: str
    evidence: str = ""


@dataclass(frozen=True)
class OutboundMessage:
    id: str
    channel: Channel
    ingress: str
    account: Account
    envelope_sender: str
    recipients: tuple[str, ...]
    received_at: datetime
    idempotency_key: str = ""
    email: EmailContent | None = None
    telephony: TelephonyContent | None = None
    # The agent is given `id` as the message's id (SMTP's "250 2.0.0 OK queued as ID"), not
    # the provider's: the decisions of its delivered copies carry it as their upstream_id.
    gateway_id_given: bool = False


@dataclass(frozen=True)
class Reason:
    code: str
    message: str
    rule: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "rule": self.rule}


@dataclass(frozen=True)
class RecipientDecision:
    recipient: str
    reasons: tuple[Reason, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.reasons


@dataclass(frozen=True)
class CapClaim:
    """A contact limit the store must enforce atomically before the copy is sent.

    The policy sees a count that may be stale by the time of sending; the store's
    check-and-count is what makes "at most `limit` per `window_s`" hold under concurrency.
    """

    recipient: str
    rule: str
    limit: int
    window_s: int


@dataclass(frozen=True)
class Decision:
    """Message-wide reasons block every recipient; recipient reasons block only that one.

    `obligations` are rule ids the egress must apply to an allowed copy (e.g. the SMS
    opt-out notice); `evidence` is what the decision saw (callee zones, local times), kept
    with blocks and shown by `check`.
    """

    message_reasons: tuple[Reason, ...]
    recipients: tuple[RecipientDecision, ...]
    rules_applied: tuple[str, ...]
    rules_version: str
    caps: tuple[CapClaim, ...] = ()
    obligations: tuple[str, ...] = ()
    evidence: Mapping[str, object] = field(default_factory=dict)

    @property
    def allowed_recipients(self) -> tuple[str, ...]:
        if self.message_reasons:
            return ()
        return tuple(r.recipient for r in self.recipients if r.allowed)

    @property
    def blocked_recipients(self) -> tuple[RecipientDecision, ...]:
        """Each blocked recipient with every reason that applies to it."""
        return tuple(
            RecipientDecision(r.recipient, self.message_reasons + r.reasons)
            for r in self.recipients
            if self.message_reasons or not r.allowed
        )

    @property
    def allowed(self) -> bool:
        return bool(self.allowed_recipients)

    def all_reasons(self) -> tuple[Reason, ...]:
        seen: dict[tuple[str, str, str], Reason] = {}
        for reason in self.message_reasons + tuple(
            x for r in self.recipients for x in r.reasons
        ):
            seen.setdefault((reason.code, reason.message, reason.rule), reason)
        return tuple(seen.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "decision": "allow" if self.allowed and not self.blocked_recipients else "block",
            "reasons": [r.as_dict() for r in self.all_reasons()],
            "recipients": [
                {
                    "recipient": r.recipient,
                    "decision": "allow" if r.allowed and not self.message_reasons else "block",
                    "reasons": [x.as_dict() for x in self.message_reasons + r.reasons],
                }
                for r in self.recipients
            ],
            "rules_applied": list(self.rules_applied),
            "rules_version": self.rules_version,
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True)
class Facts:
    """What the store knew when the decision was made; fetched before `decide`.

    Mappings are keyed by recipient as the message names it.
    """

    suppressed: frozenset[str] = frozenset()
    callees: Mapping[str, CalleeLocation] = field(default_factory=dict)
    consents: Mapping[str, tuple[Consent, ...]] = field(default_factory=dict)
    # recipient -> cap window in seconds -> contacts counted in that window
    recent_contacts: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    notice_sent_at: Mapping[str, datetime] = field(default_factory=dict)
    template_has_footer: bool | None = None


@dataclass(frozen=True)
class BlockRecord:
    time: datetime
    channel: Channel
    account: str
    sender: str
    recipient: str
    reasons: tuple[Reason, ...]
    rules_version: str
    message_id: str = ""
    subject: str = ""
    size: int = 0
    gateway_id: str = ""
    evidence: Mapping[str, object] = field(default_factory=dict)
    id: int | None = None


class DecisionOutcome(enum.StrEnum):
    ALLOWED = "allowed"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class DecisionRecord:
    """One recipient's decision as the decision log keeps it: every decision, allowed and
    blocked, of every channel, with the evidence that made it lawful or not. Metadata only,
    never a body.

    `upstream_id` is the id the agent was given for the copy (Twilio's sid, Postmark's
    MessageID, the SMTP queue id), None when nothing went out. `key_id` is the agent key
    that authenticated the request, None for the account's own secret. `evidence` is a JSON
    object: candidate zones with local times, the rules applied with their citations, the
    consent record used, suppression hits, the rewrites made, the upstream's answer.
    """

    time: datetime
    channel: Channel
    account: str
    sender: str
    recipient: str
    purpose: Purpose
    outcome: DecisionOutcome
    reasons: tuple[Reason, ...]
    rules_version: str
    key_id: str | None = None
    upstream_id: str | None = None
    subject: str = ""
    gateway_id: str = ""
    evidence: Mapping[str, object] = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True)
class Suppression:
    """`address` is the spelling that opted out (its key); `mailbox` the key of the mailbox it
    reaches, which every spelling of that mailbox looks up ("" for numbers, and for rows not
    yet folded)."""

    address: str
    source: str
    reason: str
    time: datetime
    actor: str = ""
    mailbox: str = ""


@dataclass(frozen=True)
class AuditEvent:
    time: datetime
    actor: str
    action: str
    subject: str = ""
    details: dict[str, object] = field(default_factory=dict)
    id: int | None = None
    prev_hash: str = ""
    hash: str = ""


TWILIO_API_VERSION = "2010-04-01"
# What starts an agent key (`keys create`); account secrets may not start with it.
AGENT_KEY_PREFIX = "cgk_"


@dataclass(frozen=True)
class Receipt:
    """What the provider answered for one accepted copy (its resource, when it has one)."""

    upstream_id: str
    document: Mapping[str, object] | None = None


class UpstreamTemporaryError(Exception):
    """Try again later: outage, timeout, 4xx from the provider. The agent gets a 4xx/503.

    `maybe_delivered` marks a failure after the message was handed over (a timeout waiting
    for the final reply): the provider may have accepted it, so a retry must not resend it
    right away.
    """

    def __init__(self, text: str, *, maybe_delivered: bool = False) -> None:
        super().__init__(text)
        self.maybe_delivered = maybe_delivered


class UpstreamPermanentError(Exception):
    """The provider refused for good; its code and text go back to the agent.

    `recipient_inactive` says the provider refused because the recipient opted out or is
    suppressed on its side (Twilio 21610, Postmark 406): the gateway suppresses too.
    `status` and `document` keep the provider's own answer whole, where it has one, so an
    ingress speaking the same provider's protocol can hand it back unchanged.
    """

    def __init__(
        self,
        code: int,
        text: str,
        *,
        recipient_inactive: bool = False,
        status: int | None = None,
        document: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text
        self.recipient_inactive = recipient_inactive
        self.status = status
        self.document = dict(document) if document is not None else None
