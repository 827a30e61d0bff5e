"""The suppression list in SQLite: one row per (address, source), found by its address or
its mailbox, and erased rows that answer for their addresses (see gateway/store/erasure.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import partial
from operator import itemgetter

from gateway.model import AuditEvent, Suppression
from gateway.store.base import SuppressionQuery
from gateway.store.core import (
    MAILBOX_RULES_SETTING,
    SUPPRESSION_COLUMNS,
    folded_or_own,
    suppression_from_row,
    suppression_page_filter,
    unfolded_query,
)
from gateway.store.erasure import ERASED_RANGE, ErasureKey, owners
from gateway.store.sqlite.audit import insert_audit
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import (
    escape_like,
    from_text,
    rows_for_keys,
    select_page,
    to_text,
    transaction,
)

# A bulk import reports progress after each chunk of this many entries.
_IMPORT_CHUNK = 50_000

UPSERT_SUPPRESSION = f"""
INSERT INTO suppressions ({SUPPRESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (address, source) DO UPDATE SET
    reason = excluded.reason,
    actor = excluded.actor,
    created_at = excluded.created_at,
    mailbox = excluded.mailbox
"""

# address, source, reason, actor, created_at, mailbox
SuppressionRow = tuple[str, str, str, str, str, str]

# '' is "no mailbox" (every number); saying so lets the partial mailbox index serve a lookup.
_HAS_MAILBOX = " AND mailbox <> ''"


class SqliteSuppressions(SqliteConnection, ErasureKey):
    async def suppressed(self, addresses: Iterable[str]) -> frozenset[str]:
        unique = list(dict.fromkeys(addresses))
        aliases = self._erased_aliases(unique)
        return self._read_on_loop(lambda conn: _select_suppressed(conn, unique, aliases))

    async def add_suppressions(self, entries: Sequence[Suppression]) -> int:
        aliases = self._erased_aliases(
            dict.fromkeys(k for e in entries for k in (e.address, e.mailbox) if k)
        )
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
        mailboxes: Mapping[str, str] | None = None,
    ) -> int:
        """Hashing a million addresses for their erased aliases takes seconds, so it is
        skipped when the table holds no erased row."""
        mailbox_of = mailboxes or {}
        rows = [
            (address, source, reason, actor, to_text(time), mailbox_of.get(address, ""))
            for address in sorted(addresses)
        ]
        has_erased = self._erasure_key is not None and await self._run(_has_erased_rows)
        aliases = (
            self._erased_aliases(k for row in rows for k in (row[0], row[5]) if k)
            if has_erased
            else {}
        )
        return await self._run(
            lambda conn: _import_suppressions(conn, rows, aliases, audit, progress)
        )

    async def remove_suppressions(
        self,
        addresses: Iterable[str],
        audit: Callable[[Sequence[Suppression]], AuditEvent] | None = None,
    ) -> int:
        unique = [address for address in dict.fromkeys(addresses) if address]
        aliases = self._erased_aliases(unique)
        return await self._run(lambda conn: _delete_suppressions(conn, unique, aliases, audit))

    async def update_mailboxes(self, mailbox_of: Callable[[str], str], version: str) -> int:
        return await self._run(lambda conn: _update_mailboxes(conn, mailbox_of, version))

    async def list_suppressions(self) -> list[Suppression]:
        return await self._run(_select_all_suppressions)

    async def suppression_page(self, query: SuppressionQuery) -> list[Suppression]:
        """In a thread of its own: a search for a rare text may walk the whole list."""
        return await self._read_in_thread(lambda conn: _select_suppression_page(conn, query))

    async def count_suppressed(self) -> int:
        """A full scan, so it reads beside the worker rather than on it."""
        return await self._read_in_thread(
            lambda conn: conn.execute(
                "SELECT COUNT(DISTINCT address) FROM suppressions"
            ).fetchone()[0]
        )

    async def suppression_entries(self, addresses: Iterable[str]) -> list[Suppression]:
        keys = list(dict.fromkeys(addresses))
        return self._read_on_loop(lambda conn: _select_rows_naming(conn, keys))

    async def remove_suppressions_from_source(
        self,
        addresses: Iterable[str],
        source: str,
        *,
        recorded_before: datetime | None = None,
        audit: Callable[[Sequence[Suppression]], AuditEvent] | None = None,
    ) -> int:
        if audit is not None:
            before = None if recorded_before is None else to_text(recorded_before)
            unique = list(dict.fromkeys(addresses))
            return await self._run(
                lambda conn: _delete_audited_from_source(conn, unique, source, before, audit)
            )
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
    """The keys (unique) naming at least one row's address or mailbox, whatever its source;
    callers hold a transaction. The primary key leads with address and the mailbox has its
    own index, so each chunk is two index searches."""
    keys = [address for address in addresses if address]
    for column in ("address", "mailbox"):
        rows = rows_for_keys(
            conn,
            f"SELECT DISTINCT {column} FROM suppressions WHERE {column} IN ({{keys}})"
            f"{_HAS_MAILBOX if column == 'mailbox' else ''}",
            keys,
        )
        yield from (key for (key,) in rows)


def _rows_naming(conn: sqlite3.Connection, keys: Sequence[str]) -> list[Suppression]:
    """The rows whose address or mailbox is one of `keys`, each once."""
    found: dict[tuple[str, str], Suppression] = {}
    named = [key for key in keys if key]
    for column in ("address", "mailbox"):
        query = (
            f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE {column} IN ({{keys}})"
            f"{_HAS_MAILBOX if column == 'mailbox' else ''}"
        )
        for row in rows_for_keys(conn, query, named):
            entry = suppression_from_row(row, from_text)
            found[entry.address, entry.source] = entry
    return [found[k] for k in sorted(found)]


def _select_rows_naming(conn: sqlite3.Connection, keys: Sequence[str]) -> list[Suppression]:
    with transaction(conn, write=False):
        return _rows_naming(conn, keys)


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
    rows: Sequence[SuppressionRow],
    aliases: Mapping[str, str],
    audit: Callable[[int], AuditEvent],
    progress: Callable[[int], None] | None,
) -> int:
    """One write transaction with the audit entry; the new addresses are counted before
    anything is written, and the chunks only pace the progress reports. Rows are built and
    sorted (index order, about twice as fast to write) before the transaction begins: the
    gateway's own writers wait for it."""
    with transaction(conn, write=True):
        new = _new_addresses(conn, rows, aliases)
        for start in range(0, len(rows), _IMPORT_CHUNK):
            conn.executemany(UPSERT_SUPPRESSION, rows[start : start + _IMPORT_CHUNK])
            if progress is not None:
                progress(min(start + _IMPORT_CHUNK, len(rows)))
        insert_audit(conn, audit(new))
    return new


def _suppression_rows(entries: Sequence[Suppression]) -> list[SuppressionRow]:
    """Ordered by address (stably: a later entry for the same address and source still
    wins), so a large batch walks the primary-key index in order, about twice as fast as in
    arrival order. Each distinct time (a batch usually has one) is formatted once."""
    texts = {moment: to_text(moment) for moment in {e.time for e in entries}}
    rows = [(e.address, e.source, e.reason, e.actor, texts[e.time], e.mailbox) for e in entries]
    rows.sort(key=itemgetter(0))
    return rows


def _upsert_rows(
    conn: sqlite3.Connection, rows: Sequence[SuppressionRow], aliases: Mapping[str, str]
) -> int:
    """One row per (address, source): a second source adds a row, the same source refreshes
    its own (and its mailbox)."""
    new = _new_addresses(conn, rows, aliases)
    conn.executemany(UPSERT_SUPPRESSION, rows)
    return new


def _new_addresses(
    conn: sqlite3.Connection, rows: Sequence[SuppressionRow], aliases: Mapping[str, str]
) -> int:
    """The rows' distinct addresses that no row of any source named yet, by address or by
    mailbox, looked up inside the caller's write transaction before it writes, so the count
    is exact (repeats included) and costs index searches for these rows only, never a scan
    of the table."""
    mailbox_of = {row[0]: row[5] for row in rows}
    keys = [*mailbox_of, *{m for m in mailbox_of.values() if m}]
    found = _suppressed_keys(conn, keys, aliases)
    return sum(1 for a, m in mailbox_of.items() if a not in found and m not in found)


def _delete_suppressions(
    conn: sqlite3.Connection,
    addresses: Sequence[str],
    aliases: Mapping[str, str],
    audit: Callable[[Sequence[Suppression]], AuditEvent] | None,
) -> int:
    """Every row naming a key as address or mailbox goes, whatever its source, an erased row
    too (an operator may re-admit an erased person); the count is of addresses (unique), not
    rows. The rows are read, deleted and audited in one write transaction."""
    with transaction(conn, write=True):
        existed = len(_suppressed_keys(conn, addresses, aliases))
        removed = _rows_naming(conn, [*addresses, *aliases])
        conn.executemany(
            "DELETE FROM suppressions WHERE address = ? AND source = ?",
            [(entry.address, entry.source) for entry in removed],
        )
        if audit is not None:
            insert_audit(conn, audit(removed))
    return existed


def _update_mailboxes(
    conn: sqlite3.Connection, mailbox_of: Callable[[str], str], version: str
) -> int:
    """One write transaction; the folding runs in Python, once per distinct address (an
    erased row's address is a hash, with no '@')."""
    with transaction(conn, write=True):
        recorded = conn.execute(
            "SELECT value FROM settings WHERE name = ?", (MAILBOX_RULES_SETTING,)
        ).fetchone()
        changes = {
            address: folded
            for address, mailbox in conn.execute(
                unfolded_query(recorded is None or recorded[0] != version)
            ).fetchall()
            if (folded := folded_or_own(mailbox_of, address)) != mailbox
        }
        cursor = conn.executemany(
            "UPDATE suppressions SET mailbox = ? WHERE address = ?",
            [(folded, address) for address, folded in changes.items()],
        )
        conn.execute(
            "INSERT INTO settings (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (MAILBOX_RULES_SETTING, version),
        )
        return cursor.rowcount if changes else 0


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


def _delete_audited_from_source(
    conn: sqlite3.Connection,
    addresses: Sequence[str],
    source: str,
    before: str | None,
    audit: Callable[[Sequence[Suppression]], AuditEvent],
) -> int:
    """As `_delete_older_from_source` (or without a time), reading the rows it removes and
    appending `audit(rows)` in the same write transaction when there were any."""
    condition = "address = ? AND source = ?" + ("" if before is None else " AND created_at < ?")
    extra = () if before is None else (before,)
    with transaction(conn, write=True):
        removed = [
            suppression_from_row(row, from_text)
            for address in addresses
            for row in conn.execute(
                f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE {condition}",
                (address, source, *extra),
            )
        ]
        conn.executemany(
            "DELETE FROM suppressions WHERE address = ? AND source = ?",
            [(entry.address, entry.source) for entry in removed],
        )
        if removed:
            insert_audit(conn, audit(removed))
        return len(removed)


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


def _select_suppression_page(
    conn: sqlite3.Connection, query: SuppressionQuery
) -> list[Suppression]:
    with transaction(conn, write=False):
        rows = select_page(
            conn,
            f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions",
            partial(suppression_page_filter, query),
            "address, source",
            query.limit,
        )
    return [suppression_from_row(row, from_text) for row in rows]
