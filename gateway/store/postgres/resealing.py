"""Re-sealing rows under the active data key in PostgreSQL (gateway/store/resealing.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import asyncpg

from gateway.store.postgres.connection import Numbered, PostgresConnection, affected
from gateway.store.resealing import ResealBatch, SealedTable, Statement, reseal_rows


class PostgresResealing(PostgresConnection):
    async def reseal_batch(
        self, table: SealedTable, after: Sequence[Any] | None, limit: int
    ) -> ResealBatch:
        """Read committed: another writer may change a row between the batch's read and its
        conditional update, which then changes nothing (a mailbox fold rewrites rows still
        in clear). A change that moves its row to its blind key runs in a savepoint: a
        writer that put a row under that key after the change checked for one makes it
        collide. Either way the row is left for the next pass (lookups find both forms
        meanwhile) and counted as skipped, so this pass does not mark itself done."""
        async with self._transaction() as conn:
            params = Numbered()
            rows = await conn.fetch(table.select_batch(params.bind, after, limit), *params.values)
            changed = skipped = 0
            for change in reseal_rows(table, rows, self._cipher):
                savepoint = conn.transaction() if table.moves(change) else contextlib.nullcontext()
                try:
                    async with savepoint:
                        applied = await _apply(conn, table.statements(change))
                except asyncpg.UniqueViolationError:
                    applied = 0
                changed += applied
                if not applied:
                    skipped += 1
        return ResealBatch.of(table, rows, changed, limit, skipped)

    async def settle_resealing(self) -> None:
        """Nothing to do here: dead row versions stay until VACUUM (README, Rotating)."""

    async def count_rows(self, table: SealedTable) -> int:
        async with self._connection() as conn:
            return int(await conn.fetchval(f"SELECT count(*) FROM {table.name}"))


async def _apply(conn: asyncpg.Connection, statements: Sequence[Statement]) -> int:
    """The rows the counted statements touched."""
    changed = 0
    for statement in statements:
        params = Numbered()
        count = affected(await conn.execute(statement.build(params.bind), *params.values))
        changed += count if statement.counted else 0
    return changed
