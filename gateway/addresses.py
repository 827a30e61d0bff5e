"""Normalized recipient keys, so 'Bob@Example.COM' and 'bob@example.com' are one opt-out."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email


class InvalidAddress(ValueError):
    pass


def email_key(address: str) -> str:
    """The suppression key for an email address: syntax-checked (no DNS), lower-cased.

    Local parts are case-sensitive in theory but not in practice; folding case can only
    suppress more, never less, which is the safe direction.
    """
    try:
        validated = validate_email(
            address, check_deliverability=False, allow_smtputf8=True, allow_quoted_local=True
        )
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from exc
    return validated.normalized.lower()


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")
