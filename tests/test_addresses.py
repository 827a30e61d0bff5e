"""Recipient keys: the cached, per-domain validation must agree with email-validator itself
on every address, valid or not (the library is the oracle)."""

from __future__ import annotations

from email.utils import getaddresses

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.addresses import (
    VALIDATOR_OPTIONS,
    InvalidAddress,
    e164,
    email_key,
    folded_key,
    key_and_mailbox,
    mailbox_key,
    normalized_email,
    suppression_key,
    suppression_keys,
)
from gateway.config.settings import PACKAGE_RULES_DIR
from gateway.ingress.postmark import address_list
from gateway.rules.mailbox_loader import load_mailbox_rules

MAILBOXES = load_mailbox_rules(PACKAGE_RULES_DIR)

DOMAINS = [
    "example.com", "Example.COM", "client.example.net", "bücher.com", "xn--bcher-kva.com",
    "example.test", "localhost", "a.local", "x.invalid", "1.2.3.4", "[1.2.3.4]", "b.123",
    "-a.com", "a-.com", "a..com", ".a.com", "a.com.", "", "ex ample.com", "a" * 64 + ".com",
    "a" * 63 + ".com", ("a" * 60 + ".") * 4 + "com", "exa_mple.com", "ex@mple.com",
]
LOCAL_CHARS = "abcXYZ019!#$%&'*+/=?^_`{|}~-.\"\\ @(),:;<>[]éü\x00\t"


def library(address: str) -> str | None:
    try:
        return validate_email(address, **VALIDATOR_OPTIONS).normalized  # type: ignore[arg-type]
    except EmailNotValidError:
        return None


def ours(address: str) -> str | None:
    normalized_email.cache_clear()
    try:
        return normalized_email(address)
    except InvalidAddress:
        return None


@settings(max_examples=300, deadline=None)
@given(
    local=st.one_of(
        st.text(alphabet=LOCAL_CHARS, min_size=0, max_size=70),
        st.from_regex(r"[a-z0-9]{1,20}(\.[a-z0-9+_-]{1,20}){0,3}", fullmatch=True),
        st.just("a" * 64), st.just("a" * 65),
    ),
    domain=st.sampled_from(DOMAINS),
)
def test_agrees_with_the_library(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    assert ours(address) == library(address)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("Bob@Example.COM", "Bob@example.com"),
        ("x@xn--bcher-kva.com", "x@bücher.com"),
        ("a.b+tag@Client.Example.net", "a.b+tag@client.example.net"),
        ('"quoted local"@example.com', '"quoted local"@example.com'),
    ],
)
def test_normalized_forms(address: str, expected: str) -> None:
    assert ours(address) == expected


@pytest.mark.parametrize(
    "address", ["x@localhost", "x@a.local", "a..b@example.com", "x@-a.com", "no-at-sign"]
)
def test_invalid_addresses_raise(address: str) -> None:
    with pytest.raises(InvalidAddress):
        normalized_email(address)


def test_an_address_at_the_length_limit_is_checked_as_a_whole() -> None:
    """Each half may be valid while the whole is too long: the whole decides."""
    domain = ("a" * 60 + ".") * 3 + "a" * 20 + ".com"
    local = "b" * 64
    assert library(f"a@{domain}") is not None
    assert library(f"{local}@{domain}") is None
    assert ours(f"{local}@{domain}") is None


def test_one_key_per_person_whatever_the_spelling() -> None:
    assert email_key("Bob@Example.COM") == email_key("bob@example.com") == "bob@example.com"
    assert suppression_key("+1 (415) 555-0100") == suppression_key("+14155550100")
    assert e164("not a number") == "not a number"


ADDRESS_LIST_ALPHABET = "ab.-_+%@, <>\"'()é;:\\[]"


@settings(max_examples=400, deadline=None)
@given(
    text=st.one_of(
        st.text(alphabet=ADDRESS_LIST_ALPHABET, min_size=1, max_size=40),
        st.lists(
            st.from_regex(
                r"([A-Za-z0-9' -]{1,12} ?<)?[a-z0-9_%+-]{1,8}(\.[a-z0-9]{1,5})?"
                r"@[a-z0-9-]{1,8}(\.[a-z]{2,4}){1,2}>?",
                fullmatch=True,
            ),
            min_size=1, max_size=4,
        ).map(", ".join),
    )
)
def test_the_address_list_shortcut_agrees_with_getaddresses(text: str) -> None:
    assert address_list(text) == getaddresses([text])


# --- mailbox keys: every spelling that reaches a mailbox has one key ---------------------

SAME_MAILBOX = [
    # RFC 5233: user+detail reaches user, at any domain; the user part ends at the first "+"
    ("ken+sieve@example.org", "ken@example.org"),
    ("KEN+Other@Example.ORG", "ken@example.org"),
    ("ken+a+b@example.org", "ken@example.org"),
    ("ken+@example.org", "ken@example.org"),
    ("carol+promo@x.example", "carol@x.example"),
    ("first.last+news@outlook.com", "first.last@outlook.com"),
    ('"ken+x y"@example.org', "ken@example.org"),
    # Gmail: dots do not matter, googlemail.com is gmail.com
    ("bob.smith@gmail.com", "bobsmith@gmail.com"),
    ("bobsmith@gmail.com", "bobsmith@gmail.com"),
    ("Bob.Smith@googlemail.com", "bobsmith@gmail.com"),
    ("b.o.b.s.m.i.t.h+news.letter@GMAIL.COM", "bobsmith@gmail.com"),
    ("BOBSMITH@GoogleMail.Com", "bobsmith@gmail.com"),
    # Proton: ".", "-", "_" are transparent; the four domains are one username's
    ("john.doe@protonmail.com", "johndoe@proton.me"),
    ("john_doe@pm.me", "johndoe@proton.me"),
    ("John-Doe+shop@proton.me", "johndoe@proton.me"),
    ("johndoe@protonmail.ch", "johndoe@proton.me"),
    # iCloud: a me.com or mac.com name is the same name at icloud.com; dots matter
    ("jane.roe@me.com", "jane.roe@icloud.com"),
    ("Jane.Roe+x@mac.com", "jane.roe@icloud.com"),
    ("jane.roe@icloud.com", "jane.roe@icloud.com"),
]


