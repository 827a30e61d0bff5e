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

    async def settle_resealing(self) -> None:
        """Checkpoint and truncate the WAL: with secure_delete on during the pass, the main
        file's old page images are overwritten and the WAL holds no copy of them."""
        await self._run(lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())

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
    """One write transaction: nothing else writes between a row's read and its update. With
    secure_delete, the bytes of the cells it rewrites or deletes are zeroed: they held the
    values in clear, which SQLite would otherwise leave in the file's free space."""
    (secure_delete,) = conn.execute("PRAGMA secure_delete").fetchone()
    conn.execute("PRAGMA secure_delete = ON")
    try:
        with transaction(conn, write=True):
            params = QMarks()
            select = table.select_batch(params.bind, after, limit)
            rows = conn.execute(select, params.values).fetchall()
            changed = 0
            for change in reseal_rows(table, rows, cipher):
                for statement in table.statements(change):
                    params = QMarks()
                    count = conn.execute(statement.build(params.bind), params.values).rowcount
                    changed += count if statement.counted else 0
    finally:
        conn.execute(f"PRAGMA secure_delete = {int(secure_delete)}")
    return ResealBatch.of(table, rows, changed, limit)
