"""The suppression list in PostgreSQL: one row per (address, source), found by its address or
its mailbox, and erased rows that answer for their addresses (see gateway/store/erasure.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from functools import partial
from operator import attrgetter
from typing import Any

import asyncpg

from gateway.model import AuditEvent, Suppression
from gateway.store.base import SuppressionQuery
from gateway.store.core import (
    MAILBOX_RULES_SETTING,
    SUPPRESSION_COLUMNS,
    in_address_order,
    registry_page,
    suppression_page_filter,
    suppression_values,
    unfolded_addresses,
    unfolded_query,
    utc,
)
from gateway.store.erasure import ERASED_RANGE, ErasureKey, SuppressionCursor, owners
from gateway.store.postgres.audit import insert_audit
from gateway.store.postgres.connection import (
    PostgresConnection,
    affected,
    fetch_page,
    read_time,
)

# Above this many entries an import is staged with COPY (far faster than parameters);
# below it, the batch travels as arrays in the statement itself, with no temp table.
_COPY_THRESHOLD = 5_000

# A bulk import may legitimately run far longer than any single decision's query.
_BULK_TIMEOUT_S = 3_600.0


# address and mailbox are stored forms (blind indexes); plain and mailbox_plain the keys in
# clear while encryption is on (NULL otherwise), the form of rows written before it.
_BATCH_COLUMNS = (
    "n", "address", "source", "reason", "actor", "created_at", "alias", "mailbox",
    "mailbox_alias", "address_sealed", "plain", "mailbox_plain", "mailbox_sealed", "is_email",
)
_BATCH_TABLE = "suppression_batch"
_BATCH_ARRAYS = (
    "unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],"
    " $6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],"
    " $12::text[], $13::text[], $14::boolean[]) AS b(" + ", ".join(_BATCH_COLUMNS) + ")"
)

# Which of the keys in $1 name a row's address or mailbox: one probe of the primary key
# (it leads with address) and one of the mailbox index per key, so a lookup costs the same
# with ten million rows as with ten.
SUPPRESSED_QUERY = (
    "SELECT q.address FROM unnest($1::text[]) AS q(address)"
    " WHERE EXISTS (SELECT 1 FROM suppressions s WHERE s.address = q.address)"
    " OR EXISTS (SELECT 1 FROM suppressions s WHERE s.mailbox = q.address AND s.mailbox <> '')"
)

# One statement over a batch relation ({batch}: the staged temp table or the arrays), so
# the count of new addresses and the upsert see one snapshot. An address is known when a
# row names it, its mailbox, their erased hashes or (rows written before encryption) their
# forms in clear (by address or by mailbox). DISTINCT ON
# keeps each (address, source)'s last entry, as applying the batch in order would, and
# inserts in key order, so two concurrent imports lock rows in the same order and cannot
# deadlock.
_UPSERT_BATCH = """
WITH batch AS MATERIALIZED (SELECT * FROM {batch}),
known AS (
    SELECT count(DISTINCT b.address) AS n FROM batch b
    WHERE EXISTS (SELECT 1 FROM suppressions s WHERE s.address = b.address)
       OR EXISTS (SELECT 1 FROM suppressions s WHERE s.address = b.alias)
       OR EXISTS (SELECT 1 FROM suppressions s WHERE s.address = NULLIF(b.mailbox, ''))
       OR EXISTS (SELECT 1 FROM suppressions s WHERE s.address = b.mailbox_alias)
       OR EXISTS (SELECT 1 FROM suppressions s WHERE s.mailbox = b.mailbox AND s.mailbox <> '')
       OR EXISTS (SELECT 1 FROM suppressions s
                  WHERE s.mailbox = b.mailbox_alias AND s.mailbox <> '')
       OR EXISTS (SELECT 1 FROM suppressions s WHERE s.mailbox = b.address AND s.mailbox <> '')
       OR EXISTS (SELECT 1 FROM suppressions s WHERE s.mailbox = b.alias AND s.mailbox <> '')
       OR EXISTS (SELECT 1 FROM suppressions s WHERE s.address = b.plain)
       OR EXISTS (SELECT 1 FROM suppressions s WHERE s.address = b.mailbox_plain)
       OR EXISTS (SELECT 1 FROM suppressions s WHERE s.mailbox = b.plain AND s.mailbox <> '')
       OR EXISTS (SELECT 1 FROM suppressions s
                  WHERE s.mailbox = b.mailbox_plain AND s.mailbox <> '')
),
upserted AS (
    INSERT INTO suppressions (address, source, reason, actor, created_at, mailbox,
                              address_sealed, mailbox_sealed, is_email)
    SELECT DISTINCT ON (address, source)
        address, source, reason, actor, created_at, mailbox, address_sealed, mailbox_sealed,
        is_email
    FROM batch ORDER BY address, source, n DESC
    ON CONFLICT (address, source) DO UPDATE SET
        reason = excluded.reason,
        actor = excluded.actor,
        created_at = excluded.created_at,
        mailbox = excluded.mailbox,
        address_sealed = excluded.address_sealed,
        mailbox_sealed = excluded.mailbox_sealed,
        is_email = excluded.is_email
)
SELECT (SELECT count(DISTINCT address) FROM batch) - (SELECT n FROM known)
"""


class PostgresSuppressions(PostgresConnection, ErasureKey):
    _stored_time = staticmethod(read_time)

    async def suppressed(self, addresses: Iterable[str]) -> frozenset[str]:
        lookup = self._suppression_lookup(addresses)
        async with self._connection() as conn:
            return frozenset(await _suppressed_keys(conn, lookup))

    async def add_suppressions(self, entries: Sequence[Suppression]) -> int:
        """One statement in one transaction, whatever the size: an import either lands
        whole or not at all. Large batches are staged with COPY into a temp table."""
        if not entries:
            return 0
        alias_of = {key: alias for alias, key in self._erased_aliases(
            dict.fromkeys(k for e in entries for k in (e.address, e.mailbox) if k)).items()}
        rows = self._batch_rows(entries, alias_of)
        async with self._transaction() as conn:
            if len(rows) < _COPY_THRESHOLD:
                columns = [list(column) for column in zip(*rows, strict=True)]
                return await conn.fetchval(_UPSERT_BATCH.format(batch=_BATCH_ARRAYS), *columns)
            return await _upsert_staged(conn, rows)

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
        """Staged with COPY and upserted in one statement, with the audit entry in the same
        transaction. Erased aliases are hashed only when the table holds an erased row:
        hashing a million addresses takes seconds."""
        at = utc(time)
        mailbox_of = mailboxes or {}
        async with self._transaction() as conn:
            has_erased = self._erasure_key is not None and await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM suppressions WHERE address >= $1 AND address < $2)",
                *ERASED_RANGE,
            )
            alias_of = (
                {k: alias for alias, k in self._erased_aliases(dict.fromkeys(
                    k for a in addresses for k in (a, mailbox_of.get(a)) if k)).items()}
                if has_erased
                else {}
            )
            rows = self._batch_rows(
                [Suppression(a, source, reason, at, actor, mailbox_of.get(a, ""))
                 for a in addresses],
                alias_of,
            )
            new = await _upsert_staged(conn, rows) if rows else 0
            if progress is not None:
                progress(len(rows))
            await insert_audit(conn, audit(new), self._cipher)
        return new

    async def remove_suppressions(
        self,
        addresses: Iterable[str],
        audit: Callable[[Sequence[Suppression]], AuditEvent] | None = None,
    ) -> int:
        """Every row naming a key as address or mailbox goes, whatever its source, an erased
        row too; counts addresses, not rows. Deleted and audited in one transaction."""
        lookup = self._suppression_lookup(addresses)
        read = self._suppression_reader(lookup)
        async with self._transaction() as conn:
            existed = len(await _suppressed_keys(conn, lookup))
            rows = await conn.fetch(
                f"DELETE FROM suppressions WHERE address = ANY($1::text[])"
                f" OR (mailbox = ANY($1::text[]) AND mailbox <> '')"
                f" RETURNING {SUPPRESSION_COLUMNS}",
                list(lookup),
            )
            if audit is not None:
                await insert_audit(conn, audit(in_address_order(map(read, rows))), self._cipher)
        return existed

    async def update_mailboxes(self, mailbox_of: Callable[[str], str], version: str) -> int:
        """One transaction; replicas starting together queue on the settings row."""
        self._mailbox_rule = mailbox_of
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO settings (name, value) VALUES ($1, '') ON CONFLICT (name) DO NOTHING",
                MAILBOX_RULES_SETTING,
            )
            recorded = await conn.fetchval(
                "SELECT value FROM settings WHERE name = $1 FOR UPDATE", MAILBOX_RULES_SETTING
            )
            folded = unfolded_addresses(
                await conn.fetch(unfolded_query(recorded != version)), mailbox_of, self._cipher
            )
            mailboxes = list(zip(*folded.mailboxes.values(), strict=True)) or [(), ()]
            status = await conn.execute(
                "UPDATE suppressions SET mailbox = c.mailbox, mailbox_sealed = c.sealed"
                " FROM unnest($1::text[], $2::text[], $3::text[]) AS c(address, mailbox, sealed)"
                " WHERE suppressions.address = c.address",
                list(folded.mailboxes), list(mailboxes[0]), list(mailboxes[1]),
            )
            await conn.execute(
                "UPDATE suppressions SET is_email = false WHERE address = ANY($1::text[])",
                folded.not_emails,
            )
            await conn.execute(
                "UPDATE settings SET value = $2 WHERE name = $1", MAILBOX_RULES_SETTING, version
            )
        return affected(status)

    async def list_suppressions(self) -> list[Suppression]:
        """In address order of the opened addresses (the stored ones are blind indexes)."""
        async with self._connection() as conn:
            rows = await conn.fetch(f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions")
        return in_address_order(map(self._suppression_reader({}), rows))

    async def suppression_page(self, query: SuppressionQuery) -> list[Suppression]:
        """Pages follow the stored key (a blind index), the cursor being the stored form of
        the previous page's last address. A search cannot use the column, which holds blind
        indexes: it walks the list from the cursor and opens each row until the page is
        full, so a search for a rare text may open the whole list."""
        read = self._suppression_reader({})
        fill = registry_page(query.limit, query.text, attrgetter("address"))
        async with self._transaction(snapshot=True) as conn:
            seek = await _cursor_seek(conn, self._suppression_cursor(query.after))
            while True:
                rows = await fetch_page(
                    conn,
                    f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions",
                    partial(suppression_page_filter, seek),
                    "address, source",
                    fill.batch,
                )
                if fill.full_after(len(rows), map(read, rows)):
                    return fill.page
                seek = (rows[-1][0], rows[-1][1])

    async def count_suppressed(self) -> int:
        async with self._connection() as conn:
            # DISTINCT in a subquery reads the primary key's index in order (an index-only
            # scan); count(DISTINCT) sorts every row first: 2.1 s against 2.8 s at 10 M.
            return await conn.fetchval(
                "SELECT count(*) FROM (SELECT DISTINCT address FROM suppressions) AS addresses"
            )

    async def suppression_entries(self, addresses: Iterable[str]) -> list[Suppression]:
        lookup = self._lookup_forms(dict.fromkeys(addresses))
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions"
                " WHERE address = ANY($1::text[]) OR (mailbox = ANY($1::text[]) AND mailbox <> '')",
                list(lookup),
            )
        return in_address_order(map(self._suppression_reader(lookup), rows))

    async def remove_suppressions_from_source(
        self,
        addresses: Iterable[str],
        source: str,
        *,
        recorded_before: datetime | None = None,
        audit: Callable[[Sequence[Suppression]], AuditEvent] | None = None,
    ) -> int:
        """One DELETE: a row another transaction rewrote meanwhile is judged by its new time
        (READ COMMITTED re-checks the condition on the row it waited for). The rows it
        removed are audited in its transaction."""
        lookup = self._lookup_forms(addresses)
        async with self._transaction() as conn:
            rows = await conn.fetch(
                "DELETE FROM suppressions WHERE address = ANY($1::text[]) AND source = $2"
                " AND ($3::timestamptz IS NULL OR created_at < $3)"
                f" RETURNING {SUPPRESSION_COLUMNS}",
                list(lookup),
                source,
                None if recorded_before is None else utc(recorded_before),
            )
            if audit is not None and rows:
                read = self._suppression_reader(lookup)
                await insert_audit(conn, audit(in_address_order(map(read, rows))), self._cipher)
        return len(rows)

    async def remove_suppressions_with_source_prefix(
        self, addresses: Iterable[str], prefix: str
    ) -> int:
        async with self._connection() as conn:
            status = await conn.execute(
                "DELETE FROM suppressions"
                " WHERE address = ANY($1::text[]) AND starts_with(source, $2)",
                list(self._lookup_forms(addresses)),
                prefix,
            )
        return affected(status)

    def _batch_rows(
        self, entries: Sequence[Suppression], alias_of: Mapping[str, str]
    ) -> list[tuple[Any, ...]]:
        """_BATCH_COLUMNS' values of `entries`, in order (the last of a key wins)."""
        cipher = self._cipher
        rows = []
        for n, e in enumerate(entries):
            address, source, reason, actor, at, mailbox, sealed, mailbox_sealed, is_email = (
                suppression_values(e, utc(e.time), cipher)
            )
            rows.append((
                n, address, source, reason, actor, at, alias_of.get(e.address), mailbox,
                alias_of.get(e.mailbox), sealed, e.address if cipher.enabled else None,
                (e.mailbox or None) if cipher.enabled else None, mailbox_sealed, is_email,
            ))
        return rows



