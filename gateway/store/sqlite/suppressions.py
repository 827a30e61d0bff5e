"""The suppression list in SQLite: one row per (address, source), found by its address or
its mailbox, and erased rows that answer for their addresses (see gateway/store/erasure.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import partial
from operator import attrgetter, itemgetter

from gateway.model import AuditEvent, Suppression
from gateway.store.base import SuppressionQuery
from gateway.store.core import (
    MAILBOX_RULES_SETTING,
    SUPPRESSION_COLUMNS,
    SuppressionRow,
    in_address_order,
    registry_page,
    suppression_page_filter,
    suppression_values,
    unfolded_addresses,
    unfolded_query,
)
from gateway.store.erasure import (
    ERASED_RANGE,
    ErasureKey,
    RowReader,
    SuppressionCursor,
    owners,
)
from gateway.store.sealing import DataCipher
from gateway.store.sqlite.audit import insert_audit
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import (
    escape_like,
    from_text,
    rows_for_stored_forms,
    select_page,
    to_text,
    transaction,
)

# A bulk import reports progress after each chunk of this many entries.
_IMPORT_CHUNK = 50_000

UPSERT_SUPPRESSION = f"""
INSERT INTO suppressions ({SUPPRESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (address, source) DO UPDATE SET
    reason = excluded.reason,
    actor = excluded.actor,
    created_at = excluded.created_at,
    mailbox = excluded.mailbox,
    address_sealed = excluded.address_sealed,
    mailbox_sealed = excluded.mailbox_sealed,
    is_email = excluded.is_email
"""


# '' is "no mailbox" (every number); saying so lets the partial mailbox index serve a lookup.
_HAS_MAILBOX = " AND mailbox <> ''"


class SqliteSuppressions(SqliteConnection, ErasureKey):
    _stored_time = staticmethod(from_text)

    async def suppressed(self, addresses: Iterable[str]) -> frozenset[str]:
        lookup = self._suppression_lookup(dict.fromkeys(addresses))
        return self._read_on_loop(lambda conn: _select_suppressed(conn, lookup))

    async def add_suppressions(self, entries: Sequence[Suppression]) -> int:
        lookup = self._suppression_lookup(
            dict.fromkeys(k for e in entries for k in (e.address, e.mailbox) if k)
        )
        rows = self._suppression_rows(entries)
        pairs = {e.address: e.mailbox for e in entries}
        return await self._run(lambda conn: _upsert_suppressions(conn, rows, pairs, lookup))

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
        pairs = {address: mailbox_of.get(address, "") for address in addresses}
        rows = self._suppression_rows(
            [Suppression(a, source, reason, time, actor, pairs[a]) for a in addresses]
        )
        has_erased = self._erasure_key is not None and await self._run(_has_erased_rows)
        keys = dict.fromkeys(k for pair in pairs.items() for k in pair if k)
        lookup = self._lookup_forms(keys)
        if has_erased:
            lookup.update(self._erased_aliases(keys))
        return await self._run(
            lambda conn: _import_suppressions(
                conn, rows, pairs, lookup, audit, progress, self._cipher
            )
        )

    async def remove_suppressions(
        self,
        addresses: Iterable[str],
        audit: Callable[[Sequence[Suppression]], AuditEvent] | None = None,
    ) -> int:
        lookup = self._suppression_lookup(dict.fromkeys(addresses))
        read = self._suppression_reader(lookup)
        return await self._run(
            lambda conn: _delete_suppressions(conn, lookup, read, audit, self._cipher)
        )

    async def update_mailboxes(self, mailbox_of: Callable[[str], str], version: str) -> int:
        self._mailbox_rule = mailbox_of
        cipher = self._cipher
        return await self._run(lambda conn: _update_mailboxes(conn, mailbox_of, version, cipher))

    async def list_suppressions(self) -> list[Suppression]:
        """In address order of the opened addresses (the stored ones are blind indexes)."""
        read = self._suppression_reader({})
        return await self._run(lambda conn: _select_all_suppressions(conn, read))

    async def suppression_page(self, query: SuppressionQuery) -> list[Suppression]:
        """In a thread of its own. Pages follow the stored key (a blind index), the cursor
        being the stored form of the previous page's last address. A search cannot use the
        column, which holds blind indexes: it walks the list from the cursor and opens each
        row until the page is full, so a search for a rare text may open the whole list."""
        read = self._suppression_reader({})
        after = self._suppression_cursor(query.after)
        return await self._read_in_thread(
            lambda conn: _select_suppression_page(conn, query, after, read)
        )

    async def count_suppressed(self) -> int:
        """A full scan, so it reads beside the worker rather than on it."""
        return await self._read_in_thread(
            lambda conn: conn.execute(
                "SELECT COUNT(DISTINCT address) FROM suppressions"
            ).fetchone()[0]
        )

    async def suppression_entries(self, addresses: Iterable[str]) -> list[Suppression]:
        lookup = self._lookup_forms(dict.fromkeys(addresses))
        read = self._suppression_reader(lookup)
        return self._read_on_loop(lambda conn: _select_rows_naming(conn, lookup, read))

    async def remove_suppressions_from_source(
        self,
        addresses: Iterable[str],
        source: str,
        *,
        recorded_before: datetime | None = None,
        audit: Callable[[Sequence[Suppression]], AuditEvent] | None = None,
    ) -> int:
        lookup = self._lookup_forms(addresses)
        stored = list(lookup)
        if audit is not None:
            before = None if recorded_before is None else to_text(recorded_before)
            read = self._suppression_reader(lookup)
            return await self._run(
                lambda conn: _delete_audited_from_source(
                    conn, stored, source, before, read, audit, self._cipher
                )
            )
        if recorded_before is not None:
            before = to_text(recorded_before)
            older = [(address, source, before) for address in stored]
            return await self._run(lambda conn: _delete_older_from_source(conn, older))
        keys = [(address, source) for address in stored]
        return await self._run(lambda conn: _delete_suppressions_from_source(conn, keys))

    async def remove_suppressions_with_source_prefix(
        self, addresses: Iterable[str], prefix: str
    ) -> int:
        pattern = escape_like(prefix) + "%"
        keys = [(address, pattern) for address in self._lookup_forms(addresses)]
        return await self._run(lambda conn: _delete_suppressions_by_source_pattern(conn, keys))

    def _suppression_rows(self, entries: Sequence[Suppression]) -> list[SuppressionRow]:
        """Ordered by stored address (stably: a later entry for the same address and source
        still wins), so a large batch walks the primary-key index in order, about twice as
        fast as in arrival order. Each distinct time (a batch usually has one) is formatted
        once."""
        texts = {moment: to_text(moment) for moment in {e.time for e in entries}}
        rows = [suppression_values(e, texts[e.time], self._cipher) for e in entries]
        rows.sort(key=itemgetter(0))
        return rows



def _select_suppressed(conn: sqlite3.Connection, lookup: Mapping[str, str]) -> frozenset[str]:
    with transaction(conn, write=False):
        return frozenset(_suppressed_keys(conn, lookup))


def _suppressed_keys(conn: sqlite3.Connection, lookup: Mapping[str, str]) -> set[str]:
    """The callers' keys with a row of their own or an erased row (`lookup` maps each
    stored form to its key); callers hold a transaction."""
    return owners(_suppressed_among(conn, list(lookup)), lookup)


def _suppressed_among(conn: sqlite3.Connection, addresses: Sequence[str]) -> Iterator[str]:
    """The keys (unique) naming at least one row's address or mailbox, whatever its source;
    callers hold a transaction. The primary key leads with address and the mailbox has its
    own index, so each chunk is two index searches."""
    keys = [address for address in addresses if address]
    for column in ("address", "mailbox"):
        rows = rows_for_stored_forms(
            conn,
            f"SELECT DISTINCT {column} FROM suppressions WHERE {column} IN ({{keys}})"
            f"{_HAS_MAILBOX if column == 'mailbox' else ''}",
            keys,
        )
        yield from (key for (key,) in rows)


def _rows_naming(
    conn: sqlite3.Connection, stored: Sequence[str], read: RowReader
) -> dict[tuple[str, str], Suppression]:
    """The rows whose stored address or mailbox is one of `stored`, each once, by stored
    (address, source), in the order of the opened entries."""
    found: dict[tuple[str, str], Suppression] = {}
    for column in ("address", "mailbox"):
        query = (
            f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE {column} IN ({{keys}})"
            f"{_HAS_MAILBOX if column == 'mailbox' else ''}"
        )
        for row in rows_for_stored_forms(conn, query, stored):
            found[row[0], row[1]] = read(row)
    return dict(sorted(found.items(), key=lambda item: (item[1].address, item[1].source)))


def _select_rows_naming(
    conn: sqlite3.Connection, lookup: Mapping[str, str], read: RowReader
) -> list[Suppression]:
    with transaction(conn, write=False):
        return list(_rows_naming(conn, list(lookup), read).values())


def _upsert_suppressions(
    conn: sqlite3.Connection,
    rows: Sequence[SuppressionRow],
    pairs: Mapping[str, str],
    lookup: Mapping[str, str],
) -> int:
    with transaction(conn, write=True):
        return _upsert_rows(conn, rows, pairs, lookup)


def _has_erased_rows(conn: sqlite3.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM suppressions WHERE address >= ? AND address < ? LIMIT 1", ERASED_RANGE
    ).fetchone()
    return row is not None


def _import_suppressions(
    conn: sqlite3.Connection,
    rows: Sequence[SuppressionRow],
    pairs: Mapping[str, str],
    lookup: Mapping[str, str],
    audit: Callable[[int], AuditEvent],
    progress: Callable[[int], None] | None,
    cipher: DataCipher,
) -> int:
    """One write transaction with the audit entry; the new addresses are counted before
    anything is written, and the chunks only pace the progress reports. Rows are built and
    sorted (index order, about twice as fast to write) before the transaction begins: the
    gateway's own writers wait for it."""
    with transaction(conn, write=True):
        new = _new_addresses(conn, pairs, lookup)
        for start in range(0, len(rows), _IMPORT_CHUNK):
            conn.executemany(UPSERT_SUPPRESSION, rows[start : start + _IMPORT_CHUNK])
            if progress is not None:
                progress(min(start + _IMPORT_CHUNK, len(rows)))
        insert_audit(conn, audit(new), cipher)
    return new


def _upsert_rows(
    conn: sqlite3.Connection,
    rows: Sequence[SuppressionRow],
    pairs: Mapping[str, str],
    lookup: Mapping[str, str],
) -> int:
    """One row per (address, source): a second source adds a row, the same source refreshes
    its own (and its mailbox)."""
    new = _new_addresses(conn, pairs, lookup)
    conn.executemany(UPSERT_SUPPRESSION, rows)
    return new


def _new_addresses(
    conn: sqlite3.Connection, pairs: Mapping[str, str], lookup: Mapping[str, str]
) -> int:
    """The distinct addresses of `pairs` (address -> mailbox) that no row of any source
    named yet, by address or by mailbox, looked up (every stored form of both, `lookup`)
    inside the caller's write transaction before it writes, so the count is exact (repeats
    included) and costs index searches for these rows only, never a scan of the table."""
    found = _suppressed_keys(conn, lookup)
    return sum(1 for a, m in pairs.items() if a not in found and m not in found)


def _delete_suppressions(
    conn: sqlite3.Connection,
    lookup: Mapping[str, str],
    read: RowReader,
    audit: Callable[[Sequence[Suppression]], AuditEvent] | None,
    cipher: DataCipher,
) -> int:
    """Every row naming a key as address or mailbox goes, whatever its source, an erased row
    too (an operator may re-admit an erased person); the count is of addresses (unique), not
    rows. The rows are read, deleted and audited in one write transaction."""
    with transaction(conn, write=True):
        existed = len(_suppressed_keys(conn, lookup))
        removed = _rows_naming(conn, list(lookup), read)
        conn.executemany("DELETE FROM suppressions WHERE address = ? AND source = ?", removed)
        if audit is not None:
            insert_audit(conn, audit(list(removed.values())), cipher)
    return existed


def _update_mailboxes(
    conn: sqlite3.Connection, mailbox_of: Callable[[str], str], version: str, cipher: DataCipher
) -> int:
    """One write transaction; the folding runs in Python, once per distinct address."""
    with transaction(conn, write=True):
        recorded = conn.execute(
            "SELECT value FROM settings WHERE name = ?", (MAILBOX_RULES_SETTING,)
        ).fetchone()
        folded = unfolded_addresses(
            conn.execute(unfolded_query(recorded is None or recorded[0] != version)).fetchall(),
            mailbox_of,
            cipher,
        )
        cursor = conn.executemany(
            "UPDATE suppressions SET mailbox = ?, mailbox_sealed = ? WHERE address = ?",
            [(*mailbox, address) for address, mailbox in folded.mailboxes.items()],
        )
        changed = cursor.rowcount if folded.mailboxes else 0
        conn.executemany(
            "UPDATE suppressions SET is_email = 0 WHERE address = ?",
            [(address,) for address in folded.not_emails],
        )
        conn.execute(
            "INSERT INTO settings (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (MAILBOX_RULES_SETTING, version),
        )
        return changed


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
    read: RowReader,
    audit: Callable[[Sequence[Suppression]], AuditEvent],
    cipher: DataCipher,
) -> int:
    """As `_delete_older_from_source` (or without a time), reading the rows it removes and
    appending `audit(rows)` in the same write transaction when there were any."""
    condition = "address = ? AND source = ?" + ("" if before is None else " AND created_at < ?")
    extra = () if before is None else (before,)
    with transaction(conn, write=True):
        rows = [
            row
            for address in addresses
            for row in conn.execute(
                f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE {condition}",
                (address, source, *extra),
            )
        ]
        conn.executemany(
            "DELETE FROM suppressions WHERE address = ? AND source = ?",
            [(row[0], row[1]) for row in rows],
        )
        if rows:
            insert_audit(conn, audit([read(row) for row in rows]), cipher)
        return len(rows)