@pytest.mark.parametrize(("address", "key"), SAME_MAILBOX)
def test_spellings_of_one_mailbox_share_its_key(address: str, key: str) -> None:
    assert mailbox_key(address, MAILBOXES) == key
    assert folded_key(key, MAILBOXES) == key, "a key is its own mailbox's key"


DIFFERENT_MAILBOXES = [
    # dots matter everywhere but where a provider documents otherwise
    ("bob.smith@example.com", "bobsmith@example.com"),
    ("bob.smith@outlook.com", "bobsmith@outlook.com"),
    ("jane.roe@icloud.com", "janeroe@icloud.com"),
    # "-" and "_" are ordinary characters unless a provider says so (Gmail does not)
    ("john-doe@example.com", "johndoe@example.com"),
    ("john_doe@gmail.com", "johndoe@gmail.com"),
    # Yahoo's disposable addresses are not folded: no provider rule for "-" (see the docs)
    ("bob-shop@yahoo.com", "bob@yahoo.com"),
    # domains: only a provider's own aliases are one
    ("bob@gmail.com", "bob@example.com"),
    ("bob@gmail.com", "bob@gmail.co"),
    ("bob@outlook.com", "bob@hotmail.com"),
    ("jane@icloud.com", "jane@proton.me"),
    ("bob@gmail.com", "rob@gmail.com"),
]


@pytest.mark.parametrize(("one", "other"), DIFFERENT_MAILBOXES)
def test_different_mailboxes_keep_different_keys(one: str, other: str) -> None:
    assert mailbox_key(one, MAILBOXES) != mailbox_key(other, MAILBOXES)


def test_lookups_ask_for_the_spelling_and_the_mailbox() -> None:
    """Rows stored before mailbox keys hold the spelling's key: lookups ask for both."""
    assert suppression_keys("Bob.Smith+x@GoogleMail.com", MAILBOXES) == (
        "bob.smith+x@googlemail.com", "bobsmith@gmail.com"
    )
    assert suppression_keys("ann@example.com", MAILBOXES) == ("ann@example.com",)
    assert suppression_keys("+1 415 555 0100", MAILBOXES) == ("+14155550100",)
    assert key_and_mailbox("Ann+x@Example.com", MAILBOXES) == (
        "ann+x@example.com", "ann@example.com"
    )
    assert key_and_mailbox("+1 415 555 0100", MAILBOXES) == ("+14155550100", "")
    with pytest.raises(InvalidAddress):
        mailbox_key("bob@@gmail.com", MAILBOXES)


WORD = st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True)
OTHER_DOMAINS = ["example.com", "client.example.net", "outlook.com", "yahoo.com", "bücher.de"]


def random_case(draw: st.DrawFn, text: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c for c in text)


@st.composite
def mailbox_and_spelling(draw: st.DrawFn) -> tuple[str, str]:
    """An address, and another spelling of it that its provider's documented rules (or RFC
    5233 anywhere) deliver to the same mailbox: case, a sub-address tag, and where the
    provider says so the characters it ignores moved about and its other domains."""
    providers = {d: p for p in MAILBOXES.providers for d in p.domains}
    domain = draw(st.sampled_from([*providers, *OTHER_DOMAINS]))
    user = ".".join(draw(st.lists(WORD, min_size=1, max_size=4)))
    address = f"{user}@{domain}"
    rule = MAILBOXES.for_domain(domain)
    spelled = user
    if rule.ignored:
        kept = [c for c in user if c not in rule.ignored]
        spelled = ""
        for index, character in enumerate(kept):
            spelled += character
            if index < len(kept) - 1 and draw(st.booleans()):
                spelled += draw(st.sampled_from(rule.ignored))
    spelled = random_case(draw, spelled)
    if draw(st.booleans()):
        tag = draw(st.from_regex(r"([a-z0-9_-]{1,6}(\.[a-z0-9]{1,4})?)?", fullmatch=True))
        spelled += draw(st.sampled_from(rule.separators)) + random_case(draw, tag)
    if domain in providers:
        domain = draw(st.sampled_from(providers[domain].domains))
    return address, f"{spelled}@{random_case(draw, domain)}"


@settings(max_examples=500, deadline=None)
@given(case=mailbox_and_spelling())
def test_every_generated_spelling_has_the_mailbox_key(case: tuple[str, str]) -> None:
    address, spelling = case
    assert mailbox_key(spelling, MAILBOXES) == mailbox_key(address, MAILBOXES)
    key = mailbox_key(address, MAILBOXES)
    assert folded_key(key, MAILBOXES) == key
