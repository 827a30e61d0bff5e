"""Inbound messages acted on, in SQLite."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import to_text, transaction


class SqliteInboundMessages(SqliteConnection):
    async def inbound_seen(self, message_id: str) -> bool:
        return self._read_on_loop(lambda conn: _seen(conn, message_id))

    async def record_inbound(self, message_id: str, received_at: datetime) -> bool:
        at = to_text(received_at)
        return await self._run(lambda conn: _record(conn, message_id, at), batchable=True)


def _seen(conn: sqlite3.Connection, message_id: str) -> bool:
    with transaction(conn, write=False):
        row = conn.execute(
            "SELECT 1 FROM inbound_messages WHERE message_id = ?", (message_id,)
        ).fetchone()
    return row is not None


def _record(conn: sqlite3.Connection, message_id: str, received_at: str) -> bool:
    with transaction(conn, write=True):
        cursor = conn.execute(
            "INSERT INTO inbound_messages (message_id, received_at) VALUES (?, ?)"
            " ON CONFLICT (message_id) DO NOTHING",
            (message_id, received_at),
        )
        return cursor.rowcount == 1