def _delete_suppressions_by_source_pattern(
    conn: sqlite3.Connection, keys: Sequence[tuple[str, str]]
) -> int:
    """As `_delete_suppressions_from_source`, for every source matching a LIKE pattern."""
    with transaction(conn, write=True):
        cursor = conn.executemany(
            "DELETE FROM suppressions WHERE address = ? AND source LIKE ? ESCAPE '\\'", keys
        )
        return cursor.rowcount


def _select_all_suppressions(conn: sqlite3.Connection, read: RowReader) -> list[Suppression]:
    rows = conn.execute(f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions").fetchall()
    return in_address_order(map(read, rows))


def _select_suppression_page(
    conn: sqlite3.Connection,
    query: SuppressionQuery,
    after: SuppressionCursor,
    read: RowReader,
) -> list[Suppression]:
    """One page from the cursor; a search reads on in batches until the page is full."""
    with transaction(conn, write=False):
        seek = _cursor_seek(conn, after)
        fill = registry_page(query.limit, query.text, attrgetter("address"))
        while True:
            rows = select_page(
                conn,
                f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions",
                partial(suppression_page_filter, seek),
                "address, source",
                fill.batch,
            )
            if fill.full_after(len(rows), map(read, rows)):
                return fill.page
            seek = (rows[-1][0], rows[-1][1])


def _cursor_seek(conn: sqlite3.Connection, after: SuppressionCursor) -> tuple[str, str] | None:
    """The stored (address, source) to seek from: the form a row of the cursor's entry has,
    else its blind index (the entry was removed meanwhile: the page goes on from where it
    was)."""
    if after is None:
        return None
    forms, source = after
    for form in forms:
        row = conn.execute(
            "SELECT 1 FROM suppressions WHERE address = ? AND source = ?", (form, source)
        ).fetchone()
        if row is not None:
            return form, source
    return forms[0], source
