"""What erasing a person and purging a workspace touch, and how an erased person's opt-out
keeps answering for them; shared by every store backend.

An erased person's suppression survives as one row under `erased_address` (a keyed hash of
their key, and of their mailbox key in its mailbox column). Every lookup of an address also
looks up its hashes (its aliases), so the opt-out keeps holding, for every spelling of the
mailbox, while the address itself is gone.
"""

from __future__ import annotations

import abc
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.model import AuditEvent, Channel, Suppression
from gateway.store.audit_chain import AUDIT_COLUMNS, event_from_row
from gateway.store.base import (
    ERASED_PREFIX,
    ERASED_SOURCE,
    ContactRow,
    DeliveryRow,
    PersonalData,
    StoreUnavailable,
    erased_address,
)
from gateway.store.core import (
    BLOCK_COLUMNS,
    CONSENT_COLUMNS,
    DECISION_EVIDENCE_COLUMNS,
    SUPPRESSION_COLUMNS,
    MailboxRule,
    Parameters,
    ReadTime,
    block_from_row,
    consent_from_row,
    decision_from_row,
    delivery_recipient,
    in_address_order,
    location_of,
    suppression_from_row,
)
from gateway.store.sealing import (
    DataCipher,
    SealedColumns,
    lookup_forms,
    search_folded,
)

ERASED_RANGE = (ERASED_PREFIX, ERASED_PREFIX[:-1] + chr(ord(ERASED_PREFIX[-1]) + 1))
"""Erased rows sort together: lower <= address < upper is one index range search."""

ERASED_REASON = "erased on request"
PURGE_REASON = "kept through a workspace purge"

FINGERPRINT_SETTING = "erasure_key_fingerprint"
"""The settings row naming the key this database's erased rows were written with."""

RowReader = Callable[[Sequence[Any]], Suppression]
"""A stored suppression row (SUPPRESSION_COLUMNS) as the entry it records, opened."""

SuppressionCursor = tuple[list[str], str] | None
"""A suppression page's cursor as stored: the forms its address may be stored under
(blind index first) and its source."""


@dataclass(frozen=True)
class NamedBy:
    """The columns of a table that name a person; a row is theirs if any does. Emails are
    recorded as the agent wrote them ('Bob@Example.com') while keys are lower case, so for
    an email key these columns match without case, unless `exact` (the column holds keys).
    Numbers are E.164 everywhere and match exactly. These plaintext matches find the rows
    written before encryption (or with it off); a sealed row is found by its blind `index`,
    which no case-insensitive comparison can reach, so it is made of the form the key has
    there: the key itself, or (`folded`) its case-folded form, the index of a column
    written as the agent spelled it."""

    columns: tuple[str, ...]
    email_columns: tuple[str, ...] = ()
    """Also the person's when the key is an email (a block's sender is an agent's own
    number for calls and texts, but may be the person for an email)."""
    exact: bool = False
    index: str | None = None
    folded: bool = False


ERASED_TABLES: Mapping[str, NamedBy] = {
    "blocks": NamedBy(
        ("recipient",), email_columns=("sender",), index="recipient_index", folded=True
    ),
    "decisions": NamedBy(
        ("recipient",), email_columns=("sender",), index="recipient_index", folded=True
    ),
    "consents": NamedBy(("subject",), index="subject"),
    "known_locations": NamedBy(("number",), exact=True, index="number"),
    "contacts": NamedBy(("recipient",), index="recipient"),
    "notices": NamedBy(("recipient",), index="recipient"),
    "deliveries": NamedBy(("recipient",), index="recipient", folded=True),
    "suppressions": NamedBy(("address",), exact=True, index="address"),
}
"""The tables an erasure deletes a person's rows from, in the order it reports them."""

NOT_ERASED = (
    "audit", "audit_anchor", "settings", "schema_migrations", "inbound_messages",
    "login_failures", "login_lockouts", "agent_keys", "people", "sessions", "used_once",
    "scim_groups", "scim_group_members",
)
"""The rest of the schema: audit entries are never rewritten (nor is the chain's anchor),
and settings, the migration record, the inbound message ids (a provider's id and a time,
no number), sign-in counts (a network prefix or an account name, gone within the hour),
agent keys, the people who sign in, their sessions, the one-time marks of sign-ins and
the groups SCIM provisions name no recipient."""

