"""Re-sealing rows under the active data key in PostgreSQL (gateway/store/resealing.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from gateway.store.postgres.connection import Numbered, PostgresConnection, affected
from gateway.store.resealing import ResealBatch, SealedTable, reseal_rows


class PostgresResealing(PostgresConnection):
    async def reseal_batch(
        self, table: SealedTable, after: Sequence[Any] | None, limit: int
    ) -> ResealBatch:
        """Each row's change in a savepoint: a writer that put a row under the blind key
        after the change checked for one makes the conversion collide with it, and the row
        is left for the next pass (lookups find both forms meanwhile)."""
        async with self._transaction() as conn:
            params = Numbered()
            rows = await conn.fetch(table.select_batch(params.bind, after, limit), *params.values)
            changed = 0
            for change in reseal_rows(table, rows, self._cipher):
                counted = 0
                try:
                    async with conn.transaction():
                        for statement in table.statements(change):
                            params = Numbered()
                            sql = statement.build(params.bind)
                            count = affected(await conn.execute(sql, *params.values))
                            counted += count if statement.counted else 0
                except asyncpg.UniqueViolationError:
                    continue
                changed += counted
        return ResealBatch.of(table, rows, changed, limit)

    async def count_rows(self, table: SealedTable) -> int:
        async with self._connection() as conn:
            return int(await conn.fetchval(f"SELECT count(*) FROM {table.name}"))
