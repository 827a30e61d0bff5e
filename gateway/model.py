"""The normalized outbound message and the decision about it.

Every ingress adapter produces an `OutboundMessage`; the pipeline, the pure policy and the
store only ever see these types, which is what keeps one pipeline for every channel.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage


class Channel(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"
    CALL = "call"


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

    def may_send_from(self, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        return any(d == "*" or d == domain for d in self.sender_domains)


@dataclass(frozen=True)
class EmailContent:
    """What the policy needs to know about an email, extracted once by the ingress adapter.

    `problems` lists why the message cannot be checked or rewritten safely; any entry makes
    the message MESSAGE_MALFORMED. `mime` is the parsed message the rewriter works on.
    """

    from_addresses: tuple[str, ...]
    subject: str
    is_reply: bool
    message_id: str
    size: int
    problems: tuple[str, ...] = ()
    mime: EmailMessage | None = field(default=None, repr=False, compare=False)


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
class Decision:
    """Message-wide reasons block every recipient; recipient reasons block only that one."""

    message_reasons: tuple[Reason, ...]
    recipients: tuple[RecipientDecision, ...]
    rules_applied: tuple[str, ...]
    rules_version: str

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
        }


@dataclass(frozen=True)
class Facts:
    """What the store knew when the decision was made; fetched before `decide`."""

    suppressed: frozenset[str] = frozenset()


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
    id: int | None = None


@dataclass(frozen=True)
class Suppression:
    address: str
    source: str
    reason: str
    time: datetime
    actor: str = ""


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