PURGED_TABLES = (
    *ERASED_TABLES, "audit", "audit_anchor", "login_failures", "login_lockouts", "sessions",
)
"""Emptied by a purge (suppressions then get their opt-outs back as erased rows)."""

NOT_PURGED = (
    "settings", "schema_migrations", "inbound_messages", "agent_keys", "people", "used_once",
    "scim_groups", "scim_group_members",
)
"""Kept by a purge: the erasure key's fingerprint (and the shared keys) must outlive the rows
written with them, a webhook signed before the purge verifies after it too, so its message
id must still be known to be a replay, and agents keep the keys they were given and people
their records and groups, which their identity provider keeps provisioning (a purge signs
everyone out); a SAML assertion used before the purge stays used."""


Statement = tuple[str, list[object]]
"""SQL and its parameter values."""


def erase_statements(
    key: str, new_params: Callable[[], Parameters], cipher: DataCipher, mailbox: str = ""
) -> dict[str, Statement]:
    """Per table of ERASED_TABLES, the DELETE of `key`'s rows; suppressions also by the
    `mailbox` key, whatever spelling opted out (an erased row has hashes there, so stays)."""
    statements: dict[str, Statement] = {}
    for table in ERASED_TABLES:
        params = new_params()
        where = (
            suppression_match(list(lookup_forms(cipher, [key, mailbox])), params)
            if table == "suppressions" and mailbox
            else _person_rows(table, key, params, cipher)
        )
        statements[table] = (f"DELETE FROM {table} WHERE {where}", params.values)
    return statements


def export_statements(
    key: str,
    aliases: Sequence[str],
    new_params: Callable[[], Parameters],
    cipher: DataCipher,
    mailbox: str = "",
) -> dict[str, Statement]:
    """Per `PersonalData` field, the SELECT of its rows (read in one snapshot, then given to
    `exported`): the rows an erasure deletes, the erased rows left by an earlier erasure
    (`aliases`: the hashes of `key` and `mailbox`), and the audit entries whose subject names
    `key`, which are never rewritten: with encryption on their subjects are sealed, so the
    whole log is read, and without it the subjects containing `key` are; `exported` keeps
    the entries that name `key` itself (`names_key`)."""

    def rows_about(table: str, columns: str, order: str = "") -> Statement:
        params = new_params()
        where = _person_rows(table, key, params, cipher)
        return f"SELECT {columns} FROM {table} WHERE {where} {order}".rstrip(), params.values

    suppressions, audit = new_params(), new_params()
    named = suppression_match([*lookup_forms(cipher, [key, mailbox]), *aliases], suppressions)
    return {
        "suppressions": (
            f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE {named}"
            " ORDER BY address, source",
            suppressions.values,
        ),
        "consents": rows_about("consents", CONSENT_COLUMNS, "ORDER BY obtained_at"),
        "known_location": rows_about("known_locations", "location"),
        "blocks": rows_about("blocks", BLOCK_COLUMNS, "ORDER BY time DESC, id DESC"),
        "decisions": rows_about(
            "decisions", DECISION_EVIDENCE_COLUMNS, "ORDER BY time DESC, id DESC"
        ),
        "contacts": rows_about("contacts", "channel, time, gateway_id", "ORDER BY time"),
        "notice_sent_at": rows_about("notices", "sent_at"),
        "deliveries": rows_about(
            "deliveries",
            "delivery_key, recipient, state, claimed_at, upstream_id, recipient_sealed",
            "ORDER BY claimed_at",
        ),
        "audit": (
            f"SELECT {AUDIT_COLUMNS} FROM audit"
            f" WHERE {'1 = 1' if cipher.enabled else audit.contains('subject', key)} ORDER BY id",
            audit.values,
        ),
    }


