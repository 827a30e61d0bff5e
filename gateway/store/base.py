"""The store interface the pipeline depends on: one protocol per concern, and `Store`, all
of them at once, which SQLite and PostgreSQL implement.

A consumer that needs one concern may ask for that protocol alone (a webhook needs the
`SuppressionList`, not the audit log). Every method may raise `StoreUnavailable`; callers
treat that as "fact unknown" and fail closed (the agent gets a temporary failure).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from gateway.model import (
    AuditEvent,
    BlockRecord,
    Channel,
    Consent,
    ConsentKind,
    DecisionOutcome,
    DecisionRecord,
    KnownLocation,
    Suppression,
)
from gateway.store.errors import StoreUnavailable as StoreUnavailable
from gateway.store.resealing import ResealBatch, SealedTable
from gateway.store.sealing import ERASED_PREFIX as ERASED_PREFIX
from gateway.store.sealing import DataCipher

# An erased person's suppression survives as one row under a keyed hash of their key
# (ERASED_PREFIX), so the opt-out keeps holding while the address itself is gone.
ERASED_SOURCE = "erased"


def erased_address(erasure_key: bytes, key: str) -> str:
    """The stand-in for suppression key `key` once its owner is erased (HMAC-SHA256, so
    nobody without the erasure key can test an address list against the table)."""
    return ERASED_PREFIX + hmac.new(erasure_key, key.encode(), hashlib.sha256).hexdigest()


class DeliveryClaim(enum.Enum):
    CLAIMED = "claimed"
    ALREADY_DELIVERED = "already_delivered"
    IN_FLIGHT = "in_flight"


class Conflict(Exception):
    """A write would give two records one value that must be unique; names the field."""


@dataclass(frozen=True)
class BlockQuery:
    """`before_id` is a page cursor: only the records listed after block `before_id` in the
    newest-first order (time, then id, descending). Keying on the id rather than an offset
    keeps a walk through the pages from repeating or skipping records while new blocks are
    recorded; keying on its place in the order rather than `id <` keeps a block recorded
    after a newer one (a slow decision) from falling between two pages. Should the cursor's
    block be gone (erased), the records with a lower id follow instead."""

    since: datetime | None = None
    until: datetime | None = None
    reason: str | None = None
    channel: Channel | None = None
    account: str | None = None
    recipient: str | None = None
    limit: int = 1000
    before_id: int | None = None


@dataclass(frozen=True)
class DecisionQuery:
    """A page of the decision log, newest first (time, then id); `before_id` is the page
    cursor, with `BlockQuery.before_id`'s rule. `recipient` and `text` (over the subject)
    match any part, without case (str.lower on both sides); every other filter matches
    exactly, `reason` one of the decision's codes."""

    since: datetime | None = None
    until: datetime | None = None
    channel: Channel | None = None
    outcome: DecisionOutcome | None = None
    reason: str | None = None
    account: str | None = None
    sender: str | None = None
    recipient: str | None = None
    text: str | None = None
    upstream_id: str | None = None
    limit: int = 100
    before_id: int | None = None


@dataclass(frozen=True)
class DecisionSummary:
    """A filtered view of the decision log counted, for the console's totals and chart:
    `counts` is (channel, outcome, decisions), `reasons` (channel, reason code, decisions
    carrying it: a decision for two reasons counts under both), `series` (bucket start in
    UTC, outcome, decisions) oldest first, buckets aligned to the Unix epoch and empty ones
    left out. Each list but the series is sorted."""

    counts: tuple[tuple[str, str, int], ...] = ()
    reasons: tuple[tuple[str, str, int], ...] = ()
    series: tuple[tuple[datetime, str, int], ...] = ()

    @property
    def total(self) -> int:
        return sum(n for _, _, n in self.counts)


@dataclass(frozen=True)
class SuppressionQuery:
    """A page of the suppression list in key order (address, then source). `text` matches
    any part of the address (keys are lower case, so the text is folded to lower case);
    `after` is the (address, source) of the previous page's last entry: the page seeks the
    primary key there instead of counting rows up to an offset."""

    text: str | None = None
    after: tuple[str, str] | None = None
    limit: int = 50


