"""Re-sealing stored rows under the active data key, shared by every store backend.

One pass serves two ends: `keys rotate-data` (values sealed under an older key) and the
sealing of a database written before encryption. A row from before encryption holds its
values in clear: the pass seals them, and replaces each lookup column's value by its blind
index (normalised as the column's writers normalise it) with its sealed copy beside it, in
the same conditional update, so after a full pass the raw store holds no lookup value in
clear. A pass walks each table once in key order, a batch per transaction, so the gateway
keeps serving beside it; each row is updated only if it still holds what was read, so a
concurrent write wins. A pass that stops (a crash, a deploy) starts again and skips what is
done.

Where the lookup column is part of the primary key, the row under its blind index may
exist already (written after encryption was turned on, while lookups still found both
forms). The two then record the same fact and become one row: each table's `keep_clear`
says when the converted row replaces the existing one, which otherwise stays and the row
in clear goes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.store.sealing import (
    ERASED_PREFIX,
    DataCipher,
    is_blind_index,
    row_label,
    sealed_key_id,
    search_folded,
)

Bind = Callable[[object], str]


def _decision_extras(cipher: DataCipher, plain: Mapping[str, str]) -> dict[str, object]:
    return {
        "recipient_index": cipher.blind(search_folded(plain["recipient"])),
        "recipient_terms": cipher.recipient_signature(plain["recipient"]),
        "subject_terms": cipher.signature(plain["subject"]),
        "recipient_lower": "",
        "subject_lower": "",
    }


def _block_extras(cipher: DataCipher, plain: Mapping[str, str]) -> dict[str, object]:
    return {"recipient_index": cipher.blind(search_folded(plain["recipient"]))}


Extras = Callable[[DataCipher, Mapping[str, str]], dict[str, object]]

KeepClear = Callable[[Mapping[str, Any], Bind], str]
"""The condition (SQL, on the row already under the blind key) under which the converted row
replaces it, given the values read from the row in clear."""


def _as_written(value: str) -> str:
    return value


@dataclass(frozen=True)
class Lookup:
    """A column looked up by its blind index: `normalise` is what the column's writers do
    to a value before blinding it, and `sealed` the column its value is read back from
    (None where nothing reads it back: contacts, notices and locations are only looked up
    by a value the caller holds)."""

    column: str
    sealed: str | None = None
    normalise: Callable[[str], str] = _as_written


def in_clear(value: str) -> bool:
    """A lookup value written before encryption: not blank, not a blind index, and not an
    erased suppression's keyed hash (which is no one's value and stays as it is)."""
    return value != "" and not is_blind_index(value) and not value.startswith(ERASED_PREFIX)


@dataclass(frozen=True)
class SealedTable:
    """A table's sealed columns, its lookup columns, the key a pass walks it by, and what
    a row written before encryption also needs once its values are sealed (blind indexes,
    signatures)."""

    name: str
    key: tuple[str, ...]
    sealed: tuple[str, ...] = ()
    extras: Extras | None = field(default=None, compare=False)
    contexts: Mapping[str, str] = field(default_factory=dict)
    """A sealed column whose associated data names another column (the value it seals)."""
    lookups: tuple[Lookup, ...] = ()
    compared: tuple[str, ...] = ()
    """Columns `keep_clear` reads."""
    keep_clear: KeepClear | None = field(default=None, compare=False)
    """None: the row already under the blind key always stays."""

    def context(self, column: str) -> str:
        return self.contexts.get(column, f"{self.name}.{column}")

    @property
    def held(self) -> tuple[str, ...]:
        """What a row must still hold for its update to apply: its key, its sealed and its
        lookup columns."""
        return tuple(dict.fromkeys((*self.key, *self.sealed, *(x.column for x in self.lookups))))

    @property
    def columns(self) -> tuple[str, ...]:
        """What a batch reads, in this order."""
        return tuple(dict.fromkeys((*self.held, *self.compared)))

    def select_batch(self, bind: Bind, after: Sequence[Any] | None, limit: int) -> str:
        """The next `limit` rows after the cursor, as `columns`."""
        keys = ", ".join(self.key)
        where = f" WHERE ({keys}) > ({', '.join(bind(v) for v in after)})" if after else ""
        return (f"SELECT {', '.join(self.columns)} FROM {self.name}{where}"
                f" ORDER BY {keys} LIMIT {bind(limit)}")

    def select_row(self, bind: Bind, key: Sequence[Any]) -> str:
        """The row at `key` as `columns` (read again after a concurrent write won it)."""
        return f"SELECT {', '.join(self.columns)} FROM {self.name} WHERE {self._at(key, bind)}"

    def statements(self, change: Resealed) -> list[Statement]:
        """The conditional statements applying `change`, in order. A change of key merges
        with a row already under the new key: that row is deleted where `keep_clear` says
        the converted row replaces it; then the row is converted if no row holds its new
        key, else it goes."""
        if not self.moves(change):
            return [Statement(lambda bind: self._update(change, bind, ""), counted=True)]
        statements = []
        if self.keep_clear is not None:
            keep_clear = self.keep_clear
            statements.append(Statement(lambda bind: (
                f"DELETE FROM {self.name} WHERE {self._at(change.new_key(self), bind)}"
                f" AND {keep_clear(change.read, bind)}"
                f" AND EXISTS (SELECT 1 FROM {self.name} AS other WHERE"
                f" {self._held_by(change, bind, 'other.')})"
            ), counted=False))
        statements.append(Statement(
            lambda bind: self._update(change, bind, f" AND NOT {self._taken(change, bind)}"),
            counted=True,
        ))
        statements.append(Statement(lambda bind: (
            f"DELETE FROM {self.name} WHERE {self._held_by(change, bind)}"
            f" AND {self._taken(change, bind)}"
        ), counted=True))
        return statements

    def moves(self, change: Resealed) -> bool:
        """Whether `change` gives its row another key (a lookup column in the key)."""
        return change.new_key(self) != change.key

    def _taken(self, change: Resealed, bind: Bind) -> str:
        """A row holds the key `change` moves its row to."""
        at = self._at(change.new_key(self), bind, "other.")
        return f"EXISTS (SELECT 1 FROM {self.name} AS other WHERE {at})"

    def _update(self, change: Resealed, bind: Bind, also: str) -> str:
        """Applies only while the row still holds what the batch read."""
        sets = ", ".join(f"{column} = {bind(value)}" for column, value in change.new.items())
        return f"UPDATE {self.name} SET {sets} WHERE {self._held_by(change, bind)}{also}"

    def _held_by(self, change: Resealed, bind: Bind, prefix: str = "") -> str:
        return " AND ".join(f"{prefix}{c} = {bind(change.read[c])}" for c in self.held)

    def _at(self, key: Sequence[Any], bind: Bind, prefix: str = "") -> str:
        return " AND ".join(
            f"{prefix}{c} = {bind(v)}" for c, v in zip(self.key, key, strict=True)
        )


@dataclass(frozen=True)
class Statement:
    """One statement of a change: `build(bind)` is its SQL; `counted` says whether the rows
    it touches count as re-sealed (a merge's delete of the row it replaces does not)."""

    build: Callable[[Bind], str]
    counted: bool


def _newer(column: str) -> KeepClear:
    """The row in clear replaces the one under the blind key when it is the newer by
    `column`."""
    return lambda read, bind: f"{column} < {bind(read[column])}"


def _delivered_or_newer(read: Mapping[str, Any], bind: Bind) -> str:
    """A delivered claim is kept over a pending one (dropping it would let the agent's
    retry send a second copy); of two alike, the later claim."""
    later = f"claimed_at < {bind(read['claimed_at'])}"
    if read["state"] == "done":
        return f"(state = 'pending' OR {later})"
    return f"state = 'pending' AND {later}"


def _always(read: Mapping[str, Any], bind: Bind) -> str:
    return "1 = 1"


SEALED_TABLES: tuple[SealedTable, ...] = (
    SealedTable("decisions", ("id",), ("recipient", "subject", "evidence_json", "reasons_json"),
                _decision_extras),
    SealedTable("blocks", ("id",), ("recipient", "subject", "evidence_json", "reasons_json"),
                _block_extras),
    SealedTable("audit", ("id",), ("subject", "details_json")),
    # The newer entry of an (address, source) stays, as an upsert would have left it.
    SealedTable(
        "suppressions", ("address", "source"), ("address_sealed", "mailbox_sealed", "reason"),
        contexts={"address_sealed": "suppressions.address",
                  "mailbox_sealed": "suppressions.mailbox"},
        lookups=(Lookup("address", "address_sealed"), Lookup("mailbox", "mailbox_sealed")),
        compared=("created_at",), keep_clear=_newer("created_at"),
    ),
    # The same consent recorded twice: the first record stays, as the writers' ON CONFLICT
    # DO NOTHING keeps it, and it is the one in clear (written before encryption).
    SealedTable(
        "consents", ("subject", "channel", "kind", "obtained_at"),
        ("subject_sealed", "evidence", "source"),
        contexts={"subject_sealed": "consents.subject"},
        lookups=(Lookup("subject", "subject_sealed"),), keep_clear=_always,
    ),
    SealedTable("contacts", ("id",), lookups=(Lookup("recipient"),)),
    # The latest notice stays: notice_sent_at answers with it.
    SealedTable("notices", ("recipient",), lookups=(Lookup("recipient"),),
                compared=("sent_at",), keep_clear=_newer("sent_at")),
    # The location under the blind key was set after encryption was on: the later one.
    SealedTable("known_locations", ("number",), ("location",), lookups=(Lookup("number"),)),
    SealedTable(
        "deliveries", ("delivery_key", "recipient"), ("recipient_sealed",),
        contexts={"recipient_sealed": "deliveries.recipient"},
        lookups=(Lookup("recipient", "recipient_sealed", search_folded),),
        compared=("state", "claimed_at"), keep_clear=_delivered_or_newer,
    ),
)


def needs_resealing(value: str, cipher: DataCipher) -> bool:
    """Plaintext (a row from before encryption) or sealed under another key; an empty
    value says nothing and stays empty."""
    return value != "" and sealed_key_id(value) != cipher.active_key_id


@dataclass(frozen=True)
class Resealed:
    """One row's new values, and what it held when read (its key among them)."""

    key: tuple[Any, ...]
    read: Mapping[str, Any]
    new: dict[str, object]

    def new_key(self, table: SealedTable) -> tuple[Any, ...]:
        return tuple(self.new.get(column, self.read[column]) for column in table.key)


def reseal_rows(
    table: SealedTable, rows: Sequence[Sequence[Any]], cipher: DataCipher
) -> list[Resealed]:
    """Rows selected as `table.columns`; those needing it, re-sealed, and their lookup
    values in clear blind-indexed. A value that does not open raises SealedDataError naming
    the row: a pass never writes over data it cannot read."""
    changes = []
    key_is_looked_up = table.key[0] in {x.column for x in table.lookups}
    for row in rows:
        read = dict(zip(table.columns, row, strict=True))
        key = tuple(read[column] for column in table.key)
        clear = {
            x.column: read[x.column]
            for x in table.lookups
            if cipher.enabled and in_clear(read[x.column])
        }
        old = [read[column] for column in table.sealed]
        if not clear and not any(needs_resealing(value, cipher) for value in old):
            continue
        record = f"{table.name} row {row_label(key[0]) if key_is_looked_up else key[0]}"
        plain = {
            column: cipher.open_any(read[column], table.context(column), record)
            for column in table.sealed
        }
        new: dict[str, object] = {
            column: cipher.seal(text, table.context(column)) if text else ""
            for column, text in plain.items()
        }
        if table.extras is not None and any(sealed_key_id(v) is None and v for v in old):
            new.update(table.extras(cipher, plain))
        for lookup in table.lookups:
            value = clear.get(lookup.column)
            if value is None:
                continue
            new[lookup.column] = cipher.blind(lookup.normalise(value))
            if lookup.sealed is not None and not plain[lookup.sealed]:
                new[lookup.sealed] = cipher.seal(value, table.context(lookup.sealed))
        changes.append(Resealed(key, read, new))
    return changes


@dataclass(frozen=True)
class ResealBatch:
    """What one batch did: rows walked, rows re-sealed, rows left for the next pass (a
    concurrent writer won them: the pass is not done), and where the next batch starts
    (None: the table is done)."""

    walked: int
    resealed: int
    next_after: tuple[Any, ...] | None
    skipped: int = 0

    @classmethod
    def of(
        cls,
        table: SealedTable,
        rows: Sequence[Sequence[Any]],
        resealed: int,
        limit: int,
        skipped: int = 0,
    ) -> ResealBatch:
        last = tuple(rows[-1][: len(table.key)]) if len(rows) == limit else None
        return cls(len(rows), resealed, last, skipped)
