"""The consent registry in SQLite."""

from __future__ import annotations

import sqlite3
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
)
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import (
    from_text,
    rows_for_keys,
    select_page,
    to_text,
    transaction,
)


class SqliteConsents(SqliteConnection):
    async def add_consents(self, consents: Sequence[Consent]) -> int:
        return await self._run(lambda conn: _insert_consents(conn, consents))

    async def consents_for(self, subjects: Iterable[str]) -> dict[str, tuple[Consent, ...]]:
        unique = list(dict.fromkeys(subjects))
        return self._read_on_loop(lambda conn: _select_consents(conn, unique))

    async def consent_page(self, query: ConsentQuery) -> list[Consent]:
        """In a thread of its own, as `SqliteSuppressions.suppression_page`."""
        return await self._read_in_thread(lambda conn: _select_consent_page(conn, query))


def _insert_consents(conn: sqlite3.Connection, consents: Sequence[Consent]) -> int:
    """An ignored duplicate changes no row, so the summed row count is exactly the new ones
    (repeats inside the batch included)."""
    rows = [consent_values(consent, to_text) for consent in consents]
    with transaction(conn, write=True):
        cursor = conn.executemany(
            f"INSERT INTO consents ({CONSENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (subject, channel, kind, obtained_at) DO NOTHING",
            rows,
        )
        return cursor.rowcount


def _select_consents(
    conn: sqlite3.Connection, subjects: Sequence[str]
) -> dict[str, tuple[Consent, ...]]:
    with transaction(conn, write=False):
        rows = rows_for_keys(
            conn,
            f"SELECT {CONSENT_COLUMNS} FROM consents WHERE subject IN ({{keys}})"
            " ORDER BY subject, obtained_at, channel, kind",
            subjects,
        )
        return group_consents(consent_from_row(row, from_text) for row in rows)


def _select_consent_page(conn: sqlite3.Connection, query: ConsentQuery) -> list[Consent]:
    with transaction(conn, write=False):
        rows = select_page(
            conn,
            f"SELECT {CONSENT_COLUMNS} FROM consents",
            partial(consent_page_filter, query),
            "subject, channel, kind, obtained_at",
            query.limit,
        )
    return [consent_from_row(row, from_text) for row in rows]
