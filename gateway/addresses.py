"""Normalized recipient keys, so 'Bob@Example.COM' and 'bob@example.com' are one opt-out, and
mailbox keys, so 'bob+promo@x' and, at Gmail, 'b.o.b@googlemail.com' are too."""

from __future__ import annotations

import functools
import re
from typing import Protocol

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
    """The key of one spelling: normalized email (lower case), or E.164 number. Suppression
    rows keep it as written, and lookups still match rows stored under it before mailbox
    keys existed; a mailbox's spellings meet in `mailbox_key`."""
    if "@" in address:
        return email_key(address)
    return e164(address)


MAILBOX_KEY_VERSION = "1"
"""Changes whenever `folded_key` would fold a stored address differently, so the stored
mailbox keys are computed again (with the rules' own version, see `mailbox_rules_version`)."""


class LocalPartRule(Protocol):
    """What a mail provider documents about the spellings of its addresses (built by
    gateway.rules from rules/mailboxes.toml; addresses.py may not import it)."""

    @property
    def canonical_domain(self) -> str:
        """The domain the key names; "" keeps the address's own."""

    @property
    def separators(self) -> tuple[str, ...]:
        """Sub-address separators: the user part ends at the first one (RFC 5233)."""

    @property
    def ignored(self) -> str:
        """Characters of the user part that reach the same mailbox with or without them."""


class MailboxRules(Protocol):
    @property
    def version(self) -> str:
        """A hash of everything that changes a key (not citations or notes)."""

    def for_domain(self, domain: str) -> LocalPartRule: ...


def mailbox_key(address: str, rules: MailboxRules) -> str:
    """The one key every spelling reaching the same mailbox maps to.

    An opt-out must hold for the mailbox, not the spelling: when in doubt the key folds more
    (two mailboxes sharing a key only suppress more, never less). Raises `InvalidAddress`.
    """
    return folded_key(email_key(address), rules)


def folded_key(key: str, rules: MailboxRules) -> str:
    """`mailbox_key` of an `email_key` (already checked, lower case): stored rows are folded
    again with it when the rules change, and bulk imports use it after their own check."""
    local, _, domain = key.rpartition("@")
    rule = rules.for_domain(domain)
    quoted = len(local) >= 2 and local[0] == local[-1] == '"'
    user = local[1:-1] if quoted else local
    cuts = [i for i in (user.find(s) for s in rule.separators) if i >= 0]
    if cuts:
        user = user[: min(cuts)]
    if rule.ignored:
        user = user.translate(_deletions(rule.ignored))
    if quoted and user and not PLAIN_LOCAL_PART.fullmatch(user):
        user = f'"{user}"'
    return f"{user}@{rule.canonical_domain or domain}"


@functools.lru_cache(maxsize=64)
def _deletions(characters: str) -> dict[int, None]:
    return dict.fromkeys(map(ord, characters))


def suppression_keys(address: str, rules: MailboxRules) -> tuple[str, ...]:
    """Every key a suppression of `address` may be stored under: its spelling's key (rows
    written before mailbox keys) and its mailbox key; a number's E.164 form."""
    if "@" not in address:
        return (e164(address),)
    key = email_key(address)
    mailbox = folded_key(key, rules)
    return (key,) if mailbox == key else (key, mailbox)


def key_and_mailbox(address: str, rules: MailboxRules) -> tuple[str, str]:
    """What a suppression row stores: the spelling's key and its mailbox key ("" for a
    number, whose key is its mailbox)."""
    if "@" not in address:
        return e164(address), ""
    key = email_key(address)
    return key, folded_key(key, rules)


def mailbox_rules_version(rules: MailboxRules) -> str:
    return f"{MAILBOX_KEY_VERSION}:{rules.version}"


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
