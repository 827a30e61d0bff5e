"""Checking the credentials agents and providers present, the same way on every ingress.

Secrets are compared in constant time, and every account is compared (no early exit), so
response timing does not tell which part of a guess was right.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Iterable

from gateway.model import Account


def same_secret(given: str | bytes, expected: str) -> bool:
    """Constant time whatever the lengths: both sides are hashed to one size first."""
    given_bytes = given if isinstance(given, bytes) else given.encode("utf-8", "replace")
    return hmac.compare_digest(
        hashlib.sha256(given_bytes).digest(), hashlib.sha256(expected.encode()).digest()
    )


def account_with_secret(
    accounts: Iterable[Account],
    secret: str | bytes,
    name_ok: Callable[[Account], bool] | None = None,
) -> Account | None:
    """The account whose secret this is (secrets are unique, see config), if `name_ok`."""
    match = None
    for account in accounts:
        if same_secret(secret, account.secret) and (name_ok is None or name_ok(account)):
            match = account
    return match if secret else None


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic …` header, else None."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def bearer_token(header: str) -> str:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
