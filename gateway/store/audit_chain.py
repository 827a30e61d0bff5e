"""Hash chaining for the audit log, shared by every store backend.

Each entry's hash covers its content and the previous entry's hash, so changing, removing
or reordering any entry breaks verification from that entry on. A backend stores and reads
the rows; what an entry links to, what it hashes and what counts as a break are decided
here, once.

With encryption on, an entry's hash is keyed (`keyed_entry_hash`): its subject and details
are sealed, and its time, actor, action and previous hash sit in clear beside it, so a hash
anyone can compute would let whoever holds a copy of the store confirm a guessed subject
(a number is 10^4 guesses from its exchange). Without encryption the hash stays SHA-256 over
the entry in clear (`entry_hash`), as every entry written before keyed hashes has it; the
hash's own prefix tells verification which rule made it, so a chain mixing both verifies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from gateway.model import AuditEvent
from gateway.store.base import AuditChain, AuditProblem
from gateway.store.core import ReadTime, utc
from gateway.store.sealing import DataCipher, SealedDataError

GENESIS_HASH = "0" * 64

AUDIT_COLUMNS = "id, time, actor, action, subject, details_json, prev_hash, hash"
"""What an audit read selects, in the order `event_from_row` reads it."""


KEYED_PREFIX = "hmac-sha256:"
"""Starts every keyed hash; an unkeyed one is 64 hex digits."""

KEYED_PURPOSE = "audit.entry"


def _hashed_content(prev_hash: str, event: AuditEvent) -> str:
    return json.dumps(
        {
            "prev": prev_hash,
            "time": event.time.isoformat(),
            "actor": event.actor,
            "action": event.action,
            "subject": event.subject,
            "details": event.details,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )


def entry_hash(prev_hash: str, event: AuditEvent) -> str:
    """The hash of an entry written without encryption: anyone can recompute it."""
    return hashlib.sha256(_hashed_content(prev_hash, event).encode()).hexdigest()


def keyed_entry_hash(prev_hash: str, event: AuditEvent, cipher: DataCipher) -> str:
    """The hash of an entry written with encryption on: the same content, HMAC-SHA256
    under a key derived from the index key (`DataCipher.digest`), which rotating data keys
    leaves as it is, so re-sealing never breaks the chain."""
    return KEYED_PREFIX + cipher.digest(_hashed_content(prev_hash, event), KEYED_PURPOSE)


def _hash_with(prev_hash: str, event: AuditEvent, cipher: DataCipher) -> str:
    """How a new entry is hashed: keyed while encryption is on."""
    if cipher.enabled:
        return keyed_entry_hash(prev_hash, event, cipher)
    return entry_hash(prev_hash, event)


def canonical_json(details: dict[str, object]) -> str:
    """Details as stored: `entry_hash`'s encoding (sorted keys, `str` for anything else)."""
    return json.dumps(details, sort_keys=True, separators=(",", ":"), default=str)


def chain_start(anchor: str | None) -> str:
    """What the first remaining entry links to: the anchor a retention prune left (the
    last pruned entry's hash), else GENESIS (nothing pruned, or not since the last purge)."""
    return anchor or GENESIS_HASH


@dataclass(frozen=True)
class Link:
    """An entry ready to insert: `entry` has prev_hash and hash set, no id yet."""

    entry: AuditEvent
    details_json: str


def link(event: AuditEvent, prev_hash: str | None, cipher: DataCipher) -> Link:
    """`event` as it will read back (UTC time, details through canonical JSON), chained after
    `prev_hash`: the last entry's hash, else the anchor (None: neither, so GENESIS). Hashing
    the stored form is what lets `ChainCheck` recompute the same hash from the row. The
    caller holds the chain's write lock from reading `prev_hash` until the insert commits,
    so the link cannot go stale."""
    details_json = canonical_json(event.details)
    stored = AuditEvent(
        time=utc(event.time),
        actor=event.actor,
        action=event.action,
        subject=event.subject,
        details=json.loads(details_json),
    )
    prev = chain_start(prev_hash)
    return Link(
        replace(stored, prev_hash=prev, hash=_hash_with(prev, stored, cipher)), details_json
    )


