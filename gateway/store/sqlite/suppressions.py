"""The suppression list in SQLite: one row per (address, source), and erased rows that
answer for their addresses (see gateway/store/erasure.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from operator import itemgetter

from gateway.model import AuditEvent, Suppression
from gateway.store.core import SUPPRESSION_COLUMNS, suppression_from_row
from gateway.store.erasure import ERASED_RANGE, ErasureKey, owners
from gateway.store.sqlite.audit import insert_audit
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import escape_like, from_text, rows_for_keys, to_text, transaction

# A bulk import reports progress after each chunk of this many entries.
_IMPORT_CHUNK = 50_000

UPSERT_SUPPRESSION = f"""
INSERT INTO suppressions ({SUPPRESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (address, source) DO UPDATE SET
    reason = excluded.reason,
    actor = excluded.actor,
    created_at = excluded.created_at
"""

SuppressionRow = tuple[str, str, str, str, str]


class SqliteSuppressions(SqliteConnection, ErasureKey):
    async def suppressed(self, addresses: Iterable[str]) -> frozenset[str]:
        unique = list(dict.fromkeys(addresses))
        aliases = self._erased_aliases(unique)
        return self._read_on_loop(lambda conn: _select_suppressed(conn, unique, aliases))

    async def add_suppressions(self, entries: Sequence[Suppression]) -> int:
        aliases = self._erased_aliases(dict.fromkeys(e.address for e in entries))
        return await self._run(lambda conn: _upsert_suppressions(conn, entries, aliases))

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
    ) -> int:
        """Hashing a million addresses for their erased aliases takes seconds, so it is
        skipped when the table holds no erased row."""
        has_erased = self._erasure_key is not None and await self._run(_has_erased_rows)
        aliases = self._erased_aliases(addresses) if has_erased else {}
        fields = (source, reason, actor, to_text(time))
        return await self._run(
            lambda conn: _import_suppressions(conn, addresses, fields, aliases, audit, progress)
        )

    async def remove_suppressions(self, addresses: Iterable[str]) -> int:
        unique = list(dict.fromkeys(addresses))
        aliases = self._erased_aliases(unique)
        return await self._run(lambda conn: _delete_suppressions(conn, unique, aliases))

    async def list_suppressions(self) -> list[Suppression]:
        return await self._run(_select_all_suppressions)

    async def count_suppressed(self) -> int:
        """A full scan, so it reads beside the worker rather than on it."""
        return await self._read_in_thread(
            lambda conn: conn.execute(
                "SELECT COUNT(DISTINCT address) FROM suppressions"
            ).fetchone()[0]
        )

    async def remove_suppressions_from_source(
        self, addresses: Iterable[str], source: str, *, recorded_before: datetime | None = None
    ) -> int:
        if recorded_before is not None:
            before = to_text(recorded_before)
            older = [(address, source, before) for address in addresses]
            return await self._run(lambda conn: _delete_older_from_source(conn, older))
        keys = [(address, source) for address in addresses]
        return await self._run(lambda conn: _delete_suppressions_from_source(conn, keys))

    async def remove_suppressions_with_source_prefix(
        self, addresses: Iterable[str], prefix: str
    ) -> int:
        pattern = escape_like(prefix) + "%"
        keys = [(address, pattern) for address in addresses]
        return await self._run(lambda conn: _delete_suppressions_by_source_pattern(conn, keys))


def _select_suppressed(
    conn: sqlite3.Connection, addresses: Sequence[str], aliases: Mapping[str, str]
) -> frozenset[str]:
    with transaction(conn, write=False):
        return frozenset(_suppressed_keys(conn, addresses, aliases))


def _suppressed_keys(
    conn: sqlite3.Connection, addresses: Sequence[str], aliases: Mapping[str, str]
) -> set[str]:
    """The addresses with a row of their own or an erased row; callers hold a transaction."""
    return owners(_suppressed_among(conn, [*addresses, *aliases]), aliases)


def _suppressed_among(conn: sqlite3.Connection, addresses: Sequence[str]) -> Iterator[str]:
    """The addresses (unique) with at least one row, whatever its source; callers hold a
    transaction. The primary key leads with address, so each chunk is an index search."""
    rows = rows_for_keys(
        conn, "SELECT DISTINCT address FROM suppressions WHERE address IN ({keys})", addresses
    )
    return (address for (address,) in rows)


def _upsert_suppressions(
    conn: sqlite3.Connection, entries: Sequence[Suppression], aliases: Mapping[str, str]
) -> int:
    with transaction(conn, write=True):
        return _upsert_rows(conn, _suppression_rows(entries), aliases)


def _has_erased_rows(conn: sqlite3.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM suppressions WHERE address >= ? AND address < ? LIMIT 1", ERASED_RANGE
    ).fetchone()
    return row is not None


def _import_suppressions(
    conn: sqlite3.Connection,
    addresses: Sequence[str],
    fields: tuple[str, str, str, str],
    aliases: Mapping[str, str],
    audit: Callable[[int], AuditEvent],
    progress: Callable[[int], None] | None,
) -> int:
    """One write transaction with the audit entry; the chunks only pace the progress
    reports. An address repeated in a later chunk is found there as present, so it counts
    once. Rows are built and sorted (index order, about twice as fast to write) before the
    transaction begins: the gateway's own writers wait for it."""
    rows = [(address, *fields) for address in sorted(addresses)]
    hashes = {address: alias for alias, address in aliases.items()}
    new = 0
    with transaction(conn, write=True):
        for start in range(0, len(rows), _IMPORT_CHUNK):
            chunk = rows[start : start + _IMPORT_CHUNK]
            chunk_aliases = {hashes[row[0]]: row[0] for row in chunk if row[0] in hashes}
            new += _upsert_rows(conn, chunk, chunk_aliases)
            if progress is not None:
                progress(start + len(chunk))
        insert_audit(conn, audit(new))
    return new


def _suppression_rows(entries: Sequence[Suppression]) -> list[SuppressionRow]:
    """Ordered by address (stably: a later entry for the same address and source still
    wins), so a large batch walks the primary-key index in order, about twice as fast as in
    arrival order. Each distinct time (a batch usually has one) is formatted once."""
    texts = {moment: to_text(moment) for moment in {e.time for e in entries}}
    rows = [(e.address, e.source, e.reason, e.actor, texts[e.time]) for e in entries]
    rows.sort(key=itemgetter(0))
    return rows


def _upsert_rows(
    conn: sqlite3.Connection, rows: Sequence[SuppressionRow], aliases: Mapping[str, str]
) -> int:
    """One row per (address, source): a second source adds a row, the same source refreshes
    its own. New addresses are the rows' distinct addresses that had no row of any source,
    looked up inside the caller's write transaction, so the count is exact (repeats
    included) and costs index searches for these rows only, never a scan of the table."""
    addresses = list(dict.fromkeys(row[0] for row in rows))
    existing = len(_suppressed_keys(conn, addresses, aliases))
    conn.executemany(UPSERT_SUPPRESSION, rows)
    return len(addresses) - existing


def _delete_suppressions(
    conn: sqlite3.Connection, addresses: Sequence[str], aliases: Mapping[str, str]
) -> int:
    """Every source's row goes, an erased row too (an operator may re-admit an erased
    person); the count is of addresses (unique), not rows, read in the same write
    transaction as the delete."""
    with transaction(conn, write=True):
        existed = len(_suppressed_keys(conn, addresses, aliases))
        conn.executemany(
            "DELETE FROM suppressions WHERE address = ?",
            [(address,) for address in [*addresses, *aliases]],
        )
    return existed


def _delete_suppressions_from_source(
    conn: sqlite3.Connection, keys: Sequence[tuple[str, str]]
) -> int:
    """Rows removed; an address keeps its rows from other sources, so it may stay
    suppressed. A repeated address finds nothing the second time, so it counts once."""
    with transaction(conn, write=True):
        cursor = conn.executemany("DELETE FROM suppressions WHERE address = ? AND source = ?", keys)
        return cursor.rowcount


def _delete_older_from_source(
    conn: sqlite3.Connection, keys: Sequence[tuple[str, str, str]]
) -> int:
    """As `_delete_suppressions_from_source`, for rows written before a time (stored times
    are UTC text with microseconds, so text order is time order)."""
    with transaction(conn, write=True):
        cursor = conn.executemany(
            "DELETE FROM suppressions WHERE address = ? AND source = ? AND created_at < ?", keys
        )
        return cursor.rowcount


def _delete_suppressions_by_source_pattern(
    conn: sqlite3.Connection, keys: Sequence[tuple[str, str]]
) -> int:
    """As `_delete_suppressions_from_source`, for every source matching a LIKE pattern."""
    with transaction(conn, write=True):
        cursor = conn.executemany(
            "DELETE FROM suppressions WHERE address = ? AND source LIKE ? ESCAPE '\\'", keys
        )
        return cursor.rowcount


def _select_all_suppressions(conn: sqlite3.Connection) -> list[Suppression]:
    rows = conn.execute(
        f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions ORDER BY address, source"
    )
    return [suppression_from_row(row, from_text) for row in rows]