ConsentKey = tuple[str, Channel, ConsentKind, datetime]
"""What makes a consent unique: subject, channel, kind, obtained at."""


@dataclass(frozen=True)
class ConsentQuery:
    """A page of the consent registry in the order of its unique key (subject, channel,
    kind, obtained at); `text` matches any part of the subject as `SuppressionQuery.text`
    does the address, `channel` exactly, and `after` is the previous page's last key."""

    text: str | None = None
    channel: Channel | None = None
    after: ConsentKey | None = None
    limit: int = 50


@dataclass(frozen=True)
class AuditProblem:
    """The first audit entry whose chain does not verify."""

    entry_id: int
    problem: str


@dataclass(frozen=True)
class AuditQuery:
    """A page of the audit log, newest first in chain order (by id: ids are taken in append
    order under the chain's lock, where a clock stepped back would disorder the times);
    `before_id` is the page cursor, the entries with a lower id. `actor` matches any part
    without case (in SQLite, ASCII letters only, as its other searches); `action` matches
    exactly, or, ending in '.', every action it starts (`suppression.`)."""

    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None
    action: str | None = None
    limit: int = 100
    before_id: int | None = None


@dataclass(frozen=True)
class AuditChain:
    """One walk of the whole chain: the entries that verified (all of them unless
    `problem`) and where the chain starts: after entry `anchor_entry_id`, pruned by
    retention at `pruned_at`, or (None) from the beginning or a purge."""

    entries: int
    problem: AuditProblem | None = None
    anchor_entry_id: int | None = None
    pruned_at: datetime | None = None


@dataclass(frozen=True)
class ContactRow:
    channel: Channel
    time: datetime
    gateway_id: str


@dataclass(frozen=True)
class DeliveryRow:
    delivery_key: str
    recipient: str
    state: str
    claimed_at: datetime
    upstream_id: str | None


@dataclass(frozen=True)
class PersonalData:
    """Everything the store holds about one suppression key (a data-subject export).

    `erased_suppressions` are the keyed-hash rows left by an earlier erasure: the only
    trace of an erased person, and proof that their opt-out still holds.
    """

    key: str
    suppressions: tuple[Suppression, ...] = ()
    erased_suppressions: tuple[Suppression, ...] = ()
    consents: tuple[Consent, ...] = ()
    known_location: KnownLocation | None = None
    blocks: tuple[BlockRecord, ...] = ()
    decisions: tuple[DecisionRecord, ...] = ()
    contacts: tuple[ContactRow, ...] = ()
    notice_sent_at: datetime | None = None
    deliveries: tuple[DeliveryRow, ...] = ()
    audit: tuple[AuditEvent, ...] = ()


@dataclass(frozen=True)
class AgentKeyRow:
    """An agent key as stored: never the key, only its keyed digest."""

    key_id: str
    account: str
    digest: str
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class PersonRow:
    """A person who signs in. `user_name` is their person key (`services.people.person_key`
    of their email address); `role` the highest role their groups map to, None for no
    access."""

    person_id: str
    user_name: str
    created_at: datetime
    updated_at: datetime
    external_id: str | None = None
    display_name: str = ""
    active: bool = True
    groups: tuple[str, ...] = ()
    role: str | None = None
    # The SCIM attributes the gateway keeps for a provisioning client without reading them
    # (name, emails, the userName as spelled), a JSON object the store does not look into.
    attributes: str = "{}"


class Keep(enum.Enum):
    """A column a write leaves as it is stored (None is a value some columns hold)."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True)
class PersonChanges:
    """The columns of a person one writer sets (`PeopleDirectory.update_person`); each
    other column stays as stored, so writers that each own some columns (single sign-on,
    SCIM's User, SCIM's Groups) never undo one another's work. `active` is not among them:
    only `set_person_active` changes it."""

    user_name: str | Keep = KEEP
    external_id: str | Keep | None = KEEP
    display_name: str | Keep = KEEP
    groups: tuple[str, ...] | Keep = KEEP
    role: str | Keep | None = KEEP
    attributes: str | Keep = KEEP


@dataclass(frozen=True)
class GroupRow:
    """A group a SCIM client provisions. Its `display_name` is unique without regard to
    case and maps to a role (`[scim] roles`); `members` are person ids (read back in
    id order, each once)."""

    group_id: str
    display_name: str
    created_at: datetime
    updated_at: datetime
    external_id: str | None = None
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class SessionRow:
    """A signed-in session, by the hash of its cookie's token: a person's (single sign-on)
    or an account's (the break-glass shared secret). Times are POSIX seconds."""

    session_hash: str
    method: str
    role: str
    created_at: float
    last_seen_at: float
    expires_at: float
    person_id: str | None = None
    account: str | None = None


