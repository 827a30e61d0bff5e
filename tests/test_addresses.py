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
    normalized_email,
    suppression_key,
)
from gateway.ingress.postmark import address_list

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
