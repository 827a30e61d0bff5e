"""Table tests for the pure email policy: each row would fail if one rule were wrong."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from gateway.config.settings import PACKAGE_RULES_DIR
from gateway.model import (
    Account,
    Channel,
    EmailContent,
    Facts,
    OutboundMessage,
    Purpose,
    Role,
    SenderIdentity,
    ShownAddress,
)
from gateway.policy import decide
from gateway.rules.loader import load_rules

RULES = load_rules(PACKAGE_RULES_DIR)
NOW = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
IDENTITY = SenderIdentity(
    name="Example Corp",
    postal_address="548 Market St #12345, San Francisco, CA 94104",
    email="privacy@example.com",
)
ACCOUNT = Account("katie", "x" * 16, Role.REP, ("example.com",), Purpose.MARKETING, IDENTITY)


def message(
    *,
    to: tuple[str, ...] = ("bob@client.test",),
    sender: str = "katie@example.com",
    from_: tuple[str, ...] = ("katie@example.com",),
    subject: str = "Quick question about your fleet",
    is_reply: bool = False,
    problems: tuple[str, ...] = (),
    account: Account = ACCOUNT,
    with_content: bool = True,
    other_identities: tuple[ShownAddress, ...] = (),
) -> OutboundMessage:
    content = EmailContent(
        from_, subject, is_reply, "<m@example.com>", 1000, problems, other_identities
    )
    return OutboundMessage(
        id="t", channel=Channel.EMAIL, ingress="test", account=account, envelope_sender=sender,
        recipients=to, received_at=NOW, email=content if with_content else None,
    )


CASES = [
    ("clean first touch", message(), Facts(), []),
    ("suppressed recipient", message(), Facts(frozenset({"bob@client.test"})), ["SUPPRESSED"]),
    ("suppression ignores case", message(to=("Bob@CLIENT.test",)),
     Facts(frozenset({"bob@client.test"})), ["SUPPRESSED"]),
    ("invalid recipient", message(to=("bob@@client",)), Facts(), ["INVALID_RECIPIENT"]),
    ("recipient without domain dot", message(to=("bob@localhost",)), Facts(),
     ["INVALID_RECIPIENT"]),
    ("envelope sender domain foreign", message(sender="katie@other.test"), Facts(),
     ["SENDER_NOT_ALLOWED"]),
    ("From domain foreign", message(from_=("ceo@other.test",)), Facts(), ["SENDER_NOT_ALLOWED"]),
    ("subdomain is not the domain", message(from_=("a@mail.example.com",)), Facts(),
     ["SENDER_NOT_ALLOWED"]),
    ("Sender header elsewhere",
     message(other_identities=(ShownAddress("ceo@bank.example.org", "Sender"),)), Facts(),
     ["SENDER_NOT_ALLOWED"]),
    ("display name naming another domain",
     message(other_identities=(ShownAddress("ceo@bank.example.org", "From display name"),)),
     Facts(), ["SENDER_NOT_ALLOWED"]),
    ("display name naming an allowed domain",
     message(other_identities=(ShownAddress("ann@example.com", "From display name"),)),
     Facts(), []),
    ("Reply-To elsewhere (15 U.S.C. 7704(a)(1): header information)",
     message(other_identities=(ShownAddress("replies@elsewhere.example", "Reply-To"),)),
     Facts(), ["SENDER_NOT_ALLOWED"]),
    ("Reply-To at an allowed domain",
     message(other_identities=(ShownAddress("replies@example.com", "Reply-To"),)), Facts(), []),
    ("Reply-To comment elsewhere",
     message(other_identities=(ShownAddress("ceo@bank.example", "Reply-To comment"),)),
     Facts(), ["SENDER_NOT_ALLOWED"]),
    ("Reply-To display name with a Cyrillic look-alike of the allowed domain",
     message(other_identities=(ShownAddress("ann@ex\u0430mple.com", "Reply-To display name"),)),
     Facts(), ["SENDER_NOT_ALLOWED"]),
    ("empty envelope sender", message(sender=""), Facts(), ["SENDER_NOT_ALLOWED"]),
    ("wildcard account", message(sender="a@any.test", from_=("a@any.test",),
                                 account=replace(ACCOUNT, sender_domains=("*",))), Facts(), []),
    ("Re: on first touch", message(subject="Re: our call"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("RE: upper case", message(subject="RE: pricing"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("Fwd:", message(subject="Fwd: intro"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("FW:", message(subject="FW: intro"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("AW: German", message(subject="AW: Angebot"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("TR: French", message(subject="TR: offre"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("Re[2]: counter", message(subject="Re[2]: follow up"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("full-width colon", message(subject="回复\uff1a合作"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("leading tag then Re:", message(subject="[EXT] Re: hello"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("zero-width space before Re:", message(subject="\u200bRe: x"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("zero-width space inside Re:", message(subject="Re\u200b: x"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("Cyrillic e in Re:", message(subject="R\u0435: x"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("full-width RE:", message(subject="\uff32\uff25: x"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("two bracket tags", message(subject="[EXT] [Q3] Re: x"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("Russian reply prefix", message(subject="Ответ: x"), Facts(), ["DECEPTIVE_SUBJECT"]),
    # Issue 18 item 4: disguised with invisible or look-alike characters.
    ("combining grapheme joiner inside Re:", message(subject="R\u034fe: x"), Facts(),
     ["DECEPTIVE_SUBJECT"]),
    ("modifier letter colon", message(subject="Re\ua789 x"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("Hangul filler before Re:", message(subject="\u3164Re: x"), Facts(),
     ["DECEPTIVE_SUBJECT"]),
    ("small capital E", message(subject="R\u1d07: x"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("small capitals RE", message(subject="\u0280\u1d07: x"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("Cherokee R, Greek E", message(subject="\u13a1\u0395: x"), Facts(),
     ["DECEPTIVE_SUBJECT"]),
    ("mathematical bold Fwd", message(subject="\U0001d405\U0001d430\U0001d41d: x"), Facts(),
     ["DECEPTIVE_SUBJECT"]),
    ("ratio sign as colon", message(subject="Fwd\u2236 x"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("variation selector and soft hyphen", message(subject="A\ufe0fW\u00ad: x"), Facts(),
     ["DECEPTIVE_SUBJECT"]),
    ("tag characters", message(subject="\U000e0072Re\U000e0001: x"), Facts(),
     ["DECEPTIVE_SUBJECT"]),
    ("Turkish capital dotted I", message(subject="\u0130LT: x"), Facts(),
     ["DECEPTIVE_SUBJECT"]),
    ("Finnish VL:", message(subject="VL: tarjous"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("Greek ΣΧΕΤ:", message(subject="ΣΧΕΤ: προσφορά"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("Arabic reply", message(subject="رد: عرض"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("Hebrew reply", message(subject="השב: הצעה"), Facts(), ["DECEPTIVE_SUBJECT"]),
    ("disguised Re: on a real reply", message(subject="R\u1d07: x", is_reply=True), Facts(),
     []),
    # Ordinary subjects in other languages and scripts stay allowed.
    ("French accents", message(subject="Résumé tips"), Facts(), []),
    ("French Réunion", message(subject="Réunion lundi"), Facts(), []),
    ("Russian advertising word", message(subject="Реклама: скидки недели"), Facts(), []),
    ("Greek regarding, not a prefix", message(subject="Σχετικά με την προσφορά"), Facts(), []),
    ("Chinese meeting notice", message(subject="会议通知\uff1a周一"), Facts(), []),
    ("Japanese", message(subject="ご案内\uff1a新製品"), Facts(), []),
    ("Korean", message(subject="안내: 신제품"), Facts(), []),
    ("one-to-one", message(subject="1:1 coaching for your team"), Facts(), []),
    ("RE/MAX", message(subject="RE/MAX: homes near you"), Facts(), []),
    ("Re-engagement", message(subject="Re-engagement offer"), Facts(), []),
    ("Re: on a real reply", message(subject="Re: our call", is_reply=True), Facts(), []),
    ("word starting with re", message(subject="Regarding your fleet"), Facts(), []),
    ("Re without colon", message(subject="Re our call"), Facts(), []),
    ("malformed message", message(problems=("unknown charset 'x-foo' in text/plain part 1",)),
     Facts(), ["MESSAGE_MALFORMED"]),
    ("no postal address", message(account=replace(
        ACCOUNT, identity=replace(IDENTITY, postal_address=""))), Facts(),
     ["SENDER_IDENTITY_MISSING"]),
    ("postal address without a number", message(account=replace(
        ACCOUNT, identity=replace(IDENTITY, postal_address="Market Street"))), Facts(),
     ["SENDER_IDENTITY_MISSING"]),
    ("no sender name", message(account=replace(ACCOUNT, identity=replace(IDENTITY, name=""))),
     Facts(), ["SENDER_IDENTITY_MISSING"]),
    ("no contact for CASL", message(account=replace(
        ACCOUNT, identity=replace(IDENTITY, email=""))), Facts(), ["SENDER_IDENTITY_MISSING"]),
    ("transactional: subject and identity rules do not apply",
     message(subject="Re: your order", account=replace(
         ACCOUNT, purpose=Purpose.TRANSACTIONAL, identity=SenderIdentity())), Facts(), []),
    ("transactional: opt-out still applies",
     message(account=replace(ACCOUNT, purpose=Purpose.TRANSACTIONAL)),
     Facts(frozenset({"bob@client.test"})), ["SUPPRESSED"]),
    ("envelope stage: only envelope rules", message(subject="Re: x", with_content=False),
     Facts(), []),
    ("envelope stage: suppression", message(with_content=False),
     Facts(frozenset({"bob@client.test"})), ["SUPPRESSED"]),
]


@pytest.mark.parametrize(("name", "msg", "facts", "codes"), CASES, ids=[c[0] for c in CASES])
def test_email_policy(name: str, msg: OutboundMessage, facts: Facts, codes: list[str]) -> None:
    decision = decide(msg, facts, RULES, NOW)
    assert [r.code for r in decision.all_reasons()] == codes
    assert decision.allowed == (not codes)
    assert decision.rules_version == RULES.version
    for reason in decision.all_reasons():
        assert reason.rule in decision.rules_applied
        assert RULES.rule(reason.rule).citation


def test_one_recipient_blocked_others_allowed() -> None:
    msg = message(to=("bob@client.test", "ann@client.test", "bad@@x"))
    decision = decide(msg, Facts(frozenset({"bob@client.test"})), RULES, NOW)
    assert decision.allowed_recipients == ("ann@client.test",)
    blocked = {b.recipient: [r.code for r in b.reasons] for b in decision.blocked_recipients}
    assert blocked == {"bob@client.test": ["SUPPRESSED"], "bad@@x": ["INVALID_RECIPIENT"]}


def test_message_reason_blocks_every_recipient() -> None:
    msg = message(to=("bob@client.test", "ann@client.test"), subject="Re: hi")
    decision = decide(msg, Facts(), RULES, NOW)
    assert decision.allowed_recipients == ()
    assert len(decision.blocked_recipients) == 2
    assert decision.as_dict()["decision"] == "block"


def test_marketing_rules_listed_as_applied() -> None:
    decision = decide(message(), Facts(), RULES, NOW)
    assert "email.subject.deceptive" in decision.rules_applied
    assert "email.identity.canspam" in decision.rules_applied
    transactional = decide(
        message(account=replace(ACCOUNT, purpose=Purpose.TRANSACTIONAL)), Facts(), RULES, NOW
    )
    assert "email.subject.deceptive" not in transactional.rules_applied
    assert "email.suppression" in transactional.rules_applied