def exported(
    key: str,
    rows: Mapping[str, Sequence[Sequence[Any]]],
    read_time: ReadTime,
    cipher: DataCipher,
    read_suppression: RowReader,
) -> PersonalData:
    """`PersonalData` from the rows of `export_statements`, by field, opened."""
    suppressions = in_address_order(map(read_suppression, rows["suppressions"]))
    location, notice = rows["known_location"], rows["notice_sent_at"]
    return PersonalData(
        key=key,
        suppressions=tuple(s for s in suppressions if not s.address.startswith(ERASED_PREFIX)),
        erased_suppressions=tuple(s for s in suppressions if s.address.startswith(ERASED_PREFIX)),
        consents=tuple(consent_from_row(row, read_time, cipher) for row in rows["consents"]),
        known_location=(
            location_of(location[0][0], cipher, "known location") if location else None
        ),
        blocks=tuple(block_from_row(row, read_time, cipher) for row in rows["blocks"]),
        decisions=tuple(
            decision_from_row(row, read_time, cipher) for row in rows["decisions"]
        ),
        contacts=tuple(
            ContactRow(Channel(channel), read_time(time), gateway_id)
            for channel, time, gateway_id in rows["contacts"]
        ),
        notice_sent_at=read_time(notice[0][0]) if notice else None,
        deliveries=tuple(
            DeliveryRow(
                delivery_key,
                delivery_recipient(
                    recipient, sealed, key, cipher, f"deliveries row {delivery_key}"
                ),
                state,
                read_time(claimed_at),
                upstream_id,
            )
            for delivery_key, recipient, state, claimed_at, upstream_id, sealed
            in rows["deliveries"]
        ),
        audit=tuple(
            event
            for event in (event_from_row(row, read_time, cipher) for row in rows["audit"])
            if names_key(event.subject, key)
        ),
    )


SUBJECT_SEPARATORS = re.compile(r"[,\s]+")


def names_key(subject: str, key: str) -> bool:
    """Whether an audit entry's subject names `key` itself: subjects list keys joined by
    ',' (`bob@x,carol@y`) or name one after words (`data key k1`), so each comma- or
    space-separated part is compared whole, and `sal@x` does not name `al@x`. Exactly:
    the entries naming people name them by their keys, as `key` is."""
    return key in SUBJECT_SEPARATORS.split(subject)


def suppression_match(keys: Iterable[str], params: Parameters) -> str:
    """The suppression entries naming one of `keys` (blanks skipped) as their address or
    their mailbox; each column has its own index (the mailbox's only where it is not '')."""
    bound = ", ".join(params.bind(k) for k in dict.fromkeys(keys) if k)
    return f"(address IN ({bound}) OR (mailbox IN ({bound}) AND mailbox <> ''))"


def _person_rows(table: str, key: str, params: Parameters, cipher: DataCipher) -> str:
    """The condition selecting the rows of `table` (one of ERASED_TABLES) that are `key`'s:
    sealed rows by their blind index, rows in clear as before encryption."""
    named = ERASED_TABLES[table]
    email = "@" in key
    placeholder = params.bind(key)
    columns = (*named.columns, *named.email_columns) if email else named.columns
    matches = [
        f"lower({column}) = {placeholder}" if email and not named.exact else
        f"{column} = {placeholder}"
        for column in columns
    ]
    if cipher.enabled and named.index is not None:
        indexed = cipher.blind(search_folded(key) if named.folded else key)
        matches.insert(0, f"{named.index} = {params.bind(indexed)}")
    return matches[0] if len(matches) == 1 else f"({' OR '.join(matches)})"


def owners(found: Iterable[str], aliases: Mapping[str, str]) -> set[str]:
    """The addresses behind the rows `found`: an erased row answers for its address
    (`aliases` maps each address's hash back to it)."""
    return {aliases.get(address, address) for address in found}


def purge_survivors(
    entries: Iterable[Suppression], key: bytes, purge: AuditEvent
) -> list[Suppression]:
    """The suppressed (opened) `entries` a purge keeps, as erased rows (each address once,
    in address order) stamped with the purge's actor and time: a purge must never make an
    opted-out person reachable again, under any spelling of their mailbox."""
    kept: dict[str, str] = {}
    for entry in entries:
        address, mailbox = entry.address, entry.mailbox
        if not address.startswith(ERASED_PREFIX):
            address = erased_address(key, address)
            mailbox = erased_address(key, mailbox) if mailbox else ""
        kept[address] = kept.get(address) or mailbox
    return [
        Suppression(address, ERASED_SOURCE, PURGE_REASON, purge.time, purge.actor, kept[address])
        for address in sorted(kept)
    ]


