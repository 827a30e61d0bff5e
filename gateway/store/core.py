"""Rules every store backend applies the same way, however its SQL spells them.

Rows are written and read through the functions here, so what a column holds (a block's
reason codes, a consent's expiry) is decided once; a backend says only how it stores a
time. Conditions built from one rule in both backends (a block query's filters, the rows
naming a person) are written against `Parameters`, which each backend implements for its
placeholders and its text matching.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from gateway.model import (
    BlockRecord,
    Channel,
    Consent,
    ConsentKind,
    DecisionOutcome,
    DecisionRecord,
    KnownLocation,
    Purpose,
    Reason,
    Suppression,
)
from gateway.store.base import (
    ERASED_PREFIX,
    KEEP,
    MAX_PAGE_START,
    AuditQuery,
    BlockQuery,
    ConsentKey,
    ConsentQuery,
    DecisionQuery,
    DecisionSummary,
    PersonChanges,
    PersonRow,
)
from gateway.store.sealing import (
    DataCipher,
    SealedDataError,
    is_blind_index,
    row_label,
    search_folded,
)

T = TypeVar("T")

ReadTime = Callable[[Any], datetime]
"""A backend's stored time back as an aware datetime."""

WriteTime = Callable[[datetime], object]
"""An aware datetime as a backend stores it."""


def utc(moment: datetime) -> datetime:
    """Every stored time is UTC. A naive time is refused, never guessed (asyncpg would take
    it as UTC): it is a bug upstream, not a fact to store."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: the store keeps UTC times only")
    return moment.astimezone(UTC)


class Parameters(abc.ABC):
    """One statement's parameter values, in the order its placeholders number them. A
    placeholder may be used more than once (both backends number theirs)."""

    def __init__(self) -> None:
        self.values: list[object] = []

    def bind(self, value: object) -> str:
        self.values.append(value)
        return self.placeholder(len(self.values))

    @abc.abstractmethod
    def placeholder(self, position: int) -> str:
        """The placeholder for the `position`th value (from 1)."""

    @abc.abstractmethod
    def time(self, moment: datetime) -> str:
        """The placeholder for `moment`, bound as the backend stores times."""

    @abc.abstractmethod
    def contains(self, column: str, text: str) -> str:
        """A condition true where `column` contains `text` (no wildcards in `text`)."""

    def ascii_lower(self, column: str) -> str:
        """`column` with A-Z folded to a-z and every other character as it is, as
        `ascii_lower` folds a search term: SQLite's lower() does exactly this, while
        PostgreSQL's follows the database's collation (see the override)."""
        return f"lower({column})"


class PageFill(Generic[T]):
    """A page read batch by batch until it holds `limit` matches or the rows run out: a
    search over sealed text reads candidates that only opening them accepts or refuses
    (decisions, suppressions, consents; each backend reads the batches)."""

    def __init__(self, limit: int, batch: int, matches: Callable[[T], bool]) -> None:
        self.limit, self.batch, self._matches = limit, batch, matches
        self._found: list[T] = []

    def full_after(self, read: int, opened: Iterable[T]) -> bool:
        """Takes one batch (`read` rows, opened); True when no further batch is needed."""
        self._found += filter(self._matches, opened)
        return len(self._found) >= self.limit or read < self.batch

    @property
    def page(self) -> list[T]:
        return self._found[: self.limit]


SEARCH_BATCH = 500
"""Rows a suppression or consent search opens per read while it walks the registry."""


def registry_page(limit: int, text: str | None, searched: Callable[[T], str]) -> PageFill[T]:
    """A page of the suppression list or the consent registry: with a search, the entries
    whose `searched` text holds it in any part and any case, read SEARCH_BATCH rows at least
    at a time; without one, every entry, a page's size at a time."""
    wanted = search_folded(text) if text else ""
    return PageFill(
        limit, max(limit, SEARCH_BATCH) if text else limit,
        lambda entry: wanted in search_folded(searched(entry)),
    )


def where_all(clauses: Sequence[str]) -> str:
    """The WHERE clause of every filter's `clauses`; empty when nothing filters."""
    return f"WHERE {' AND '.join(clauses)}" if clauses else ""


def time_window(params: Parameters, since: datetime | None, until: datetime | None) -> list[str]:
    """Clauses on the time column: from `since` on and before `until`, each when given."""
    clauses: list[str] = []
    if since is not None:
        clauses.append(f"time >= {params.time(since)}")
    if until is not None:
        clauses.append(f"time < {params.time(until)}")
    return clauses


def equal_to(params: Parameters, columns: Iterable[tuple[str, object]]) -> list[str]:
    """A clause for each (column, value) given a value: the column holds it (as text)."""
    return [
        f"{column} = {params.bind(str(value))}" for column, value in columns if value is not None
    ]


# --- suppressions, consents, locations ----------------------------------------------------