class StoreLifecycle(Protocol):
    async def open(self) -> None:
        """Connect and apply pending schema migrations."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreUnavailable unless a trivial query succeeds."""


class SuppressionList(Protocol):
    """Who must not be contacted: one entry per (address, source). An entry's `address` is
    the spelling that opted out and its `mailbox` the key of the mailbox that spelling
    reaches; a key is suppressed when an entry has it in either column (or, once erased, its
    keyed hash), so callers look up both keys of a recipient (`suppression_keys`)."""

    async def suppressed(self, addresses: Iterable[str]) -> frozenset[str]:
        """The subset of `addresses` (normalized keys) that is on the suppression list:
        those naming an entry's address or mailbox, from at least one source."""

    async def add_suppressions(self, entries: Sequence[Suppression]) -> int:
        """Record each entry under its (address, source): an address may be suppressed for
        several reasons at once (a do-not-call import and an SMS STOP), one entry per
        source. Re-adding a source's entry refreshes its reason, actor and time and leaves
        the address's other sources alone (and sets its mailbox). Returns how many addresses
        had no entry from any source before, under their address or their mailbox (each
        counted once, however often the batch repeats it)."""

    async def import_suppressions(
        self,
        addresses: Sequence[str],
        *,
        source: str,
        reason: str,
        actor: str,
        time: datetime,
        audit: Callable[[int], AuditEvent],
        progress: Callable[[int], None] | None = None,
        mailboxes: Mapping[str, str] | None = None,
    ) -> int:
        """A bulk import (a do-not-call list, a million-row CSV) in ONE transaction: each
        address is added as `add_suppressions` adds `Suppression(address, source, reason,
        time, actor, mailboxes.get(address, ""))`, then the event `audit(new)` is appended
        to the audit log; if anything fails (the store, `audit` itself), none of it is
        applied. The store may write in chunks and calls `progress(addresses_written)` after
        each (from any thread).
        Returns the new addresses, counted over the whole import as `add_suppressions`
        counts them (erased rows as of the start of the import)."""

    async def remove_suppressions(
        self,
        addresses: Iterable[str],
        audit: Callable[[Sequence[Suppression]], AuditEvent] | None = None,
    ) -> int:
        """Lift the suppression entirely (an operator's removal): every entry that names one
        of the keys as its address or mailbox goes, whatever its source, erased entries too.
        With `audit`, the event `audit(entries removed)` is appended in the same transaction.
        Returns how many of the addresses (each counted once) had any entry."""

    async def list_suppressions(self) -> list[Suppression]:
        """Every entry, one per (address, source), ordered by address, then source."""

    async def suppression_page(self, query: SuppressionQuery) -> list[Suppression]:
        """Up to `query.limit` entries, erased ones included, after `query.after` (see
        `SuppressionQuery`); a search walks the primary key in order and stops when the page
        is full."""

    async def suppression_entries(self, addresses: Iterable[str]) -> list[Suppression]:
        """The entries naming one of `addresses` (keys) as their address or mailbox, each
        once, ordered by address, then source: which sources hold a recipient (an erased
        entry is not among them: its address is a keyed hash, `suppressed` answers for it)."""

    async def count_suppressed(self) -> int:
        """How many distinct addresses and numbers are suppressed (for the metrics gauge,
        read periodically, never per request)."""

    async def remove_suppressions_from_source(
        self,
        addresses: Iterable[str],
        source: str,
        *,
        recorded_before: datetime | None = None,
        audit: Callable[[Sequence[Suppression]], AuditEvent] | None = None,
    ) -> int:
        """Remove only entries whose source is `source` (a START lifts a STOP, never an
        operator's, a do-not-call list's or a provider's suppression): an address with an
        entry from another source stays suppressed. With `recorded_before`, only entries
        whose time is earlier than it go, decided in the delete itself: an entry (re)written
        later, even by a request that raced this one, stays (a START received before a STOP
        never removes it). With `audit`, the event `audit(entries removed)` is appended in
        the same transaction when any entry was removed (nothing is written otherwise).
        Returns how many entries were removed."""

    async def remove_suppressions_with_source_prefix(
        self, addresses: Iterable[str], prefix: str
    ) -> int:
        """Remove only entries whose source starts with `prefix` (a provider lifting its own
        suppressions, never the gateway's): an address with an entry from another source
        stays suppressed. Returns how many entries were removed (an address may have had
        several sources with the prefix)."""

    async def update_mailboxes(self, mailbox_of: Callable[[str], str], version: str) -> int:
        """Set the mailbox of every email entry not erased to `mailbox_of(address)`: all of
        them when the mailbox rules' `version` differs from the one recorded with the last
        update, else only those without one (written before the column existed, or by an
        older replica). Records `version`; returns the entries changed."""


