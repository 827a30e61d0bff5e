"""A data subject's export and erasure, and a workspace purge, in SQLite; which rows are a
person's and which tables each touches are erasure.py's rules."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

from gateway.model import AuditEvent, Suppression
from gateway.store.base import PersonalData
from gateway.store.core import SUPPRESSION_COLUMNS, SuppressionRow, suppression_values
from gateway.store.erasure import (
    PURGED_TABLES,
    ErasureKey,
    RowReader,
    Statement,
    erase_statements,
    export_statements,
    exported,
    purge_survivors,
)
from gateway.store.sealing import DataCipher
from gateway.store.sqlite.audit import insert_audit
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import QMarks, from_text, to_text, transaction
from gateway.store.sqlite.suppressions import UPSERT_SUPPRESSION


class SqlitePrivacy(SqliteConnection, ErasureKey):
    _stored_time = staticmethod(from_text)

    async def personal_data(self, key: str, mailbox: str = "") -> PersonalData:
        statements = export_statements(
            key, self._person_aliases(key, mailbox), QMarks, self._cipher, mailbox
        )
        cipher, read = self._cipher, self._suppression_reader(self._lookup_forms([key, mailbox]))
        rows = await self._run(lambda conn: _select_personal_data(conn, statements))
        return exported(key, rows, from_text, cipher, read)

    async def erase_personal_data(
        self, key: str, now: datetime, actor: str, mailbox: str = ""
    ) -> dict[str, int]:
        erased = self._erased_values(self._erasure_row(key, now, actor, mailbox))
        statements = erase_statements(key, QMarks, self._cipher, mailbox)
        return await self._run(lambda conn: _erase_personal_data(conn, statements, erased))

    async def purge(self, event: AuditEvent) -> AuditEvent:
        key = self._purge_key()
        read, values, cipher = self._suppression_reader({}), self._erased_values, self._cipher
        return await self._run(lambda conn: _purge(conn, event, key, read, values, cipher))

    def _erased_values(self, row: Suppression) -> SuppressionRow:
        return suppression_values(row, to_text(row.time), self._cipher)



def _select_personal_data(
    conn: sqlite3.Connection, statements: dict[str, Statement]
) -> dict[str, list[Any]]:
    with transaction(conn, write=False):
        return {
            field: conn.execute(sql, values).fetchall()
            for field, (sql, values) in statements.items()
        }


def _erase_personal_data(
    conn: sqlite3.Connection, statements: dict[str, Statement], erased: SuppressionRow
) -> dict[str, int]:
    """One write transaction: a crash leaves either the person's data with their opt-out,
    or the erased row alone, never neither."""
    with transaction(conn, write=True):
        counts = {
            table: conn.execute(sql, values).rowcount
            for table, (sql, values) in statements.items()
        }
        if counts["suppressions"]:
            conn.execute(UPSERT_SUPPRESSION, erased)
    return counts


def _purge(
    conn: sqlite3.Connection,
    event: AuditEvent,
    erasure_key: bytes,
    read: RowReader,
    values: Callable[[Suppression], SuppressionRow],
    cipher: DataCipher,
) -> AuditEvent:
    """Everything goes in one transaction with the purge entry, so the log never shows a
    purge that did not happen or misses one that did. The suppressions are opened: an
    erased row's hashes are of the keys themselves."""
    with transaction(conn, write=True):
        kept = purge_survivors(
            map(read, conn.execute(f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions")),
            erasure_key,
            event,
        )
        for table in PURGED_TABLES:
            conn.execute(f"DELETE FROM {table}")
        conn.executemany(UPSERT_SUPPRESSION, [values(row) for row in kept])
        return insert_audit(conn, event, cipher)
