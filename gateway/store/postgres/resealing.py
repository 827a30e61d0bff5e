"""Re-sealing rows under the active data key in PostgreSQL (gateway/store/resealing.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from gateway.store.errors import StoreUnavailable
from gateway.store.postgres.connection import Numbered, PostgresConnection, affected
from gateway.store.resealing import (
    ResealBatch,
    Resealed,
    SealedTable,
    Statement,
    reseal_rows,
)

REREADS = 3
"""How often a batch reads again the rows a concurrent write won before it leaves them to
the next pass: another pass (the gateway's own at start-up beside `keys rotate-data`)
wins every row of a batch at once, and reading them again finds them done."""

DEADLOCK_RUNS = 3
"""How often a transaction PostgreSQL picked as a deadlock's victim runs: it was rolled
back whole, and it reads before it writes, so running it again is safe."""

Changes = tuple[int, list[tuple[Any, ...]]]
"""The rows re-sealed, and the keys of those a concurrent write won."""

T = TypeVar("T")


class PostgresResealing(PostgresConnection):
    async def reseal_batch(
        self, table: SealedTable, after: Sequence[Any] | None, limit: int
    ) -> ResealBatch:
        """Read committed: another writer may change a row between the batch's read and its
        conditional update, which then changes nothing (another pass sealed it, or a mailbox
        fold rewrote it still in clear). A change that moves its row to its blind key runs in
        a savepoint: a writer that put a row under that key after the change checked for one
        makes it collide. Either way, once the batch has committed, the row is read again in
        a transaction of its own (holding no other row's lock, so two passes cannot wait on
        each other) and re-sealed as it now is; one still lost after `REREADS` reads is left
        for the next pass (lookups find both forms meanwhile) and counted as skipped, so this
        pass does not mark itself done."""

        async def first_read(conn: asyncpg.Connection) -> tuple[list[asyncpg.Record], Changes]:
            params = Numbered()
            rows = await conn.fetch(table.select_batch(params.bind, after, limit), *params.values)
            return rows, await self._apply_all(conn, table, rows)

        rows, (changed, lost) = await self._run_once_through(first_read)
        for _ in range(REREADS):
            still: list[tuple[Any, ...]] = []
            for key in lost:
                more, again = await self._run_once_through(
                    lambda conn, key=key: self._reread(conn, table, key)
                )
                changed += more
                still += again
            lost = still
        return ResealBatch.of(table, rows, changed, limit, len(lost))

    async def _run_once_through(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """`work` in one transaction, run again when PostgreSQL rolled it back to break a
        deadlock (with another pass's batch, or a gateway's write)."""
        runs = 1
        while True:
            try:
                async with self._transaction() as conn:
                    return await work(conn)
            except StoreUnavailable as exc:
                deadlocked = isinstance(exc.__cause__, asyncpg.DeadlockDetectedError)
                if not deadlocked or runs == DEADLOCK_RUNS:
                    raise
                runs += 1

    async def _reread(
        self, conn: asyncpg.Connection, table: SealedTable, key: Sequence[Any]
    ) -> Changes:
        """The row at `key` as it now is; gone is done (another pass moved it to its blind
        key, or merged it)."""
        params = Numbered()
        row = await conn.fetchrow(table.select_row(params.bind, key), *params.values)
        return await self._apply_all(conn, table, [row] if row is not None else [])

    async def _apply_all(
        self, conn: asyncpg.Connection, table: SealedTable, rows: Sequence[Sequence[Any]]
    ) -> Changes:
        changed, lost = 0, []
        for change in reseal_rows(table, rows, self._cipher):
            applied = await _apply_change(conn, table, change)
            changed += applied
            if not applied:
                lost.append(change.key)
        return changed, lost

    async def settle_resealing(self) -> None:
        """Nothing to do here: dead row versions stay until VACUUM (README, Rotating)."""

    async def count_rows(self, table: SealedTable) -> int:
        async with self._connection() as conn:
            return int(await conn.fetchval(f"SELECT count(*) FROM {table.name}"))


async def _apply_change(conn: asyncpg.Connection, table: SealedTable, change: Resealed) -> int:
    savepoint = conn.transaction() if table.moves(change) else contextlib.nullcontext()
    try:
        async with savepoint:
            return await _apply(conn, table.statements(change))
    except asyncpg.UniqueViolationError:
        return 0


async def _apply(conn: asyncpg.Connection, statements: Sequence[Statement]) -> int:
    """The rows the counted statements touched."""
    changed = 0
    for statement in statements:
        params = Numbered()
        count = affected(await conn.execute(statement.build(params.bind), *params.values))
        changed += count if statement.counted else 0
    return changed
