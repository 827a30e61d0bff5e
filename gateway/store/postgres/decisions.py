"""The decision log in PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import asyncpg

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
    summary_of_decisions,
    utc,
)
from gateway.store.postgres.connection import (
    Numbered,
    PostgresConnection,
    affected,
    fetch_page,
    read_time,
)

_INSERT = (
    f"INSERT INTO decisions ({RECORDED_DECISION_COLUMNS}) VALUES ("
    + ", ".join(f"${n}" for n in range(1, len(RECORDED_DECISION_COLUMNS.split(",")) + 1))
    + ") RETURNING id"
)


class PostgresDecisionLog(PostgresConnection):
    async def record_decisions(
        self, records: Sequence[DecisionRecord], *, durable: bool = True
    ) -> list[int]:
        if not records:
            return []
        rows = [decision_values(record, utc, self._cipher) for record in records]
        async with self._transaction() as conn:
            if not durable:
                await conn.execute("SET LOCAL synchronous_commit = off")
            return [await conn.fetchval(_INSERT, *row) for row in rows]

    async def query_decisions(self, query: DecisionQuery) -> list[DecisionRecord]:
        """A page of candidates at a time until the page is full of real matches (a search
        for part of a sealed text reads candidates, `decision_matches`), in one snapshot."""
        return await self._matching_decisions(query, query.limit)

    async def _matching_decisions(
        self, query: DecisionQuery, wanted: int
    ) -> list[DecisionRecord]:
        fill = PageFill(wanted, query.limit, decision_matches(query, self._cipher))
        async with self._transaction(snapshot=True) as conn:
            while True:
                page = await self._candidate_page(conn, query)
                if fill.full_after(len(page), page):
                    return fill.page
                query = replace(query, before_id=page[-1].id)

    async def _candidate_page(
        self, conn: asyncpg.Connection, query: DecisionQuery
    ) -> list[DecisionRecord]:
        cursor_time = None
        if query.before_id is not None:
            cursor_time = await conn.fetchval(
                DECISION_CURSOR_TIME.format(cursor="$1"), query.before_id
            )
        rows = await fetch_page(
            conn,
            f"SELECT {DECISION_COLUMNS} FROM decisions",
            lambda params: decision_filter(query, params, self._cipher, cursor_time),
            "time DESC, id DESC",
            query.limit,
        )
        return [decision_from_row(row, read_time, self._cipher) for row in rows]

    async def get_decision(self, decision_id: int) -> DecisionRecord | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {DECISION_EVIDENCE_COLUMNS} FROM decisions WHERE id = $1", decision_id
            )
        return None if row is None else decision_from_row(row, read_time, self._cipher)

    async def decision_summary(self, query: DecisionQuery, bucket_s: int) -> DecisionSummary:
        """Grouped in one hashed pass over the window (an index-only scan of
        decisions_time_outcome_channel, 0014), the reason codes in a second over its blocked
        decisions, both in one snapshot."""
        summary_buckets(query, bucket_s)
        query = replace(query, before_id=None)
        if searches_sealed_text(query, self._cipher):
            every = await self._matching_decisions(
                replace(query, limit=SUMMARY_READ_PAGE), sys.maxsize
            )
            return summary_of_decisions(every, bucket_s)
        params = Numbered()
        where = decision_filter(query, params, self._cipher)
        cells_sql = (
            "SELECT extract(epoch FROM bucket)::bigint, outcome, channel, n FROM"
            f" (SELECT {params.bucket(bucket_s)} AS bucket, outcome, channel, count(*) AS n"
            f" FROM decisions {where} GROUP BY bucket, outcome, channel) AS cells"
        )
        blocked = Numbered()
        blocked_only = replace(query, outcome=DecisionOutcome.BLOCKED)
        reasons_sql = (
            "SELECT channel, reason_codes, count(*) FROM decisions"
            f" {decision_filter(blocked_only, blocked, self._cipher)}"
            " GROUP BY channel, reason_codes"
        )
        async with self._transaction(snapshot=True) as conn:
            cells = await conn.fetch(cells_sql, *params.values)
            reasons = (
                await conn.fetch(reasons_sql, *blocked.values)
                if query.outcome in (None, DecisionOutcome.BLOCKED) else []
            )
        return decision_summary_of(cells, reasons)

    async def delete_decisions(self, before: datetime) -> int:
        deleted = 0
        while True:
            async with self._connection() as conn:
                chunk = affected(await conn.execute(
                    "DELETE FROM decisions WHERE id IN"
                    " (SELECT id FROM decisions WHERE time < $1 ORDER BY time LIMIT $2)",
                    utc(before), DECISION_DELETE_CHUNK,
                ))
            deleted += chunk
            if chunk < DECISION_DELETE_CHUNK:
                return deleted