SUPPRESSION_COLUMNS = (
    "address, source, reason, actor, created_at, mailbox, address_sealed, mailbox_sealed,"
    " is_email"
)
"""address and mailbox hold blind indexes (an erased row's keyed hashes as they are), and
address_sealed and mailbox_sealed their sealed copies ('' for an erased row, and with
encryption off). reason is sealed: it may quote the person (an SMS STOP's own text, what staff
typed). is_email says which entries the mailbox folding reads: the address column does not
tell once it is a blind index."""

SEALED_ADDRESS = "suppressions.address"
SEALED_MAILBOX = "suppressions.mailbox"
SEALED_REASON = "suppressions.reason"

MailboxRule = Callable[[str], str]
"""An address key to its mailbox key (the mailbox rules `update_mailboxes` was last given)."""

SuppressionRow = tuple[str, str, str, str, object, str, str, str, bool]
"""SUPPRESSION_COLUMNS' values, as `suppression_values` gives them."""


def suppression_values(
    entry: Suppression, created_at: object, cipher: DataCipher
) -> SuppressionRow:
    """SUPPRESSION_COLUMNS' values (`created_at` already as the backend stores it). An erased
    row's address and mailbox are keyed hashes already, kept as they are."""
    if entry.address.startswith(ERASED_PREFIX):
        address, mailbox, sealed, mailbox_sealed = entry.address, entry.mailbox, "", ""
    else:
        address = cipher.blind(entry.address)
        mailbox = cipher.blind(entry.mailbox) if entry.mailbox else ""
        sealed = seal_if_enabled(cipher, entry.address, SEALED_ADDRESS)
        mailbox_sealed = seal_if_enabled(cipher, entry.mailbox, SEALED_MAILBOX)
    return (
        address, entry.source, seal_text(cipher, entry.reason, SEALED_REASON), entry.actor,
        created_at, mailbox, sealed, mailbox_sealed, "@" in entry.address,
    )


def seal_text(cipher: DataCipher, text: str, column: str) -> str:
    """A sealed free-text column's value: '' stays '' (nothing to hide, and the sealing pass
    leaves it so), anything else sealed (as it is with encryption off)."""
    return cipher.seal(text, column) if text else ""


def seal_if_enabled(cipher: DataCipher, value: str, column: str) -> str:
    """The sealed copy of a lookup column's value: '' with encryption off (the column holds
    the value itself) and for a blank value."""
    return cipher.seal(value, column) if cipher.enabled and value else ""


def suppression_from_row(
    row: Sequence[Any],
    read_time: ReadTime,
    cipher: DataCipher,
    known: Mapping[str, str],
    mailbox_rule: MailboxRule | None,
) -> Suppression:
    """The entry with its address and mailbox opened (a row written before encryption, or an
    erased one, has no sealed copy: its columns are what they are). `known` maps stored
    keys a lookup asked for back to the caller's keys; see `plain_mailbox`."""
    stored, source, reason, actor, created_at, mailbox, sealed, mailbox_sealed, _ = row
    record = f"suppressions row {row_label(stored)} ({source})"
    address = (cipher.open(sealed, SEALED_ADDRESS, record) if sealed
               else cipher.unsealed(stored, SEALED_ADDRESS, record))
    return Suppression(
        address,
        source,
        cipher.open(reason, SEALED_REASON, record),
        read_time(created_at),
        actor,
        cipher.open(mailbox_sealed, SEALED_MAILBOX, record)
        if mailbox_sealed
        else plain_mailbox(mailbox, address, cipher, known, mailbox_rule),
    )


def plain_mailbox(
    stored: str,
    address: str,
    cipher: DataCipher,
    known: Mapping[str, str],
    mailbox_rule: MailboxRule | None,
) -> str:
    """A row's mailbox key back from its blind index when it has no sealed copy (a row
    sealed before migration 0018, until the start-up folding writes one): it is the address
    itself, a key the reader asked for, or the address folded by the mailbox rules in force.
    Only a row folded by rules this process was not given reads as '' (no mailbox shown);
    lookups never need it, they match the index."""
    if not (cipher.enabled and stored) or "@" in stored or stored.startswith(ERASED_PREFIX):
        return stored  # none, as written before encryption, or an erased row's hash
    if stored in known:
        return known[stored]
    if cipher.blind(address) == stored:
        return address
    if mailbox_rule is not None:
        folded = folded_or_own(mailbox_rule, address)
        if cipher.blind(folded) == stored:
            return folded
    return ""


MAILBOX_RULES_SETTING = "mailbox_rules_version"
"""The settings row naming the mailbox rules the stored mailbox keys were folded with."""


def unfolded_query(every: bool) -> str:
    """The stored email entries to fold: `every` one (the rules changed), else those
    without a mailbox yet, which the partial index suppressions_unfolded finds without a
    scan. is_email picks them, whatever the address column holds (with encryption on, a
    blind index); an erased entry is none."""
    query = (
        "SELECT DISTINCT address, mailbox, address_sealed, mailbox_sealed FROM suppressions"
        " WHERE is_email"
    )
    return query if every else query + " AND mailbox = ''"


@dataclasses.dataclass(frozen=True)
class Folded:
    """What `unfolded_addresses` found: stored address -> (stored mailbox, its sealed copy)
    for the entries whose mailbox changes or lacks its sealed copy, and the stored addresses
    that opened to no email (a sealed row from before migration 0018, flagged once)."""

    mailboxes: dict[str, tuple[str, str]]
    not_emails: list[str]