class DataSealing(Protocol):
    async def use_data_cipher(self, cipher: DataCipher) -> None:
        """Seal personal data with `cipher` from now on (services.data_keys checks it
        against the store first)."""


class Resealing(Protocol):
    async def reseal_batch(
        self, table: SealedTable, after: Sequence[Any] | None, limit: int
    ) -> ResealBatch:
        """Re-seal the next `limit` rows of `table` after the cursor under the active key
        (gateway/store/resealing.py), in one transaction."""

    async def count_rows(self, table: SealedTable) -> int: ...

    async def settle_resealing(self) -> None:
        """After a pass: nothing it replaced may linger where a copy of the store would
        find it (SQLite's WAL holds the rewritten pages until a checkpoint)."""


class InboundMessages(Protocol):
    """Provider message ids (Twilio's `MessageSid`) of inbound messages the gateway acted on,
    kept in the store so that every replica recognises a replayed or retried webhook."""

    async def inbound_seen(self, message_id: str) -> bool:
        """Whether `message_id` was recorded."""

    async def record_inbound(self, message_id: str, received_at: datetime) -> bool:
        """Record `message_id` (received at `received_at`); False, changing nothing, when it
        was recorded already (another delivery of the same message got there first)."""


class SharedSettings(Protocol):
    """Facts every replica must agree on (generated keys, fingerprints of configured ones),
    kept in the store because the store is what replicas share."""

    async def claim_setting(self, name: str, value: str) -> str:
        """Record `value` under `name` unless something is recorded there already; return
        what is recorded (so of two replicas claiming at once, both get the winner's)."""

    async def settings_named(self, prefix: str) -> dict[str, str]:
        """Every setting whose name starts with `prefix`."""

    async def put_setting(self, name: str, value: str) -> None:
        """Record `value` under `name`, replacing what is there: for the few settings that
        are news rather than agreements (a running process's heartbeat)."""

    async def drop_setting(self, name: str) -> None:
        """Forget `name` (nothing happens when it is not recorded)."""


class LoginCounters(Protocol):
    """Failed sign-ins and the lockouts they earn, by scope (a source prefix or an account
    name), shared by every replica. Times are POSIX seconds."""

    async def login_locked_until(self, scopes: Sequence[str], now: float) -> float:
        """The latest end of a lockout holding on any of `scopes` (0.0 when none holds)."""

    async def count_login_failure(
        self, scopes: Sequence[str], now: float, window_s: float, limit: int, lockout_s: float
    ) -> tuple[str, ...]:
        """Record one failure against each scope; a scope with `limit` failures within
        `window_s` is locked until `now + lockout_s` and its failures forgotten. Returns
        the scopes this failure locked (each lockout is reported once, whichever replica
        counted the failure that earned it)."""


class AgentKeyRegistry(Protocol):
    async def add_agent_key(self, row: AgentKeyRow) -> None: ...

    async def agent_key(self, key_id: str) -> AgentKeyRow | None: ...

    async def agent_keys(self, account: str | None = None) -> list[AgentKeyRow]:
        """Every key (of `account`), oldest first, revoked ones included."""

    async def revoke_agent_key(self, key_id: str, at: datetime) -> bool:
        """Revoke a key that is not revoked yet; False when there is none such."""

    async def agent_key_used(self, key_id: str, at: datetime) -> None: ...


