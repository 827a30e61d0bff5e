"""The consent registry in PostgreSQL: subjects are found by their blind index, and read
back from their sealed copy (gateway/store/sealing.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from operator import attrgetter

import asyncpg

from gateway.model import Channel, Consent, ConsentKind
from gateway.store.base import ConsentKey, ConsentQuery
from gateway.store.core import (
    CONSENT_COLUMNS,
    consent_from_row,
    consent_order,
    consent_page_filter,
    consent_values,
    group_consents,
    registry_page,
    utc,
)
from gateway.store.postgres.connection import (
    PostgresConnection,
    affected,
    fetch_page,
    read_time,
)


class PostgresConsents(PostgresConnection):
    async def add_consents(self, consents: Sequence[Consent]) -> int:
        """An ignored duplicate inserts nothing, so the inserted rows are the new ones."""
        if not consents:
            return 0
        columns = zip(*(consent_values(c, utc, self._cipher) for c in consents), strict=True)
        async with self._connection() as conn:
            status = await conn.execute(
                f"INSERT INTO consents ({CONSENT_COLUMNS})"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[],"
                " $5::timestamptz[], $6::text[], $7::text[], $8::text[])"
                " ON CONFLICT (subject, channel, kind, obtained_at) DO NOTHING",
                *map(list, columns),
            )
        return affected(status)

    async def consents_for(self, subjects: Iterable[str]) -> dict[str, tuple[Consent, ...]]:
        """Sorted once opened (a subject may have rows in both forms until the sealing pass
        has run)."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {CONSENT_COLUMNS} FROM consents WHERE subject = ANY($1::text[])",
                list(self._lookup_forms(dict.fromkeys(subjects))),
            )
        found = [consent_from_row(row, read_time, self._cipher) for row in rows]
        return group_consents(sorted(found, key=consent_order))

    async def consent_page(self, query: ConsentQuery) -> list[Consent]:
        """Pages follow the stored subject (a blind index); a search walks the registry
        from the cursor opening each row, since the column cannot be searched."""
        fill = registry_page(query.limit, query.text, attrgetter("subject"))
        async with self._transaction(snapshot=True) as conn:
            after = await self._cursor_seek(conn, query.after)
            while True:
                rows = await fetch_page(
                    conn,
                    f"SELECT {CONSENT_COLUMNS} FROM consents",
                    partial(consent_page_filter, query, after),
                    "subject, channel, kind, obtained_at",
                    fill.batch,
                )
                opened = (consent_from_row(row, read_time, self._cipher) for row in rows)
                if fill.full_after(len(rows), opened):
                    return fill.page
                subject, channel, kind, obtained_at = tuple(rows[-1])[:4]
                after = (subject, Channel(channel), ConsentKind(kind), obtained_at)

    async def _cursor_seek(
        self, conn: asyncpg.Connection, after: ConsentKey | None
    ) -> ConsentKey | None:
        """The cursor with its subject as stored: the form a row of it has, else its blind
        index (the consent went meanwhile: the page goes on from where it was)."""
        if after is None:
            return None
        subject, channel, kind, obtained_at = after
        forms = list(self._lookup_forms([subject])) or [subject]
        present = await conn.fetchval(
            "SELECT subject FROM consents WHERE subject = ANY($1::text[]) AND channel = $2"
            " AND kind = $3 AND obtained_at = $4 ORDER BY subject LIMIT 1",
            forms, channel.value, kind.value, utc(obtained_at),
        )
        return (present or forms[0]), channel, kind, obtained_at