def unfolded_addresses(
    rows: Iterable[Sequence[str]],
    mailbox_of: MailboxRule,
    cipher: DataCipher,
) -> Folded:
    """The changes the rows of `unfolded_query` need. A sealed row gets a blind mailbox and
    its sealed copy; a row written before encryption keeps its mailbox in clear, which the
    sealing pass (gateway/store/resealing.py) converts with the rest of the row."""
    folded = Folded({}, [])
    for stored, mailbox, sealed, mailbox_sealed in rows:
        address = (
            cipher.open(sealed, SEALED_ADDRESS, f"suppressions row {row_label(stored)}")
            if sealed else stored
        )
        if "@" not in address:
            folded.not_emails.append(stored)
            continue
        key = folded_or_own(mailbox_of, address)
        if not sealed:
            if key != mailbox:
                folded.mailboxes[stored] = (key, mailbox_sealed)
        elif cipher.blind(key) != mailbox or not mailbox_sealed:
            folded.mailboxes[stored] = (cipher.blind(key), cipher.seal(key, SEALED_MAILBOX))
    return folded


def in_address_order(entries: Iterable[Suppression]) -> list[Suppression]:
    """Opened entries in (address, source) order: stored rows follow their blind indexes."""
    return sorted(entries, key=lambda entry: (entry.address, entry.source))


def folded_or_own(mailbox_of: Callable[[str], str], address: str) -> str:
    """The mailbox of a stored address; one the folding refuses (an older gateway checked
    less) is its own mailbox, which still blocks exactly what it blocked before."""
    try:
        return mailbox_of(address) or address
    except ValueError:
        return address


CONSENT_COLUMNS = (
    "subject, channel, kind, obtained_at, expires_at, source, evidence, subject_sealed"
)
"""subject holds a blind index, subject_sealed the sealed subject ('' with encryption off
and for a row written before it); evidence and source (free text on where the consent was
obtained, which may name the person) are sealed."""

SEALED_SOURCE = "consents.source"


def consent_values(
    consent: Consent, write_time: WriteTime, cipher: DataCipher
) -> tuple[object, ...]:
    """CONSENT_COLUMNS' values; no expiry (express consent) is NULL."""
    return (
        cipher.blind(consent.subject),
        consent.channel.value,
        consent.kind.value,
        write_time(consent.obtained_at),
        None if consent.expires_at is None else write_time(consent.expires_at),
        seal_text(cipher, consent.source, SEALED_SOURCE),
        cipher.seal(consent.evidence, "consents.evidence"),
        cipher.seal(consent.subject, "consents.subject") if cipher.enabled else "",
    )


def consent_from_row(row: Sequence[Any], read_time: ReadTime, cipher: DataCipher) -> Consent:
    subject, channel, kind, obtained_at, expires_at, source, evidence, sealed = row
    record = f"consents row {row_label(subject)} ({channel}, {kind})"
    return Consent(
        subject=cipher.open(sealed, "consents.subject", record) if sealed
        else cipher.unsealed(subject, "consents.subject", record),
        channel=Channel(channel),
        kind=ConsentKind(kind),
        obtained_at=read_time(obtained_at),
        expires_at=None if expires_at is None else read_time(expires_at),
        source=cipher.open(source, SEALED_SOURCE, record),
        evidence=cipher.open(evidence, "consents.evidence", record),
    )


def consent_order(consent: Consent) -> tuple[str, datetime, str, str]:
    """The order consents are read in by subject: subject, obtained at, channel, kind."""
    return consent.subject, consent.obtained_at, consent.channel.value, consent.kind.value


def group_consents(consents: Iterable[Consent]) -> dict[str, tuple[Consent, ...]]:
    """Per subject, in the order read (callers read them by subject, then obtained_at)."""
    found: dict[str, list[Consent]] = {}
    for consent in consents:
        found.setdefault(consent.subject, []).append(consent)
    return {subject: tuple(rows) for subject, rows in found.items()}


def suppression_page_filter(
    after: tuple[str, str] | None, params: Parameters
) -> str:
    """The WHERE clause of a page of the suppression list (ORDER BY address, source) from
    `after`, the stored (address, source) of the previous page's last entry: the row
    comparison is a seek in the primary key. A search filters the opened rows instead
    (`suppression_text_match`): the column holds blind indexes."""
    if after is None:
        return ""
    address, source = after
    return f"WHERE (address, source) > ({params.bind(address)}, {params.bind(source)})"


def consent_page_filter(
    query: ConsentQuery, after: ConsentKey | None, params: Parameters
) -> str:
    """The WHERE clause of a page of consents (ORDER BY subject, channel, kind,
    obtained_at, the unique index consents_subject) from `after`, the previous page's last
    key with its stored subject, sought as `suppression_page_filter`; a search filters the
    opened rows (`consent_text_match`)."""
    clauses = []
    if query.channel is not None:
        clauses.append(f"channel = {params.bind(query.channel.value)}")
    if after is not None:
        subject, channel, kind, obtained_at = after
        clauses.append(
            "(subject, channel, kind, obtained_at) > ("
            f"{params.bind(subject)}, {params.bind(channel.value)}, {params.bind(kind.value)},"
            f" {params.time(obtained_at)})"
        )
    return where_all(clauses)


