"""Re-sealing stored rows under the active data key, shared by every store backend.

One pass serves two ends: `keys rotate-data` (values sealed under an older key) and the
sealing of a database written before encryption (plaintext values). A pass walks each
table once in key order, a batch per transaction, so the gateway keeps serving beside it;
each row is updated only if it still holds what was read, so a concurrent write wins. A
pass that stops (a crash, a deploy) starts again and skips what is done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.store.sealing import DataCipher, sealed_key_id, search_folded


def _decision_extras(cipher: DataCipher, plain: Mapping[str, str]) -> dict[str, object]:
    return {
        "recipient_index": cipher.blind(search_folded(plain["recipient"])),
        "recipient_terms": cipher.signature(plain["recipient"]),
        "subject_terms": cipher.signature(plain["subject"]),
        "recipient_lower": "",
        "subject_lower": "",
    }


def _block_extras(cipher: DataCipher, plain: Mapping[str, str]) -> dict[str, object]:
    return {"recipient_index": cipher.blind(search_folded(plain["recipient"]))}


Extras = Callable[[DataCipher, Mapping[str, str]], dict[str, object]]


@dataclass(frozen=True)
class SealedTable:
    """A table's sealed columns, the key a pass walks it by, and what a row written before
    encryption also needs once its values are sealed (blind indexes, signatures)."""

    name: str
    key: tuple[str, ...]
    sealed: tuple[str, ...]
    extras: Extras | None = field(default=None, compare=False)
    contexts: Mapping[str, str] = field(default_factory=dict)
    """A sealed column whose associated data names another column (the value it seals)."""

    def context(self, column: str) -> str:
        return self.contexts.get(column, f"{self.name}.{column}")

    def select_batch(self, bind: Callable[[object], str], after: Sequence[Any] | None,
                     limit: int) -> str:
        """The next `limit` rows after the cursor, as `key..., sealed...`."""
        keys = ", ".join(self.key)
        where = f" WHERE ({keys}) > ({', '.join(bind(v) for v in after)})" if after else ""
        return (f"SELECT {keys}, {', '.join(self.sealed)} FROM {self.name}{where}"
                f" ORDER BY {keys} LIMIT {bind(limit)}")

    def update(self, change: Resealed, bind: Callable[[object], str]) -> str:
        """Applies only while the row still holds what the batch read."""
        sets = ", ".join(f"{column} = {bind(value)}" for column, value in change.new.items())
        held = " AND ".join(
            f"{column} = {bind(value)}"
            for column, value in (*zip(self.key, change.key, strict=True),
                                  *zip(self.sealed, change.old, strict=True))
        )
        return f"UPDATE {self.name} SET {sets} WHERE {held}"


SEALED_TABLES: tuple[SealedTable, ...] = (
    SealedTable("decisions", ("id",), ("recipient", "subject", "evidence_json"),
                _decision_extras),
    SealedTable("blocks", ("id",), ("recipient", "subject", "evidence_json"), _block_extras),
    SealedTable("audit", ("id",), ("subject", "details_json")),
    SealedTable("suppressions", ("address", "source"), ("address_sealed",),
                contexts={"address_sealed": "suppressions.address"}),
    SealedTable("consents", ("subject", "channel", "kind", "obtained_at"),
                ("subject_sealed", "evidence"), contexts={"subject_sealed": "consents.subject"}),
)


def needs_resealing(value: str, cipher: DataCipher) -> bool:
    """Plaintext (a row from before encryption) or sealed under another key; an empty
    value says nothing and stays empty."""
    return value != "" and sealed_key_id(value) != cipher.active_key_id


@dataclass(frozen=True)
class Resealed:
    """One row's new values, and the ones it must still hold for the update to apply."""

    key: tuple[Any, ...]
    old: tuple[str, ...]
    new: dict[str, object]


def reseal_rows(
    table: SealedTable, rows: Sequence[Sequence[Any]], cipher: DataCipher
) -> list[Resealed]:
    """Rows selected as `key..., sealed...`; those needing it, re-sealed. A value that does
    not open raises SealedDataError naming the row: a pass never writes over data it cannot
    read."""
    width = len(table.key)
    changes = []
    for row in rows:
        key, old = tuple(row[:width]), tuple(row[width:])
        if not any(needs_resealing(value, cipher) for value in old):
            continue
        record = f"{table.name} row {key[0]}"
        plain = {
            column: cipher.open(value, table.context(column), record)
            for column, value in zip(table.sealed, old, strict=True)
        }
        new: dict[str, object] = {
            column: cipher.seal(text, table.context(column)) if text else ""
            for column, text in plain.items()
        }
        if table.extras is not None and any(sealed_key_id(v) is None and v for v in old):
            new.update(table.extras(cipher, plain))
        changes.append(Resealed(key, old, new))
    return changes


@dataclass(frozen=True)
class ResealBatch:
    """What one batch did: rows walked, rows re-sealed, and where the next batch starts
    (None: the table is done)."""

    walked: int
    resealed: int
    next_after: tuple[Any, ...] | None

    @classmethod
    def of(
        cls, table: SealedTable, rows: Sequence[Sequence[Any]], resealed: int, limit: int
    ) -> ResealBatch:
        last = tuple(rows[-1][: len(table.key)]) if len(rows) == limit else None
        return cls(len(rows), resealed, last)
