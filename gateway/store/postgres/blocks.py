"""The block log in PostgreSQL."""

from __future__ import annotations

from datetime import datetime

from gateway.model import BlockRecord
from gateway.store.base import BlockQuery
from gateway.store.core import (
    BLOCK_COLUMNS,
    RECORDED_BLOCK_COLUMNS,
    block_filter,
    block_from_row,
    block_values,
    check_bucket,
    time_window,
    utc,
    where_all,
)
from gateway.store.postgres.connection import (
    Numbered,
    PostgresConnection,
    affected,
    fetch_page,
    read_time,
)


class PostgresBlockLog(PostgresConnection):
    async def record_block(self, record: BlockRecord) -> int:
        async with self._connection() as conn:
            return await conn.fetchval(
                f"INSERT INTO blocks ({RECORDED_BLOCK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6,"
                " $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
                *block_values(record, utc, self._cipher),
            )

    async def query_blocks(self, query: BlockQuery) -> list[BlockRecord]:
        async with self._connection() as conn:
            rows = await fetch_page(
                conn,
                f"SELECT {BLOCK_COLUMNS} FROM blocks",
                lambda params: block_filter(query, params, self._cipher),
                "time DESC, id DESC",
                query.limit,
            )
        return [block_from_row(row, read_time, self._cipher) for row in rows]

    async def get_block(self, block_id: int) -> BlockRecord | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {BLOCK_COLUMNS} FROM blocks WHERE id = $1", block_id
            )
        return None if row is None else block_from_row(row, read_time, self._cipher)

    async def block_counts(
        self, since: datetime | None, until: datetime | None
    ) -> list[tuple[str, str, int]]:
        """Counting distinct block ids makes a code repeated within one block count once."""
        params = Numbered()
        where = where_all(time_window(params, since, until))
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT channel, code, count(DISTINCT id) FROM blocks,"
                " unnest(string_to_array(trim(both ',' from reason_codes), ',')) AS code"
                f" {where} {'AND' if where else 'WHERE'} code <> ''"
                ' GROUP BY channel, code ORDER BY channel, code COLLATE "C"',
                *params.values,
            )
        return [(channel, code, n) for channel, code, n in rows]

    async def block_series(
        self, since: datetime | None, until: datetime | None, bucket_s: int
    ) -> list[tuple[datetime, int]]:
        check_bucket(bucket_s)
        params = Numbered()
        where = where_all(time_window(params, since, until))
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {params.bucket(bucket_s)} AS bucket, count(*) FROM blocks {where}"
                " GROUP BY bucket ORDER BY bucket",
                *params.values,
            )
        return [(bucket, n) for bucket, n in rows]

    async def clear_block_metadata(self, before: datetime) -> int:
        async with self._connection() as conn:
            return affected(await conn.execute(
                "UPDATE blocks SET subject = '', message_id = ''"
                " WHERE time < $1 AND (subject <> '' OR message_id <> '')",
                utc(before),
            ))

    async def delete_blocks(self, before: datetime) -> int:
        async with self._connection() as conn:
            return affected(await conn.execute("DELETE FROM blocks WHERE time < $1", utc(before)))