MAX_PAGE_START = 2**62
"""The furthest a page may start (`people`, `groups`): past any table's size, yet within
SQL's signed 64-bit integers; a later start (or a larger count) is taken as this."""


class PeopleDirectory(Protocol):
    async def save_person(self, row: PersonRow) -> None:
        """Insert, or replace the row with the same `person_id`. Raises `Conflict` when
        another person has the `user_name` or `external_id`. For a new person: a change to
        a stored one goes through `update_person` or `set_person_active`, which change only
        what their writer owns."""

    async def update_person(
        self, person_id: str, changes: PersonChanges, at: datetime
    ) -> tuple[PersonRow, PersonRow] | None:
        """In one transaction: the person as stored, and `changes` applied to that (the
        other columns as they are; `updated_at` = `at` when anything differs, else no
        write). Returns (after, before); None when there is no such person. Raises
        `Conflict` when another person has the new `user_name` or `external_id`."""

    async def set_person_active(
        self, person_id: str, active: bool, at: datetime
    ) -> tuple[PersonRow, PersonRow] | None:
        """Set only the person's `active` flag (and `updated_at` when it changes), in one
        transaction with reading them; (after, before), or None when there is no such
        person."""

    async def person(self, person_id: str) -> PersonRow | None: ...

    async def person_by_user_name(self, user_name: str) -> PersonRow | None: ...

    async def person_by_external_id(self, external_id: str) -> PersonRow | None: ...

    async def people(
        self, start: int = 0, count: int = 100, user_name: str | None = None
    ) -> tuple[list[PersonRow], int]:
        """A page of people by user name (`start` counts from 0), and how many there are
        in all (of that `user_name`, when given)."""

    async def delete_person(self, person_id: str) -> bool:
        """Delete the person, end their sessions and drop their group memberships; False
        when there was none."""


class ScimGroups(Protocol):
    """Groups provisioned over SCIM and their members (people, by id)."""

    async def save_group(self, row: GroupRow) -> None:
        """Insert, or replace the group with the same `group_id`, its members with it (a
        member who is no person is left out). Raises `Conflict("display_name")` when
        another group has the display name, compared without case."""

    async def group(self, group_id: str) -> GroupRow | None: ...

    async def group_by_display_name(self, display_name: str) -> GroupRow | None:
        """The group of that display name, compared without case."""

    async def groups(
        self, start: int = 0, count: int = 100, display_name: str | None = None
    ) -> tuple[list[GroupRow], int]:
        """A page of groups by display name (`start` counts from 0), and how many there
        are in all (of that `display_name`, compared without case, when given)."""

    async def groups_of_person(self, person_id: str) -> list[GroupRow]:
        """The groups the person is a member of, by display name."""

    async def delete_group(self, group_id: str) -> bool:
        """Delete the group and its memberships; False when there was none."""


class SessionStore(Protocol):
    async def add_session(self, row: SessionRow) -> None: ...

    async def session(self, session_hash: str, now: float) -> SessionRow | None:
        """The session, unless it has expired (an expired one is deleted)."""

    async def touch_session(self, session_hash: str, at: float) -> None: ...

    async def end_sessions(
        self, *, session_hash: str | None = None, person_id: str | None = None,
        account: str | None = None,
    ) -> int:
        """Delete the session(s) matching what is given; how many."""


class OneTimeMarks(Protocol):
    async def use_once(self, mark: str, now: float, expires_at: float) -> bool:
        """Record `mark` as used until `expires_at`; False when it already was (a replay).
        Marks expired by `now` are forgotten."""

    async def take_once(self, mark: str, now: float) -> bool:
        """Remove `mark` if it is there and not expired by `now`; whether it was. Only
        ever removes: a clock behind another replica's cannot make a mark appear."""


class ConsentRegistry(Protocol):
    async def add_consents(self, consents: Sequence[Consent]) -> int:
        """Insert consents (an identical subject/channel/kind/obtained_at is not duplicated);
        returns how many were new."""

    async def consents_for(self, subjects: Iterable[str]) -> dict[str, tuple[Consent, ...]]:
        """Every recorded consent per subject (expired ones too; the policy decides)."""

    async def consent_page(self, query: ConsentQuery) -> list[Consent]:
        """Up to `query.limit` consents, expired ones too, after `query.after` (see
        `ConsentQuery`), read along the unique index."""