def sealed_columns(linked: Link, cipher: DataCipher) -> tuple[str, str]:
    """subject and details_json as stored: sealed (they name the people an entry is about);
    the hash covers them unsealed, so rotating the data key leaves the chain intact."""
    return (
        cipher.seal(linked.entry.subject, "audit.subject"),
        cipher.seal(linked.details_json, "audit.details_json"),
    )


def event_from_row(row: Sequence[Any], read_time: ReadTime, cipher: DataCipher) -> AuditEvent:
    entry_id, time, actor, action, subject, details_json, prev_hash, digest = row
    record = f"audit entry {entry_id}"
    return AuditEvent(
        time=read_time(time),
        actor=actor,
        action=action,
        subject=cipher.open(subject, "audit.subject", record),
        details=cipher.open_json(details_json, "audit.details_json", record),
        id=entry_id,
        prev_hash=prev_hash,
        hash=digest,
    )


ANCHOR_QUERY = "SELECT entry_id, hash, pruned_at FROM audit_anchor WHERE id = 1"
"""The anchor a retention prune left, as `ChainCheck` takes it (no row: none)."""


class ChainCheck:
    """The verification walk, fed the rows (AUDIT_COLUMNS) one at a time in id order, so a
    backend may stream them from a cursor. The caller reads the anchor (ANCHOR_QUERY) and
    the rows in one snapshot, so a prune running meanwhile cannot make intact entries look
    broken."""

    def __init__(
        self, anchor: Sequence[Any] | None, read_time: ReadTime, cipher: DataCipher
    ) -> None:
        self._cipher = cipher
        self._anchor = anchor
        self._expected_prev = chain_start(anchor[1] if anchor else None)
        self._previous_id: int | None = None
        self._read_time = read_time
        self._verified = 0
        self._keyed_seen = bool(anchor) and str(anchor[1]).startswith(KEYED_PREFIX)
        self.problem: AuditProblem | None = None

    def check(self, row: Sequence[Any]) -> AuditProblem | None:
        """The problem with this row, if any; after one, the walk is over."""
        self.problem = self._problem(row)
        if self.problem is None:
            self._verified += 1
        return self.problem

    def result(self) -> AuditChain:
        anchor = self._anchor
        return AuditChain(
            entries=self._verified,
            problem=self.problem,
            anchor_entry_id=anchor[0] if anchor else None,
            pruned_at=self._read_time(anchor[2]) if anchor else None,
        )

    def _problem(self, row: Sequence[Any]) -> AuditProblem | None:
        entry_id, *_, prev_hash, digest = row
        if not self._hash_matches(row):
            return AuditProblem(entry_id, "content does not match its hash")
        keyed = str(digest).startswith(KEYED_PREFIX)
        if self._keyed_seen and not keyed:
            # Once entries are keyed they stay keyed: an unkeyed one after them is an entry
            # rewritten by someone without the key (or a replica of an earlier release
            # writing beside this one, which the upgrade notes rule out).
            return AuditProblem(entry_id, "is not keyed though an earlier entry is")
        self._keyed_seen |= keyed
        if prev_hash != self._expected_prev:
            if self._previous_id is None:
                return AuditProblem(entry_id, "first entry does not start the chain")
            return AuditProblem(entry_id, f"does not follow entry {self._previous_id}")
        self._expected_prev, self._previous_id = digest, entry_id
        return None

    def _hash_matches(self, row: Sequence[Any]) -> bool:
        """A row edited into something unreadable (bad JSON, bad time, ciphertext that does
        not open) is tampered too, and so is a keyed hash where no key is held. The hash's
        prefix picks the rule, so entries written before keyed hashes still verify."""
        try:
            event = event_from_row(row, self._read_time, self._cipher)
        except (ValueError, TypeError, SealedDataError):
            return False
        if not event.hash.startswith(KEYED_PREFIX):
            expected = entry_hash(event.prev_hash, event)
        elif self._cipher.enabled:
            expected = keyed_entry_hash(event.prev_hash, event, self._cipher)
        else:
            return False
        return expected == event.hash
