"""Email rules (CAN-SPAM, CASL), as pure functions of message, facts and rules.

Evaluated at two stages with the same code: at SMTP RCPT time only the envelope is known
(`message.email is None`), at DATA time the whole message is.
"""

from __future__ import annotations

import functools

from gateway.addresses import InvalidAddress, MailboxRules, domain_of, email_key, folded_key
from gateway.lookalikes import fold
from gateway.model import (
    Decision,
    EmailContent,
    Facts,
    OutboundMessage,
    Reason,
    RecipientDecision,
    SenderIdentity,
)
from gateway.rules.ruleset import RuleSet

EMAIL_FOOTER = "email.footer.unsubscribe"


def decide_email(message: OutboundMessage, facts: Facts, rules: RuleSet) -> Decision:
    purpose = message.account.purpose
    applied: list[str] = []

    def active(rule_id: str) -> bool:
        if rules.applies(rule_id, purpose):
            applied.append(rule_id)
            return True
        return False

    def reason(rule_id: str, message_text: str) -> Reason:
        return Reason(rules.rule(rule_id).code, message_text, rule_id)

    message_reasons: list[Reason] = []
    if message.email is not None and active("email.malformed"):
        message_reasons += [reason("email.malformed", p) for p in message.email.problems]
    if active("email.sender.domain"):
        message_reasons += [
            reason("email.sender.domain", text)
            for text in _sender_problems(message, message.email)
        ]
    if message.email is not None and not message.email.problems:
        if active("email.subject.deceptive"):
            message_reasons += [
                reason("email.subject.deceptive", text)
                for text in _deceptive_subject(message.email, rules)
            ]
        if active("email.identity.canspam"):
            message_reasons += [
                reason("email.identity.canspam", text)
                for text in _canspam_identity_gaps(message.account.identity, rules)
            ]
        if active("email.identity.casl"):
            message_reasons += [
                reason("email.identity.casl", text)
                for text in _casl_identity_gaps(message.account.identity)
            ]
        if message.email.footer_problems and active("email.footer.visible"):
            message_reasons += [
                reason("email.footer.visible", f"the footer could not be made visible: {text}")
                for text in message.email.footer_problems
            ]
        if message.email.template is not None and active("email.footer.template"):
            message_reasons += [
                reason("email.footer.template", text)
                for text in _template_footer_gaps(facts.template_has_footer)
            ]

    obligations = (EMAIL_FOOTER,) if active(EMAIL_FOOTER) else ()
    check_syntax = active("email.recipient.syntax")
    check_suppression = active("email.suppression")
    recipients = tuple(
        RecipientDecision(
            recipient,
            tuple(
                reason(rule_id, text)
                for rule_id, text in _recipient_problems(
                    recipient, facts, rules.mailboxes, check_syntax, check_suppression
                )
            ),
        )
        for recipient in message.recipients
    )
    repairs = list(message.email.repairs) if message.email is not None else []
    return Decision(
        message_reasons=tuple(message_reasons),
        recipients=recipients,
        rules_applied=tuple(applied),
        rules_version=rules.version,
        obligations=obligations,
        evidence={r.recipient: {"mime_repairs": repairs} for r in recipients} if repairs else {},
    )


def _recipient_problems(
    recipient: str,
    facts: Facts,
    mailboxes: MailboxRules,
    check_syntax: bool,
    check_suppression: bool,
) -> list[tuple[str, str]]:
    """Suppressed when an opt-out holds the recipient's spelling or its mailbox (any other
    spelling of it: 'bob+promo@x' after 'bob@x' opted out)."""
    try:
        key = email_key(recipient)
    except InvalidAddress as exc:
        return [("email.recipient.syntax", f"{recipient!r} is not a valid address: {exc}")]
    if check_suppression and {key, folded_key(key, mailboxes)} & facts.suppressed:
        return [("email.suppression", f"{recipient} opted out or is on the suppression list")]
    return []


def _sender_problems(message: OutboundMessage, email: EmailContent | None) -> list[str]:
    account = message.account
    problems = []
    if not message.envelope_sender:
        problems.append("the envelope sender is empty; commercial mail needs a return path")
    elif not account.may_send_from(domain_of(message.envelope_sender)):
        problems.append(
            f"envelope sender domain {domain_of(message.envelope_sender)!r} is not among "
            f"account {account.name!r}'s sender_domains"
        )
    for address in email.from_addresses if email else ():
        if not account.may_send_from(domain_of(address)):
            problems.append(
                f"From domain {domain_of(address)!r} is not among account "
                f"{account.name!r}'s sender_domains"
            )
    for address, where in email.other_identities if email else ():
        if not account.may_send_from(domain_of(address)):
            problems.append(_shown_elsewhere(address, where, account.name))
    return problems


def _shown_elsewhere(address: str, where: str, account: str) -> str:
    """Why an address the message shows besides From's is refused, naming the header. An
    address with characters outside ASCII is quoted with escapes, so that a look-alike
    ('b\\u0430nk', a Cyrillic a) is seen for what it is."""
    quoted = repr(address) if address.isascii() else ascii(address)
    outside = f"outside account {account!r}'s sender_domains"
    if where == "Reply-To":
        return f"Reply-To address {quoted} is {outside}: replies would go there"
    if where == "Sender":
        return f"the Sender header presents {quoted} as the sender, {outside}"
    return f"the {where} shows {quoted}, which a reader may take for the sender, {outside}"


def _deceptive_subject(email: EmailContent, rules: RuleSet) -> list[str]:
    if email.is_reply or not rules.deceptive_subject.match(folded_subject(email.subject)):
        return []
    return [
        f"subject {email.subject[:80]!r} looks like a reply or forward but the message has no "
        "In-Reply-To or References header"
    ]


# The longest subject remembered: a header line is at most 998 characters (RFC 5322 s2.1.1).
CACHED_SUBJECT_CHARS = 998


def folded_subject(subject: str) -> str:
    """The subject as a reader sees it (`gateway.lookalikes.fold`): invisible characters
    gone, look-alikes and compatibility forms folded, so that "R\u034fe:", "Re\ua789",
    "\u3164Re:", "R\u1d07:" or "Re:" with a Cyrillic "e" read as the "Re:" they show.
    Remembered per subject: a campaign sends one subject many times."""
    if len(subject) > CACHED_SUBJECT_CHARS:
        return fold(subject)
    return _cached_fold(subject)


@functools.lru_cache(maxsize=4096)
def _cached_fold(subject: str) -> str:
    return fold(subject)


def _template_footer_gaps(template_has_footer: bool | None) -> list[str]:
    """None means the upstream cannot render templates (outbox): nothing reaches anyone."""
    if template_has_footer is False:
        return [
            "the Postmark template does not show the footer: it must use "
            "{{{compliance_footer_html}}} and {{compliance_footer_text}} from TemplateModel "
            "where a reader sees them (not inside an HTML comment)"
        ]
    return []


def _canspam_identity_gaps(identity: SenderIdentity, rules: RuleSet) -> list[str]:
    gaps = []
    if not identity.name:
        gaps.append("[sender] name is empty: the footer must identify the sender")
    if not rules.postal_address.search(identity.postal_address):
        gaps.append("[sender] postal_address is missing or not a valid physical postal address")
    return gaps


def _casl_identity_gaps(identity: SenderIdentity) -> list[str]:
    if identity.email or identity.phone or identity.website:
        return []
    return ["[sender] needs one of email, phone or website as a contact"]
