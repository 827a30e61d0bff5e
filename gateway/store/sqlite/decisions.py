"""The decision log in SQLite."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from gateway.model import DecisionOutcome, DecisionRecord
from gateway.store.base import DecisionQuery, DecisionSummary
from gateway.store.core import (
    DECISION_COLUMNS,
    DECISION_CURSOR_TIME,
    DECISION_DELETE_CHUNK,
    DECISION_EVIDENCE_COLUMNS,
    RECORDED_DECISION_COLUMNS,
    SUMMARY_READ_PAGE,
    PageFill,
    decision_filter,
    decision_from_row,
    decision_matches,
    decision_summary_of,
    decision_values,
    searches_sealed_text,
    summary_buckets,
    summary_cells,
    summary_of_decisions,
)
from gateway.store.sealing import DataCipher
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import QMarks, from_text, row_id, select_page, to_text, transaction

_INSERT = (
    f"INSERT INTO decisions ({RECORDED_DECISION_COLUMNS})"
    f" VALUES ({', '.join('?' * len(RECORDED_DECISION_COLUMNS.split(',')))})"
)


class SqliteDecisionLog(SqliteConnection):
    async def record_decisions(
        self, records: Sequence[DecisionRecord], *, durable: bool = True
    ) -> list[int]:
        """A small write on the send path: group-committed with the others waiting."""
        if not records:
            return []
        rows = [decision_values(record, to_text, self._cipher) for record in records]
        return await self._run(
            lambda conn: _insert_decisions(conn, rows), batchable=True, durable=durable
        )

    async def query_decisions(self, query: DecisionQuery) -> list[DecisionRecord]:
        """In a thread of its own: a partial search may walk many rows, and must hold up
        neither the event loop nor the writes queued on the worker."""
        cipher = self._cipher
        return await self._read_in_thread(
            lambda conn: _select_decisions(conn, query, cipher, query.limit)
        )

    async def get_decision(self, decision_id: int) -> DecisionRecord | None:
        """One row by its key: cheaper on the loop's own reader than a hop to a thread."""
        cipher = self._cipher
        return self._read_on_loop(lambda conn: _select_decision(conn, decision_id, cipher))

    async def decision_summary(self, query: DecisionQuery, bucket_s: int) -> DecisionSummary:
        """In a thread of its own, as `query_decisions`. SQLite groups by sorting every row,
        so the window is counted instead: one count per outcome, channel and bucket, each a
        range of decisions_outcome_channel_time (0014) read without the table."""
        buckets = summary_buckets(query, bucket_s)
        cipher = self._cipher
        if searches_sealed_text(query, cipher):
            every = replace(query, before_id=None, limit=SUMMARY_READ_PAGE)
            return await self._read_in_thread(
                lambda conn: summary_of_decisions(
                    _select_decisions(conn, every, cipher, sys.maxsize), bucket_s
                )
            )
        return await self._read_in_thread(lambda conn: _summarise(conn, query, buckets, cipher))

    async def delete_decisions(self, before: datetime) -> int:
        deleted = 0
        while True:
            chunk = await self._run(lambda conn: _delete_decisions_chunk(conn, before))
            deleted += chunk
            if chunk < DECISION_DELETE_CHUNK:
                return deleted


def _insert_decisions(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> list[int]:
    with transaction(conn, write=True):
        return [row_id(conn.execute(_INSERT, row)) for row in rows]


def _select_decisions(
    conn: sqlite3.Connection, query: DecisionQuery, cipher: DataCipher, wanted: int
) -> list[DecisionRecord]:
    """A page of `query.limit` candidates at a time until `wanted` real matches are found
    (a search for part of a sealed text reads candidates, `decision_matches`), in one
    snapshot."""
    fill = PageFill(wanted, query.limit, decision_matches(query, cipher))
    with transaction(conn, write=False):
        while True:
            page = _candidate_page(conn, query, cipher)
            if fill.full_after(len(page), page):
                return fill.page
            query = replace(query, before_id=page[-1].id)


def _candidate_page(
    conn: sqlite3.Connection, query: DecisionQuery, cipher: DataCipher
) -> list[DecisionRecord]:
    cursor_time = None
    if query.before_id is not None:
        found = conn.execute(
            DECISION_CURSOR_TIME.format(cursor="?"), (query.before_id,)
        ).fetchone()
        cursor_time = None if found is None else from_text(found[0])
    rows = select_page(
        conn,
        f"SELECT {DECISION_COLUMNS} FROM decisions",
        lambda params: decision_filter(query, params, cipher, cursor_time),
        "time DESC, id DESC",
        query.limit,
    )
    return [decision_from_row(row, from_text, cipher) for row in rows]


def _select_decision(
    conn: sqlite3.Connection, decision_id: int, cipher: DataCipher
) -> DecisionRecord | None:
    row = conn.execute(
        f"SELECT {DECISION_EVIDENCE_COLUMNS} FROM decisions WHERE id = ?", (decision_id,)
    ).fetchone()
    return None if row is None else decision_from_row(row, from_text, cipher)


def _summarise(
    conn: sqlite3.Connection,
    query: DecisionQuery,
    buckets: list[tuple[int, datetime, datetime]],
    cipher: DataCipher,
) -> DecisionSummary:
    """Without a filter on the rows' other columns, a count per cell and bucket reads only
    the index; with one (an account, a partial recipient), a cell-by-cell count would read
    the matching rows once per cell, so each bucket is read once and counted per cell."""
    cells: list[tuple[int, str, str, int]] = []
    reasons: list[tuple[str, str, int]] = []
    every = summary_cells(query)
    by_row = any(
        value is not None
        for value in (query.account, query.sender, query.recipient, query.text,
                      query.upstream_id)
    )
    counts = ", ".join(
        f"count(*) FILTER (WHERE outcome = '{cell.outcome}' AND channel = '{cell.channel}')"
        for cell in every
    )
    with transaction(conn, write=False):
        for start, low, high in buckets:
            if by_row:
                params = QMarks()
                where = decision_filter(replace(query, since=low, until=high, before_id=None),
                                        params, cipher)
                found = conn.execute(f"SELECT {counts} FROM decisions {where}",
                                     params.values).fetchone()
            else:
                found = [
                    _count(conn, replace(cell, since=low, until=high), cipher) for cell in every
                ]
            cells.extend(
                (start, str(cell.outcome), str(cell.channel), count)
                for cell, count in zip(every, found, strict=True)
            )
        for cell in every:
            if cell.outcome is DecisionOutcome.BLOCKED:
                params = QMarks()
                where = decision_filter(cell, params, cipher)
                reasons.extend(conn.execute(
                    f"SELECT channel, reason_codes, count(*) FROM decisions {where}"
                    " GROUP BY channel, reason_codes", params.values,
                ))
    return decision_summary_of(cells, reasons)


def _count(conn: sqlite3.Connection, query: DecisionQuery, cipher: DataCipher) -> int:
    params = QMarks()
    where = decision_filter(query, params, cipher)
    (count,) = conn.execute(f"SELECT count(*) FROM decisions {where}", params.values).fetchone()
    return int(count)


def _delete_decisions_chunk(conn: sqlite3.Connection, before: datetime) -> int:
    with transaction(conn, write=True):
        return conn.execute(
            "DELETE FROM decisions WHERE id IN"
            " (SELECT id FROM decisions WHERE time < ? ORDER BY time LIMIT ?)",
            (to_text(before), DECISION_DELETE_CHUNK),
        ).rowcount
