"""Re-sealing rows under the active data key in PostgreSQL (gateway/store/resealing.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.store.postgres.connection import Numbered, PostgresConnection, affected
from gateway.store.resealing import ResealBatch, SealedTable, reseal_rows


class PostgresResealing(PostgresConnection):
    async def reseal_batch(
        self, table: SealedTable, after: Sequence[Any] | None, limit: int
    ) -> ResealBatch:
        async with self._transaction() as conn:
            params = Numbered()
            rows = await conn.fetch(table.select_batch(params.bind, after, limit), *params.values)
            changed = 0
            for change in reseal_rows(table, rows, self._cipher):
                params = Numbered()
                changed += affected(
                    await conn.execute(table.update(change, params.bind), *params.values)
                )
        return ResealBatch.of(table, rows, changed, limit)

    async def count_rows(self, table: SealedTable) -> int:
        async with self._connection() as conn:
            return int(await conn.fetchval(f"SELECT count(*) FROM {table.name}"))
