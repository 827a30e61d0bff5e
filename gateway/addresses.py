"""Normalized recipient keys, so 'Bob@Example.COM' and 'bob@example.com' are one opt-out."""

from __future__ import annotations

import functools
import re

import phonenumbers
from email_validator import EmailNotValidError, ValidatedEmail, validate_email


class InvalidAddress(ValueError):
    pass


KEY_CACHE_SIZE = 8192
MAX_ADDRESS_LENGTH = 254
# RFC 5322 dot-atom of ASCII atext, at most 64 octets: the local parts the validator accepts
# as written (it changes only Unicode and quoted local parts).
ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
PLAIN_LOCAL_PART = re.compile(rf"(?=.{{1,64}}\Z){ATEXT}(?:\.{ATEXT})*")
VALIDATOR_OPTIONS: dict[str, bool] = {
    "check_deliverability": False,
    "allow_smtputf8": True,
    "allow_quoted_local": True,
    "test_environment": True,
}


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def normalized_email(address: str) -> str:
    """Syntax-checked without DNS (no lookups at send time); domain lower-cased.

    The RFC 2606 `.test` domain is accepted so staging set-ups can use it; other special-use
    names (.local, .invalid, localhost) are refused as undeliverable. Validation (IDNA tables)
    costs over 100 µs, so results are cached, and for a plain local part only the domain is
    validated, once per domain: a campaign writes to many people at few domains.
    """
    local, _, domain = address.rpartition("@")
    if PLAIN_LOCAL_PART.fullmatch(local):
        normalized = f"{local}@{_normalized_domain(domain)}"
        if len(normalized) <= MAX_ADDRESS_LENGTH:
            return normalized
    return _validated(address).normalized


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def _normalized_domain(domain: str) -> str:
    return _validated(f"a@{domain}").domain


def _validated(address: str) -> ValidatedEmail:
    try:
        return validate_email(address, **VALIDATOR_OPTIONS)  # type: ignore[arg-type]
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from exc


def email_key(address: str) -> str:
    """The suppression key for an email address.

    Local parts are case-sensitive in theory but not in practice; folding case can only
    suppress more, never less, which is the safe direction.
    """
    return normalized_email(address).lower()


def suppression_key(address: str) -> str:
    """One key per person whatever the spelling: normalized email, or E.164 number."""
    if "@" in address:
        return email_key(address)
    return e164(address)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def e164(value: str) -> str:
    """The canonical E.164 form, so '+1 (415) 555-0100' and '+14155550100' are one number;
    anything that does not parse is kept as written for the policy to refuse."""
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return value.strip()
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