SEALED_LOCATION = "known_locations.location"
"""One column holds the whole location, a JSON document, sealed: the columns it replaced
(timezone, latitude, longitude, region, postal_code) showed where each indexed person
lives, and are left empty."""


def location_value(location: KnownLocation, cipher: DataCipher) -> str:
    return cipher.seal(
        json.dumps(dataclasses.asdict(location), separators=(",", ":")), SEALED_LOCATION
    )


def location_of(stored: str, cipher: DataCipher, record: str) -> KnownLocation:
    """A stored location, opened; a document that is not one is damage, as a ciphertext
    that does not open is."""
    document = cipher.open_json(stored, SEALED_LOCATION, record) if stored else {}
    try:
        latitude, longitude = document.get("latitude"), document.get("longitude")
        return KnownLocation(
            timezone=str(document.get("timezone") or ""),
            latitude=None if latitude is None else float(latitude),
            longitude=None if longitude is None else float(longitude),
            region=str(document.get("region") or ""),
            postal_code=str(document.get("postal_code") or ""),
        )
    except (AttributeError, TypeError, ValueError):
        raise SealedDataError(record, f"{SEALED_LOCATION} is not a location") from None


def located(
    rows: Iterable[Sequence[Any]], lookup: Mapping[str, str], cipher: DataCipher
) -> dict[str, KnownLocation]:
    """(stored number, location) rows by the caller's number (`lookup` maps each stored
    form to it); a number's row under its blind index wins over one written before
    encryption, which the sealing pass has yet to replace."""
    found: dict[str, KnownLocation] = {}
    for stored, location in rows:
        number = lookup[stored]
        if number not in found or stored == cipher.blind(number):
            found[number] = location_of(location, cipher, "known location")
    return found


# --- contacts and deliveries --------------------------------------------------------------


def contact_windows(now: datetime, limits: Sequence[tuple[int, int]]) -> list[tuple[int, datetime]]:
    """Each (limit, window_s) as (limit, the window's open start): the contacts later than
    the start count, those stamped after `now` too, so a replica whose clock runs ahead
    cannot let a slower one exceed the cap."""
    now = utc(now)
    return [(limit, now - timedelta(seconds=window_s)) for limit, window_s in limits]


SEALED_RECIPIENT = "deliveries.recipient"
"""What a delivery claim's sealed recipient copy is bound to: the recipient column holds the
blind index of its case-folded form."""


def delivery_recipient(
    stored: str, sealed: str, key: str, cipher: DataCipher, record: str
) -> str:
    """A delivery's recipient as the agent wrote it: opened from its sealed copy; a row in
    clear (written before encryption, or with it off) holds it itself, and one sealed
    before migration 0018 has only its blind index, which names `key`, the person asked
    about."""
    if sealed:
        return cipher.open(sealed, SEALED_RECIPIENT, record)
    return key if is_blind_index(stored) else cipher.unsealed(stored, SEALED_RECIPIENT, record)


def stale_before(now: datetime, stale_after_s: float) -> datetime:
    """A pending delivery claim made at or before this may be taken again (its process
    died mid-send); a later one is still in flight."""
    return utc(now) - timedelta(seconds=stale_after_s)


# --- blocks -------------------------------------------------------------------------------

BLOCK_COLUMNS = (
    "id, time, channel, account, sender, recipient, reasons_json, rules_version,"
    " message_id, subject, size, gateway_id, evidence_json"
)
"""What a block read selects, in the order `block_from_row` reads it."""

RECORDED_BLOCK_COLUMNS = (
    "time, channel, account, sender, recipient, reasons_json, reason_codes, rules_version,"
    " message_id, subject, size, gateway_id, evidence_json, recipient_index"
)
"""What `record_block` writes, in the order of `block_values`."""


def block_values(
    record: BlockRecord, write_time: WriteTime, cipher: DataCipher
) -> tuple[object, ...]:
    """reason_codes holds ',CODE1,CODE2,': a filter on one code looks for ',CODE,', which
    no other code's entry contains. Recipient, reasons, subject and evidence are sealed."""
    return (
        write_time(record.time),
        record.channel.value,
        record.account,
        record.sender,
        cipher.seal(record.recipient, "blocks.recipient"),
        cipher.seal(reasons_text(record.reasons), "blocks.reasons_json"),
        stored_reason_codes(record),
        record.rules_version,
        record.message_id,
        cipher.seal(record.subject, "blocks.subject"),
        record.size,
        record.gateway_id,
        cipher.seal(
            json.dumps(dict(record.evidence), sort_keys=True, default=str), "blocks.evidence_json"
        ),
        recipient_index(cipher, record.recipient),
    )