class ErasureKey(SealedColumns, abc.ABC):
    """The erasure key a store was given, and the rules that depend on it. Each backend's
    store inherits it and supplies `claim_setting` (`SharedSettings`) in its SQL, and
    `_stored_time`, how it reads a stored time back."""

    _erasure_key: bytes | None = None
    _mailbox_rule: MailboxRule | None = None
    """The mailbox folding `update_mailboxes` was last given: a sealed row's mailbox key,
    kept only as a blind index, reads back as its address folded by it."""

    @staticmethod
    @abc.abstractmethod
    def _stored_time(stored: Any) -> datetime:
        """A stored time as an aware datetime."""

    def _suppression_lookup(self, keys: Iterable[str]) -> dict[str, str]:
        """Stored form -> key, for looking suppression `keys` up: their blind indexes,
        their forms in clear (rows written before encryption) and their erased hashes."""
        unique = [key for key in dict.fromkeys(keys) if key]
        return {**self._lookup_forms(unique), **self._erased_aliases(unique)}

    def _suppression_cursor(self, after: tuple[str, str] | None) -> SuppressionCursor:
        """The stored forms the previous page's last address may have (a row of it was
        written before encryption, or sealed): the page seeks from the one present."""
        if after is None:
            return None
        address, source = after
        return [*self._lookup_forms([address])], source

    def _suppression_reader(self, known: Mapping[str, str]) -> RowReader:
        """Opens stored suppression rows; `known` (stored form -> key) names the mailboxes
        a lookup asked for."""
        cipher, rule, read_time = self._cipher, self._mailbox_rule, self._stored_time
        return lambda row: suppression_from_row(row, read_time, cipher, known, rule)

    async def use_erasure_key(self, key: bytes) -> None:
        """Kept in memory, where every lookup computes its aliases. The first key used is
        fingerprinted in the database (shared by every replica); another key later is
        refused, because erased people's opt-outs would silently stop matching."""
        if not key:
            raise ValueError("the erasure key must not be empty")
        fingerprint = hmac.new(key, b"erasure-key-fingerprint", hashlib.sha256).hexdigest()
        stored = await self.claim_setting(FINGERPRINT_SETTING, fingerprint)
        if not hmac.compare_digest(stored, fingerprint):
            raise StoreUnavailable(
                "the erasure key differs from the one this database's erased opt-outs were "
                "written with; restore privacy.erasure_key"
            )
        self._erasure_key = key

    @abc.abstractmethod
    async def claim_setting(self, name: str, value: str) -> str:
        """See `SharedSettings.claim_setting`."""

    def _erased_aliases(self, addresses: Iterable[str]) -> dict[str, str]:
        """Keyed hash -> address, so an erased row answers for its address (empty without
        a key: then no erased row can exist that this store wrote)."""
        if self._erasure_key is None:
            return {}
        return {erased_address(self._erasure_key, address): address for address in addresses}

    def _erased_alias(self, key: str) -> str | None:
        return None if self._erasure_key is None else erased_address(self._erasure_key, key)

    def _person_aliases(self, key: str, mailbox: str) -> list[str]:
        """The hashes an earlier erasure of `key` (or of its mailbox) left behind."""
        return list(self._erased_aliases(k for k in (key, mailbox) if k))

    def _erasure_row(self, key: str, now: datetime, actor: str, mailbox: str = "") -> Suppression:
        """The row that keeps `key`'s opt-out once its owner is erased, for every spelling
        of the mailbox too."""
        if self._erasure_key is None:
            raise ValueError("no erasure key: call use_erasure_key first")
        return Suppression(
            erased_address(self._erasure_key, key), ERASED_SOURCE, ERASED_REASON, now, actor,
            erased_address(self._erasure_key, mailbox) if mailbox else "",
        )

    def _purge_key(self) -> bytes:
        if self._erasure_key is None:
            raise StoreUnavailable("purge needs the erasure key, to keep opt-outs as hashes")
        return self._erasure_key