async def _suppressed_keys(conn: asyncpg.Connection, lookup: Mapping[str, str]) -> set[str]:
    """The callers' keys with a row of their own or an erased row (`lookup` maps each stored
    form to its key). One index probe per stored form on the primary key."""
    rows = await conn.fetch(SUPPRESSED_QUERY, list(lookup))
    return owners((address for (address,) in rows), lookup)


async def _cursor_seek(
    conn: asyncpg.Connection, after: SuppressionCursor
) -> tuple[str, str] | None:
    """The stored (address, source) to seek from: the form a row of the cursor's entry has,
    else its blind index (the entry was removed meanwhile: the page goes on from there)."""
    if after is None:
        return None
    forms, source = after
    present = await conn.fetchval(
        "SELECT address FROM suppressions WHERE address = ANY($1::text[]) AND source = $2"
        " ORDER BY address LIMIT 1",
        forms,
        source,
    )
    return (present or forms[0]), source


async def _upsert_staged(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> int:
    """COPY the batch into a temp table (dropped at commit), then one upsert from it, with
    memory enough to sort a million rows without spilling to disk."""
    await conn.execute("SET LOCAL work_mem = '256MB'")
    await conn.execute(
        f"CREATE TEMP TABLE {_BATCH_TABLE} (n bigint, address text COLLATE \"C\","
        " source text COLLATE \"C\", reason text, actor text, created_at timestamptz,"
        " alias text COLLATE \"C\", mailbox text COLLATE \"C\","
        " mailbox_alias text COLLATE \"C\", address_sealed text,"
        " plain text COLLATE \"C\", mailbox_plain text COLLATE \"C\", mailbox_sealed text,"
        " is_email boolean) ON COMMIT DROP"
    )
    await conn.copy_records_to_table(
        _BATCH_TABLE, records=rows, columns=_BATCH_COLUMNS, timeout=_BULK_TIMEOUT_S
    )
    await conn.execute(f"ANALYZE {_BATCH_TABLE}")
    return await conn.fetchval(
        _UPSERT_BATCH.format(batch=_BATCH_TABLE), timeout=_BULK_TIMEOUT_S
    )