def reasons_text(reasons: Sequence[Reason]) -> str:
    """A record's reasons as stored, sealed: their messages quote what they are about (the
    suppressed address, the deceptive subject, the number without consent). Their codes
    are also kept in clear in reason_codes, which every filter and count reads."""
    return json.dumps([reason.as_dict() for reason in reasons])


def reasons_of(reasons: list[dict[str, str]]) -> tuple[Reason, ...]:
    return tuple(Reason(**reason) for reason in reasons)


def decision_reasons_stored(record: DecisionRecord, cipher: DataCipher) -> str:
    """An allowed decision has no reasons, and stores none: empty, as an empty subject is
    (its outcome and reason codes, in clear, say as much). Sealing '[]' cost every allowed
    message an AES-GCM call, each several microseconds in a busy gateway."""
    if not record.reasons:
        return ""
    return cipher.seal(reasons_text(record.reasons), "decisions.reasons_json")


def decision_reasons_opened(
    stored: str, outcome: DecisionOutcome, cipher: DataCipher, record: str
) -> tuple[Reason, ...]:
    """A blocked decision always has reasons: empty ones were blanked past the gateway."""
    if stored:
        return reasons_of(cipher.open_json(stored, "decisions.reasons_json", record))
    if outcome is DecisionOutcome.BLOCKED:
        raise SealedDataError(record, "decisions.reasons_json is empty for a blocked decision")
    return ()


def recipient_index(cipher: DataCipher, recipient: str) -> str:
    """The blind index a decision or block is found by for its recipient: of the case-folded
    form, so an email written 'Bob@Example.com' is found as 'bob@example.com'. Empty
    without encryption: the recipient column itself is searched then."""
    return cipher.blind(search_folded(recipient)) if cipher.enabled else ""


def recipient_lookup(params: Parameters, cipher: DataCipher, recipient: str) -> str:
    """A clause finding rows for one recipient: by blind index, and by the plaintext column
    for rows written before encryption (or with it off)."""
    plain = f"recipient = {params.bind(recipient)}"
    if not cipher.enabled:
        return plain
    return f"(recipient_index = {params.bind(recipient_index(cipher, recipient))} OR {plain})"


def block_from_row(row: Sequence[Any], read_time: ReadTime, cipher: DataCipher) -> BlockRecord:
    (
        block_id,
        time,
        channel,
        account,
        sender,
        recipient,
        reasons_json,
        rules_version,
        message_id,
        subject,
        size,
        gateway_id,
        evidence_json,
    ) = row
    record = f"block {block_id}"
    return BlockRecord(
        time=read_time(time),
        channel=Channel(channel),
        account=account,
        sender=sender,
        recipient=cipher.open(recipient, "blocks.recipient", record),
        reasons=reasons_of(cipher.open_json(reasons_json, "blocks.reasons_json", record)),
        rules_version=rules_version,
        message_id=message_id,
        subject=cipher.open(subject, "blocks.subject", record),
        size=size,
        gateway_id=gateway_id,
        evidence=cipher.open_json(evidence_json, "blocks.evidence_json", record),
        id=block_id,
    )


def reason_codes(stored: str) -> set[str]:
    """The distinct codes of a stored reason_codes: a code repeated within one block counts
    once."""
    return set(stored.strip(",").split(",")) - {""}


def block_filter(query: BlockQuery, params: Parameters, cipher: DataCipher) -> str:
    """The WHERE clause (empty when nothing filters) selecting `query`'s blocks; the paging
    cursor follows `BlockQuery.before_id`'s rule."""
    clauses = time_window(params, query.since, query.until)
    if query.reason is not None:
        clauses.append(params.contains("reason_codes", f",{query.reason},"))
    clauses += equal_to(params, (("channel", query.channel), ("account", query.account)))
    if query.recipient is not None:
        clauses.append(recipient_lookup(params, cipher, query.recipient))
    if query.before_id is not None:
        # If the cursor's block was erased meanwhile, the id alone still moves the walk on.
        cursor = params.bind(query.before_id)
        clauses.append(
            f"((time, id) < (SELECT time, id FROM blocks WHERE id = {cursor})"
            f" OR (NOT EXISTS (SELECT 1 FROM blocks WHERE id = {cursor}) AND id < {cursor}))"
        )
    return where_all(clauses)


# --- decisions ----------------------------------------------------------------------------

DECISION_COLUMNS = (
    "id, time, channel, account, key_id, sender, recipient, purpose, outcome, reasons_json,"
    " rules_version, upstream_id, subject, gateway_id"
)
"""What a page of the decision log selects, in the order `decision_from_row` reads it."""

DECISION_EVIDENCE_COLUMNS = DECISION_COLUMNS + ", evidence_json"
"""The same with the evidence document (one decision, an export)."""

RECORDED_DECISION_COLUMNS = (
    "time, channel, account, key_id, sender, recipient, recipient_lower, purpose, outcome,"
    " reasons_json, reason_codes, rules_version, upstream_id, subject, subject_lower,"
    " gateway_id, evidence_json, recipient_index, recipient_terms, subject_terms"
)
"""What `record_decisions` writes, in the order of `decision_values`."""