class KnownLocations(Protocol):
    """Where a callee lives, for calling hours in their own time zone."""

    async def known_locations(self, numbers: Iterable[str]) -> dict[str, KnownLocation]: ...

    async def set_known_location(self, number: str, location: KnownLocation) -> None: ...


class ContactLedger(Protocol):
    """Contacts made (for frequency caps) and SMS opt-out notices sent."""

    async def contact_counts(self, recipients: Iterable[str], since: datetime) -> dict[str, int]:
        """Contacts (calls and texts, all channels) per recipient at or after `since`."""

    async def reserve_contact(
        self,
        recipient: str,
        channel: Channel,
        now: datetime,
        gateway_id: str,
        limits: Sequence[tuple[int, int]],
    ) -> bool:
        """Atomically: if for every (limit, window_s) fewer than `limit` contacts to
        `recipient` are later than now - window_s (clock skew between replicas counts
        against the sender), record this contact and return True;
        otherwise record nothing and return False. With no limits, always records.

        This check-and-count is what holds a frequency cap under concurrent sends and
        across replicas sharing the database.
        """

    async def release_contact(self, recipient: str, gateway_id: str) -> None:
        """Forget a reserved contact whose send failed, so it does not count."""

    async def notice_sent_at(self, recipients: Iterable[str]) -> dict[str, datetime]:
        """When each recipient last got the SMS opt-out notice (absent: never)."""

    async def mark_notice_sent(self, recipient: str, at: datetime) -> None: ...


class BlockLog(Protocol):
    """Every blocked message, for review, reports and retention."""

    async def record_block(self, record: BlockRecord) -> int:
        """Durably record a block before the agent is told; returns the record id."""

    async def query_blocks(self, query: BlockQuery) -> list[BlockRecord]:
        """Newest first."""

    async def get_block(self, block_id: int) -> BlockRecord | None: ...

    async def block_counts(
        self, since: datetime | None, until: datetime | None
    ) -> list[tuple[str, str, int]]:
        """(channel, reason code, blocks) for the blocks with since <= time < until, either
        bound optional: a block counts once under each distinct code it carries, so a block
        for two reasons is in two counts. Ordered by channel, then code."""

    async def block_series(
        self, since: datetime | None, until: datetime | None, bucket_s: int
    ) -> list[tuple[datetime, int]]:
        """Blocks per `bucket_s`-second bucket (buckets aligned to the Unix epoch, each
        named by its UTC start) over since <= time < until, oldest first. Empty buckets
        are left out; a chart fills them with zero."""

    async def clear_block_metadata(self, before: datetime) -> int:
        """Blank subject and message id of blocks older than `before`; returns rows changed."""

    async def delete_blocks(self, before: datetime) -> int:
        """Delete blocks older than `before`; returns how many."""


class DecisionLog(Protocol):
    """Every decision, allowed and blocked, with its evidence: what the operator shows a
    court or regulator (`compliance-gateway evidence`, `GET /v1/decisions`)."""

    async def record_decisions(
        self, records: Sequence[DecisionRecord], *, durable: bool = True
    ) -> list[int]:
        """Record the decisions (in one transaction) before the agent is told; returns
        their ids in order. `durable=False`: the commit need not reach the disk before
        this returns (SQLite: a crash of the gateway cannot lose it, a power cut may lose
        the last moment's; PostgreSQL: an asynchronous commit, which a server crash may
        lose within `wal_writer_delay`), for the decisions of copies already out, whose
        provider keeps its own record."""

    async def query_decisions(self, query: DecisionQuery) -> list[DecisionRecord]:
        """Newest first, without their evidence (`evidence` is empty: `get_decision` has
        it), so a page of a long log reads only the columns it shows."""

    async def get_decision(self, decision_id: int) -> DecisionRecord | None:
        """The decision with its evidence."""

    async def decision_summary(self, query: DecisionQuery, bucket_s: int) -> DecisionSummary:
        """`query`'s decisions (its `limit` and `before_id` aside) counted per channel,
        outcome and reason, and per `bucket_s`-second bucket, in one read of the window
        that never brings its rows into Python (the console's page answers in a few
        hundred milliseconds at ten million decisions). `since` and `until` are required:
        they bound the buckets."""

    async def delete_decisions(self, before: datetime) -> int:
        """Delete decisions older than `before` (in chunks, so writers are never held up
        for long); returns how many."""


