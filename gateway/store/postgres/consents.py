"""The consent registry in PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial

from gateway.model import Consent
from gateway.store.base import ConsentQuery
from gateway.store.core import (
    CONSENT_COLUMNS,
    consent_from_row,
    consent_page_filter,
    consent_values,
    group_consents,
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
        columns = zip(*(consent_values(c, utc) for c in consents), strict=True)
        async with self._connection() as conn:
            status = await conn.execute(
                f"INSERT INTO consents ({CONSENT_COLUMNS})"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[],"
                " $5::timestamptz[], $6::text[], $7::text[])"
                " ON CONFLICT (subject, channel, kind, obtained_at) DO NOTHING",
                *map(list, columns),
            )
        return affected(status)

    async def consents_for(self, subjects: Iterable[str]) -> dict[str, tuple[Consent, ...]]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {CONSENT_COLUMNS} FROM consents WHERE subject = ANY($1::text[])"
                " ORDER BY subject, obtained_at, channel, kind",
                list(dict.fromkeys(subjects)),
            )
        return group_consents(consent_from_row(row, read_time) for row in rows)

    async def consent_page(self, query: ConsentQuery) -> list[Consent]:
        async with self._connection() as conn:
            rows = await fetch_page(
                conn,
                f"SELECT {CONSENT_COLUMNS} FROM consents",
                partial(consent_page_filter, query),
                "subject, channel, kind, obtained_at",
                query.limit,
            )
        return [consent_from_row(row, read_time) for row in rows]