DECISION_DELETE_CHUNK = 5000
"""Decisions the retention job deletes per transaction: a log of ten million rows is
trimmed in short writes that let the send path's writes in between."""


def plain_folded(text: str, cipher: DataCipher) -> str:
    """recipient_lower / subject_lower: the lower-cased text without encryption, empty with
    it (the *_terms signatures and the sealed text stand in)."""
    return "" if cipher.enabled else text.lower()


def evidence_text(evidence: object) -> str:
    """The evidence document as both backends store it: compact JSON, keys sorted."""
    return json.dumps(evidence, sort_keys=True, separators=(",", ":"), default=str)


def decision_values(
    record: DecisionRecord, write_time: WriteTime, cipher: DataCipher
) -> tuple[object, ...]:
    """reason_codes is ',CODE1,CODE2,' as for blocks (',' for an allowed decision).
    Recipient, reasons, subject and evidence are sealed; the recipient's blind index and
    both texts' search signatures sit beside them."""
    return (
        write_time(record.time),
        record.channel.value,
        record.account,
        record.key_id,
        record.sender,
        cipher.seal(record.recipient, "decisions.recipient"),
        plain_folded(record.recipient, cipher),
        record.purpose.value,
        record.outcome.value,
        decision_reasons_stored(record, cipher),
        stored_reason_codes(record),
        record.rules_version,
        record.upstream_id,
        cipher.seal(record.subject, "decisions.subject"),
        plain_folded(record.subject, cipher),
        record.gateway_id,
        cipher.seal(evidence_text(dict(record.evidence)), "decisions.evidence_json"),
        recipient_index(cipher, record.recipient),
        cipher.recipient_signature(record.recipient),
        cipher.signature(record.subject),
    )


def decision_from_row(
    row: Sequence[Any], read_time: ReadTime, cipher: DataCipher
) -> DecisionRecord:
    """A row of DECISION_COLUMNS, or of DECISION_EVIDENCE_COLUMNS (with its evidence)."""
    (
        decision_id,
        time,
        channel,
        account,
        key_id,
        sender,
        recipient,
        purpose,
        outcome,
        reasons_json,
        rules_version,
        upstream_id,
        subject,
        gateway_id,
        *evidence_json,
    ) = row
    record = f"decision {decision_id}"
    outcome = DecisionOutcome(outcome)
    return DecisionRecord(
        time=read_time(time),
        channel=Channel(channel),
        account=account,
        sender=sender,
        recipient=cipher.open(recipient, "decisions.recipient", record),
        purpose=Purpose(purpose),
        outcome=outcome,
        reasons=decision_reasons_opened(reasons_json, outcome, cipher, record),
        rules_version=rules_version,
        key_id=key_id,
        upstream_id=upstream_id,
        subject=cipher.open(subject, "decisions.subject", record),
        gateway_id=gateway_id,
        evidence=(
            cipher.open_json(evidence_json[0], "decisions.evidence_json", record)
            if evidence_json else {}
        ),
        id=decision_id,
    )


DECISION_CURSOR_TIME = "SELECT time FROM decisions WHERE id = {cursor}"
"""Where a page starts: the time of the cursor's decision, read before the page."""


def decision_filter(
    query: DecisionQuery,
    params: Parameters,
    cipher: DataCipher,
    cursor_time: datetime | None = None,
) -> str:
    """The WHERE clause (empty when nothing filters) selecting `query`'s decisions. The
    paging cursor follows `BlockQuery.before_id`'s rule, with the cursor decision's time
    (`cursor_time`, read first: DECISION_CURSOR_TIME) as a bound an index seeks to, so a
    page deep in a log of ten million rows costs what the first does; without it (the
    cursor's decision is gone), the decisions with a lower id follow."""
    clauses = time_window(params, query.since, query.until)
    if query.reason is not None:
        clauses.append(params.contains("reason_codes", f",{query.reason},"))
    clauses += equal_to(
        params,
        (
            ("channel", query.channel),
            ("outcome", query.outcome),
            ("account", query.account),
            ("sender", query.sender),
            ("upstream_id", query.upstream_id),
        ),
    )
    for name, text in (("recipient", query.recipient), ("subject", query.text)):
        if text is not None:
            clauses.append(partial_search(params, cipher, name, text))
    if query.before_id is not None:
        cursor = params.bind(query.before_id)
        if cursor_time is None:
            clauses.append(f"id < {cursor}")
        else:
            at = params.time(cursor_time)
            clauses.append(f"time <= {at} AND (time < {at} OR id < {cursor})")
    return where_all(clauses)


NUMBER_SEARCH = re.compile(r"[-0-9+(). ]*[0-9][-0-9+(). ]*")
"""A search that may be for part of a number: digits, and the marks a number is written with
(migration 0020 took the signature of every text's and call's recipient, also of one kept
as the agent wrote it because it did not parse as a number)."""


