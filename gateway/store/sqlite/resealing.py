"""Re-sealing rows under the active data key in SQLite (gateway/store/resealing.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from gateway.store.resealing import ResealBatch, SealedTable, reseal_rows
from gateway.store.sealing import DataCipher
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import QMarks, transaction


class SqliteResealing(SqliteConnection):
    async def reseal_batch(
        self, table: SealedTable, after: Sequence[Any] | None, limit: int
    ) -> ResealBatch:
        cipher = self._cipher
        return await self._run(lambda conn: _reseal_batch(conn, table, after, limit, cipher))

    async def count_rows(self, table: SealedTable) -> int:
        return await self._read_in_thread(
            lambda conn: conn.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0]
        )


def _reseal_batch(
    conn: sqlite3.Connection,
    table: SealedTable,
    after: Sequence[Any] | None,
    limit: int,
    cipher: DataCipher,
) -> ResealBatch:
    with transaction(conn, write=True):
        params = QMarks()
        rows = conn.execute(table.select_batch(params.bind, after, limit), params.values).fetchall()
        changed = 0
        for change in reseal_rows(table, rows, cipher):
            params = QMarks()
            changed += conn.execute(table.update(change, params.bind), params.values).rowcount
    return ResealBatch.of(table, rows, changed, limit)
