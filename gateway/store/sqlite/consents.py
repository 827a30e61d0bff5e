"""The consent registry in SQLite: subjects are found by their blind index, and read back
from their sealed copy (gateway/store/sealing.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from operator import attrgetter
from typing import Any

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
)
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import (
    from_text,
    rows_for_stored_forms,
    select_page,
    to_text,
    transaction,
)

ConsentReader = Callable[[Sequence[Any]], Consent]


class SqliteConsents(SqliteConnection):
    async def add_consents(self, consents: Sequence[Consent]) -> int:
        rows = [consent_values(consent, to_text, self._cipher) for consent in consents]
        return await self._run(lambda conn: _insert_consents(conn, rows))

    async def consents_for(self, subjects: Iterable[str]) -> dict[str, tuple[Consent, ...]]:
        lookup = self._lookup_forms(dict.fromkeys(subjects))
        read = self._consent_reader()
        return self._read_on_loop(lambda conn: _select_consents(conn, lookup, read))

    async def consent_page(self, query: ConsentQuery) -> list[Consent]:
        """In a thread of its own, as `SqliteSuppressions.suppression_page`: pages follow
        the stored subject (a blind index), and a search walks the registry from the cursor
        opening each row, since the column cannot be searched."""
        forms = [] if query.after is None else list(self._lookup_forms([query.after[0]]))
        read = self._consent_reader()
        return await self._read_in_thread(
            lambda conn: _select_consent_page(conn, query, forms, read)
        )

    def _consent_reader(self) -> ConsentReader:
        cipher = self._cipher
        return lambda row: consent_from_row(row, from_text, cipher)


def _insert_consents(conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> int:
    """An ignored duplicate changes no row, so the summed row count is exactly the new ones
    (repeats inside the batch included)."""
    with transaction(conn, write=True):
        cursor = conn.executemany(
            f"INSERT INTO consents ({CONSENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (subject, channel, kind, obtained_at) DO NOTHING",
            rows,
        )
        return cursor.rowcount


def _select_consents(
    conn: sqlite3.Connection, lookup: Mapping[str, str], read: ConsentReader
) -> dict[str, tuple[Consent, ...]]:
    """By subject, each one's consents in time order, sorted once opened (a subject may
    have rows in both forms until the sealing pass has run)."""
    with transaction(conn, write=False):
        rows = list(rows_for_stored_forms(
            conn,
            f"SELECT {CONSENT_COLUMNS} FROM consents WHERE subject IN ({{keys}})",
            list(lookup),
        ))
    return group_consents(sorted(map(read, rows), key=consent_order))


def _select_consent_page(
    conn: sqlite3.Connection,
    query: ConsentQuery,
    forms: Sequence[str],
    read: ConsentReader,
) -> list[Consent]:
    with transaction(conn, write=False):
        after = _cursor_seek(conn, query.after, forms)
        fill = registry_page(query.limit, query.text, attrgetter("subject"))
        while True:
            rows = select_page(
                conn,
                f"SELECT {CONSENT_COLUMNS} FROM consents",
                partial(consent_page_filter, query, after),
                "subject, channel, kind, obtained_at",
                fill.batch,
            )
            if fill.full_after(len(rows), map(read, rows)):
                return fill.page
            subject, channel, kind, obtained_at = rows[-1][:4]
            after = (subject, Channel(channel), ConsentKind(kind), from_text(obtained_at))


def _cursor_seek(
    conn: sqlite3.Connection, after: ConsentKey | None, forms: Sequence[str]
) -> ConsentKey | None:
    """The cursor with its subject as stored: the form a row of it has, else its blind
    index (the consent went meanwhile: the page goes on from where it was)."""
    if after is None:
        return None
    subject, channel, kind, obtained_at = after
    for form in forms:
        row = conn.execute(
            "SELECT 1 FROM consents WHERE subject = ? AND channel = ? AND kind = ?"
            " AND obtained_at = ?",
            (form, channel.value, kind.value, to_text(obtained_at)),
        ).fetchone()
        if row is not None:
            return form, channel, kind, obtained_at
    return (forms[0] if forms else subject), channel, kind, obtained_at