def partial_search(params: Parameters, cipher: DataCipher, name: str, text: str) -> str:
    """Candidates for a search for part of the recipient or subject: rows whose signature
    holds every bit of the term's, and rows written before encryption by their lower-cased
    copy. With encryption the candidates are decrypted and compared (`decision_matches`)."""
    plain = params.contains(f"{name}_lower", text.lower())
    if not cipher.enabled:
        return plain
    mask = params.bind(cipher.search_mask(text))
    signed = f"({name}_terms & {mask}) = {mask}"
    if name == "recipient" and NUMBER_SEARCH.fullmatch(search_folded(text)):
        signed = f"({signed} OR recipient_terms = 0)"  # numbers have no signature
    return f"({signed} AND {name}_lower = '' OR {plain})"


def decision_matches(query: DecisionQuery, cipher: DataCipher) -> Callable[[DecisionRecord], bool]:
    """Whether a decrypted candidate really holds the searched parts (always, without
    encryption or without a partial search: the SQL filter was exact)."""
    wanted = [
        (attribute, search_folded(text))
        for attribute, text in (("recipient", query.recipient), ("subject", query.text))
        if text is not None
    ]
    if not cipher.enabled or not wanted:
        return lambda record: True
    return lambda record: all(
        text in search_folded(getattr(record, attribute)) for attribute, text in wanted
    )


SUMMARY_READ_PAGE = 5000
"""Candidates a summary over a sealed-text search reads per page."""


def searches_sealed_text(query: DecisionQuery, cipher: DataCipher) -> bool:
    """A search for part of a sealed recipient or subject: its counts come from the
    decrypted matches (`summary_of_decisions`), never from the candidates' SQL count."""
    return cipher.enabled and (query.recipient is not None or query.text is not None)


def summary_buckets(query: DecisionQuery, bucket_s: int) -> list[tuple[int, datetime, datetime]]:
    """(bucket start in Unix seconds, from, to): the window's `bucket_s`-second buckets,
    aligned to the epoch, the first and last cut to the window."""
    check_bucket(bucket_s)
    if query.since is None or query.until is None:
        raise ValueError("a decision summary needs both since and until")
    since, until = utc(query.since), utc(query.until)
    start = int(since.timestamp()) // bucket_s * bucket_s
    buckets = []
    while start < until.timestamp():
        low = max(datetime.fromtimestamp(start, UTC), since)
        high = min(datetime.fromtimestamp(start + bucket_s, UTC), until)
        buckets.append((start, low, high))
        start += bucket_s
    return buckets


def summary_cells(query: DecisionQuery) -> list[DecisionQuery]:
    """`query` once per (outcome, channel) it can match, without its cursor: each cell a
    range of an index that leads with outcome and channel."""
    return [
        dataclasses.replace(query, outcome=outcome, channel=channel, before_id=None)
        for outcome in ([query.outcome] if query.outcome else list(DecisionOutcome))
        for channel in ([query.channel] if query.channel else list(Channel))
    ]


def stored_reason_codes(record: DecisionRecord) -> str:
    """The reason_codes column: ',CODE1,CODE2,' (',' for an allowed decision), so a
    filter on one code is a search for ',CODE,'."""
    return "," + "".join(f"{reason.code}," for reason in record.reasons)


def summary_of_decisions(records: Iterable[DecisionRecord], bucket_s: int) -> DecisionSummary:
    """What `decision_summary` counts, from decisions already read: when a first page holds
    every decision the filter matches, the page reads the window once instead of twice (a
    search for one recipient in a week of ten million decisions is a scan of the week)."""
    check_bucket(bucket_s)
    cells: Counter[tuple[int, str, str]] = Counter()
    reasons: Counter[tuple[str, str]] = Counter()
    for record in records:
        bucket = int(record.time.timestamp()) // bucket_s * bucket_s
        cells[bucket, record.outcome.value, record.channel.value] += 1
        if record.outcome is DecisionOutcome.BLOCKED:
            reasons[record.channel.value, stored_reason_codes(record)] += 1
    return decision_summary_of(
        ((bucket, outcome, channel, n) for (bucket, outcome, channel), n in cells.items()),
        ((channel, codes, n) for (channel, codes), n in reasons.items()),
    )


def decision_summary_of(
    cells: Iterable[Sequence[Any]], reasons: Iterable[Sequence[Any]]
) -> DecisionSummary:
    """The summary from counted cells (bucket start in Unix seconds, outcome, channel,
    decisions) and the blocked decisions' (channel, reason_codes, decisions)."""
    counts: Counter[tuple[str, str]] = Counter()
    series: Counter[tuple[int, str]] = Counter()
    for bucket, outcome, channel, decisions in cells:
        if decisions:
            counts[channel, outcome] += decisions
            series[int(bucket), outcome] += decisions
    per_reason: Counter[tuple[str, str]] = Counter()
    for channel, stored, decisions in reasons:
        for code in reason_codes(stored):
            per_reason[channel, code] += decisions
    return DecisionSummary(
        counts=tuple((channel, outcome, n) for (channel, outcome), n in sorted(counts.items())),
        reasons=tuple((channel, code, n) for (channel, code), n in sorted(per_reason.items())),
        series=tuple(
            (datetime.fromtimestamp(start, UTC), outcome, n)
            for (start, outcome), n in sorted(series.items())
        ),
    )