class DeliveryLedger(Protocol):
    """Which (message, recipient) pairs went out, so an agent's retry sends no second copy."""

    async def claim_delivery(
        self, delivery_key: str, recipient: str, now: datetime, stale_after_s: float
    ) -> DeliveryClaim:
        """Mark this (message, recipient) in flight unless it was delivered or is in flight.

        Lets an agent retry after a partial upstream failure without a second copy going to
        the recipients that already got one. A claim older than `stale_after_s` (a process
        died mid-send) may be taken again.
        """

    async def complete_delivery(self, delivery_key: str, recipient: str, upstream_id: str) -> None:
        ...

    async def release_delivery(self, delivery_key: str, recipient: str) -> None:
        """Undo a claim after the upstream refused, so a retry sends again."""


class AuditLog(Protocol):
    """The hash-chained record of operators' and the gateway's own actions."""

    async def append_audit(self, event: AuditEvent) -> AuditEvent:
        """Append to the hash chain; returns the event with id, prev_hash and hash set."""

    async def audit_events(self) -> list[AuditEvent]: ...

    async def query_audit(self, query: AuditQuery) -> list[AuditEvent]:
        """One page, newest first: what a reader of a long log is shown (`audit_events`
        reads everything)."""

    async def audit_actions(self) -> list[str]:
        """The distinct actions logged, sorted (a filter's choices)."""

    async def verify_audit(self) -> AuditProblem | None:
        """None when every entry's hash and link to its predecessor verify."""

    async def check_audit(self) -> AuditChain:
        """`verify_audit` with what a reader is told besides: entries verified, and what
        the chain starts from."""

    async def prune_audit(self, before: datetime) -> int:
        """Delete the oldest audit entries, up to (not including) the first at or after
        `before`, and anchor the chain at the last deleted hash so it still verifies.
        Only a prefix is removed: the chain never gets a hole. Returns how many."""


class Privacy(Protocol):
    """A data subject's export and erasure, and the purge of a whole workspace."""

    async def use_erasure_key(self, key: bytes) -> None:
        """Set the key for `erased_address`. From then on `suppressed`,
        `add_suppressions` and `remove_suppressions` treat an address's erased row as
        that address's own, so every caller honors an erased person's opt-out unchanged."""

    async def personal_data(self, key: str, mailbox: str = "") -> PersonalData:
        """Every row about `key` (email rows match case-insensitively, as senders and
        recipients are recorded as written), plus audit entries whose subject names it;
        suppression entries also by its `mailbox` key (any spelling of the mailbox)."""

    async def erase_personal_data(
        self, key: str, now: datetime, actor: str, mailbox: str = ""
    ) -> dict[str, int]:
        """In one transaction: delete `key`'s blocks, decisions, consents, location,
        contacts, notice and delivery rows, and replace its suppression rows (those of
        `mailbox` too) by one `erased_address` row (source ERASED_SOURCE, mailbox the keyed
        hash of `mailbox`) when it had any. Audit entries are never rewritten. Returns rows
        removed per table. Needs `use_erasure_key` first (ValueError)."""

    async def purge(self, event: AuditEvent) -> AuditEvent:
        """Delete every row of every table and the audit anchor, then append `event` as
        the first entry of a new chain; returns it as stored."""


class Store(
    StoreLifecycle,
    DataSealing,
    Resealing,
    SuppressionList,
    InboundMessages,
    SharedSettings,
    LoginCounters,
    AgentKeyRegistry,
    PeopleDirectory,
    ScimGroups,
    SessionStore,
    OneTimeMarks,
    ConsentRegistry,
    KnownLocations,
    ContactLedger,
    BlockLog,
    DecisionLog,
    DeliveryLedger,
    AuditLog,
    Privacy,
    Protocol,
):
    """Every concern at once: what a backend implements and what `open_store` returns."""
