"""Normalized recipient keys, so 'Bob@Example.COM' and 'bob@example.com' are one opt-out."""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email


class InvalidAddress(ValueError):
    pass


def normalized_email(address: str) -> str:
    """Syntax-checked without DNS (no lookups at send time); domain lower-cased.

    The RFC 2606 `.test` domain is accepted so staging set-ups can use it; other special-use
    names (.local, .invalid, localhost) are refused as undeliverable.
    """
    try:
        validated = validate_email(
            address,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=True,
            test_environment=True,
        )
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from exc
    return validated.normalized


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


def e164(value: str) -> str:
    """The canonical E.164 form, so '+1 (415) 555-0100' and '+14155550100' are one number;
    anything that does not parse is kept as written for the policy to refuse."""
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return value.strip()
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
