"""The block log in SQLite."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from gateway.model import BlockRecord
from gateway.store.base import BlockQuery
from gateway.store.core import (
    BLOCK_COLUMNS,
    RECORDED_BLOCK_COLUMNS,
    block_filter,
    block_from_row,
    block_values,
    check_bucket,
    reason_codes,
    time_window,
    where_all,
)
from gateway.store.sealing import DataCipher
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import QMarks, from_text, row_id, select_page, to_text, transaction


class SqliteBlockLog(SqliteConnection):
    async def record_block(self, record: BlockRecord) -> int:
        cipher = self._cipher
        return await self._run(lambda conn: insert_block(conn, record, cipher), batchable=True)

    async def query_blocks(self, query: BlockQuery) -> list[BlockRecord]:
        cipher = self._cipher
        return await self._run(lambda conn: _select_blocks(conn, query, cipher))

    async def get_block(self, block_id: int) -> BlockRecord | None:
        cipher = self._cipher
        return await self._run(lambda conn: _select_block(conn, block_id, cipher))

    async def block_counts(
        self, since: datetime | None, until: datetime | None
    ) -> list[tuple[str, str, int]]:
        window = BlockQuery(since=since, until=until)
        return await self._run(lambda conn: _count_blocks_by_reason(conn, window))

    async def block_series(
        self, since: datetime | None, until: datetime | None, bucket_s: int
    ) -> list[tuple[datetime, int]]:
        check_bucket(bucket_s)
        window = BlockQuery(since=since, until=until)
        return await self._run(lambda conn: _count_blocks_by_bucket(conn, window, bucket_s))

    async def clear_block_metadata(self, before: datetime) -> int:
        return await self._run(lambda conn: _clear_block_metadata(conn, before))

    async def delete_blocks(self, before: datetime) -> int:
        return await self._run(lambda conn: _delete_blocks_before(conn, before))


def insert_block(conn: sqlite3.Connection, record: BlockRecord, cipher: DataCipher) -> int:
    values = block_values(record, to_text, cipher)
    with transaction(conn, write=True):
        cursor = conn.execute(
            f"INSERT INTO blocks ({RECORDED_BLOCK_COLUMNS})"
            f" VALUES ({', '.join('?' * len(values))})",
            values,
        )
    return row_id(cursor)


def _select_blocks(
    conn: sqlite3.Connection, query: BlockQuery, cipher: DataCipher
) -> list[BlockRecord]:
    rows = select_page(
        conn,
        f"SELECT {BLOCK_COLUMNS} FROM blocks",
        lambda params: block_filter(query, params, cipher),
        "time DESC, id DESC",
        query.limit,
    )
    return [block_from_row(row, from_text, cipher) for row in rows]


def _select_block(
    conn: sqlite3.Connection, block_id: int, cipher: DataCipher
) -> BlockRecord | None:
    row = conn.execute(f"SELECT {BLOCK_COLUMNS} FROM blocks WHERE id = ?", (block_id,)).fetchone()
    return None if row is None else block_from_row(row, from_text, cipher)


def _count_blocks_by_reason(
    conn: sqlite3.Connection, window: BlockQuery
) -> list[tuple[str, str, int]]:
    """Counted here rather than in SQL: splitting the stored code list needs a recursive
    query."""
    params = QMarks()
    where = where_all(time_window(params, window.since, window.until))
    counts: dict[tuple[str, str], int] = {}
    with transaction(conn, write=False):
        for channel, stored in conn.execute(
            f"SELECT channel, reason_codes FROM blocks {where}", params.values
        ):
            for code in reason_codes(stored):
                counts[channel, code] = counts.get((channel, code), 0) + 1
    return [(channel, code, n) for (channel, code), n in sorted(counts.items())]


def _count_blocks_by_bucket(
    conn: sqlite3.Connection, window: BlockQuery, bucket_s: int
) -> list[tuple[datetime, int]]:
    params = QMarks()
    where = where_all(time_window(params, window.since, window.until))
    counts: dict[int, int] = {}
    with transaction(conn, write=False):
        for (time,) in conn.execute(f"SELECT time FROM blocks {where}", params.values):
            bucket = int(from_text(time).timestamp()) // bucket_s * bucket_s
            counts[bucket] = counts.get(bucket, 0) + 1
    return [(datetime.fromtimestamp(b, UTC), n) for b, n in sorted(counts.items())]


def _clear_block_metadata(conn: sqlite3.Connection, before: datetime) -> int:
    with transaction(conn, write=True):
        return conn.execute(
            "UPDATE blocks SET subject = '', message_id = ''"
            " WHERE time < ? AND (subject != '' OR message_id != '')",
            (to_text(before),),
        ).rowcount


def _delete_blocks_before(conn: sqlite3.Connection, before: datetime) -> int:
    with transaction(conn, write=True):
        return conn.execute("DELETE FROM blocks WHERE time < ?", (to_text(before),)).rowcount