# --- the audit log ------------------------------------------------------------------------


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """A-Z folded to a-z, every other character kept: the fold both backends apply to a
    column in SQL (`Parameters.ascii_lower`), so a search matches the same rows on each."""
    return text.translate(_ASCII_LOWER)


def audit_filter(query: AuditQuery, params: Parameters) -> str:
    """The WHERE clause (empty when nothing filters) selecting `query`'s entries; pages
    follow the ids down, which the primary key seeks to."""
    clauses = time_window(params, query.since, query.until)
    if query.actor is not None:
        # Both sides folded alike on both backends (A-Z only): Python's lower() of the
        # term against SQLite's ASCII-only lower() missed "Ümit" searched by its own name.
        clauses.append(params.contains(params.ascii_lower("actor"), ascii_lower(query.actor)))
    if query.action is not None:
        if query.action.endswith("."):
            prefix = params.bind(query.action)
            clauses.append(f"substr(action, 1, {len(query.action)}) = {prefix}")
        else:
            clauses.append(f"action = {params.bind(query.action)}")
    if query.before_id is not None:
        clauses.append(f"id < {params.bind(query.before_id)}")
    return where_all(clauses)


AUDIT_ACTIONS = (
    "WITH RECURSIVE actions (action) AS ("
    " SELECT min(action) FROM audit"
    " UNION ALL"
    " SELECT (SELECT min(action) FROM audit WHERE action > actions.action)"
    " FROM actions WHERE actions.action IS NOT NULL)"
    " SELECT action FROM actions WHERE action IS NOT NULL"
)
"""The distinct actions, one index seek each (audit_action, migration 0016) rather than a
scan of the whole log: a log holds millions of entries of a few dozen actions."""


def check_bucket(bucket_s: int) -> None:
    if bucket_s <= 0:
        raise ValueError(f"bucket_s must be positive, not {bucket_s}")


def groups_text(groups: tuple[str, ...]) -> str:
    """A person's group names as both backends keep them (a JSON list)."""
    return json.dumps(list(groups))


def groups_from_text(text: str) -> tuple[str, ...]:
    return tuple(str(group) for group in json.loads(text))


AGENT_KEY_COLUMNS = "key_id, account, digest, created_at, expires_at, last_used_at, revoked_at"
"""`AgentKeyRow`'s fields in order, as both backends select and insert them."""
PERSON_COLUMNS = (
    "person_id, user_name, created_at, updated_at, external_id, display_name, active, groups,"
    " role, attributes"
)
"""`PersonRow`'s fields in order."""
UNIQUE_PERSON_COLUMNS = ("user_name", "external_id")
"""What no two people share (None aside): a write setting one checks it first (`Conflict`)."""


def changed_person(before: PersonRow, changes: PersonChanges, at: datetime) -> PersonRow | None:
    """`before` with what `changes` gives (`updated_at` = `at`); None when that is what is
    stored already (no write)."""
    given = {
        field.name: getattr(changes, field.name)
        for field in dataclasses.fields(changes)
        if getattr(changes, field.name) is not KEEP
    }
    if all(getattr(before, name) == value for name, value in given.items()):
        return None
    return dataclasses.replace(before, **given, updated_at=at)


def person_assignments(before: PersonRow, after: PersonRow) -> list[tuple[str, object]]:
    """The columns (of `PersonChanges`') in which `after` differs from `before`, with the
    values to store; `updated_at` is the backend's to add (it stores times its own way)."""
    assignments: list[tuple[str, object]] = []
    for field in dataclasses.fields(PersonChanges):
        value = getattr(after, field.name)
        if value != getattr(before, field.name):
            assignments.append((field.name, groups_text(value) if field.name == "groups"
                                else value))
    return assignments


def page_window(start: int, count: int) -> tuple[int, int]:
    """A page's (offset, limit) as SQL can take them: from 0 and at most MAX_PAGE_START
    (a client may ask for any start and count; no table holds 2**62 rows)."""
    return min(max(start, 0), MAX_PAGE_START), min(max(count, 0), MAX_PAGE_START)
GROUP_COLUMNS = "group_id, display_name, created_at, updated_at, external_id"
"""`GroupRow`'s fields in order, but its members (a table of their own)."""


def group_key(display_name: str) -> str:
    """What makes two groups' display names the same (SCIM's caseExact=false): unique in
    the store, and what a `displayName eq` search compares."""
    return display_name.casefold()
SESSION_COLUMNS = (
    "session_hash, method, role, created_at, last_seen_at, expires_at, person_id, account"
)
"""`SessionRow`'s fields in order."""


def session_filter(
    session_hash: str | None, person_id: str | None, account: str | None
) -> dict[str, str]:
    """The columns `end_sessions` matches on: what was given, and at least one of them (an
    empty filter would end every session)."""
    given = {"session_hash": session_hash, "person_id": person_id, "account": account}
    where = {column: value for column, value in given.items() if value is not None}
    if not where:
        raise ValueError("end_sessions needs a session, a person or an account")
    return where
