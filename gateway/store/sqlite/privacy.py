"""A data subject's export and erasure, and a workspace purge, in SQLite; which rows are a
person's and which tables each touches are erasure.py's rules."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from gateway.model import AuditEvent, Suppression
from gateway.store.base import PersonalData
from gateway.store.erasure import (
    PURGED_TABLES,
    ErasureKey,
    Statement,
    erase_statements,
    export_statements,
    exported,
    purge_survivors,
)
from gateway.store.sqlite.audit import insert_audit
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import QMarks, from_text, to_text, transaction
from gateway.store.sqlite.suppressions import UPSERT_SUPPRESSION


class SqlitePrivacy(SqliteConnection, ErasureKey):
    async def personal_data(self, key: str, mailbox: str = "") -> PersonalData:
        statements = export_statements(key, self._person_aliases(key, mailbox), QMarks, mailbox)
        return await self._run(lambda conn: _select_personal_data(conn, key, statements))

    async def erase_personal_data(
        self, key: str, now: datetime, actor: str, mailbox: str = ""
    ) -> dict[str, int]:
        erased = self._erasure_row(key, now, actor, mailbox)
        statements = erase_statements(key, QMarks, mailbox)
        return await self._run(lambda conn: _erase_personal_data(conn, statements, erased))

    async def purge(self, event: AuditEvent) -> AuditEvent:
        key = self._purge_key()
        return await self._run(lambda conn: _purge(conn, event, key))



def _select_personal_data(
    conn: sqlite3.Connection, key: str, statements: dict[str, Statement]
) -> PersonalData:
    with transaction(conn, write=False):
        rows = {
            field: conn.execute(sql, values).fetchall()
            for field, (sql, values) in statements.items()
        }
    return exported(key, rows, from_text)


def _erase_personal_data(
    conn: sqlite3.Connection, statements: dict[str, Statement], erased: Suppression
) -> dict[str, int]:
    """One write transaction: a crash leaves either the person's data with their opt-out,
    or the erased row alone, never neither."""
    with transaction(conn, write=True):
        counts = {
            table: conn.execute(sql, values).rowcount
            for table, (sql, values) in statements.items()
        }
        if counts["suppressions"]:
            conn.execute(UPSERT_SUPPRESSION, _suppression_values(erased))
    return counts


def _purge(conn: sqlite3.Connection, event: AuditEvent, erasure_key: bytes) -> AuditEvent:
    """Everything goes in one transaction with the purge entry, so the log never shows a
    purge that did not happen or misses one that did."""
    with transaction(conn, write=True):
        kept = purge_survivors(
            conn.execute("SELECT DISTINCT address, mailbox FROM suppressions").fetchall(),
            erasure_key,
            event,
        )
        for table in PURGED_TABLES:
            conn.execute(f"DELETE FROM {table}")
        conn.executemany(UPSERT_SUPPRESSION, [_suppression_values(row) for row in kept])
        return insert_audit(conn, event)


def _suppression_values(row: Suppression) -> tuple[str, str, str, str, str, str]:
    return (row.address, row.source, row.reason, row.actor, to_text(row.time), row.mailbox)
