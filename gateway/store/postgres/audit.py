"""The audit log in PostgreSQL: rows in, rows out; the chain's rules are audit_chain.py's.

Appends, prunes and purges serialize on one advisory lock inside their transaction, so the
chain stays linear across replicas and id order is chain order.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from functools import partial

import asyncpg

from gateway.model import AuditEvent
from gateway.store.audit_chain import (
    ANCHOR_QUERY,
    AUDIT_COLUMNS,
    ChainCheck,
    event_from_row,
    link,
    sealed_columns,
)
from gateway.store.base import AuditChain, AuditProblem, AuditQuery
from gateway.store.core import AUDIT_ACTIONS, audit_filter, utc
from gateway.store.postgres.connection import (
    AUDIT_LOCK_CLASS,
    PostgresConnection,
    affected,
    fetch_page,
    read_time,
)
from gateway.store.sealing import DataCipher


class PostgresAuditLog(PostgresConnection):
    async def append_audit(self, event: AuditEvent) -> AuditEvent:
        async with self._transaction() as conn:
            return await insert_audit(conn, event, self._cipher)

    async def audit_events(self) -> list[AuditEvent]:
        async with self._connection() as conn:
            rows = await conn.fetch(f"SELECT {AUDIT_COLUMNS} FROM audit ORDER BY id")
        return [event_from_row(row, read_time, self._cipher) for row in rows]

    async def query_audit(self, query: AuditQuery) -> list[AuditEvent]:
        async with self._connection() as conn:
            rows = await fetch_page(
                conn,
                f"SELECT {AUDIT_COLUMNS} FROM audit",
                partial(audit_filter, query),
                "id DESC",
                query.limit,
            )
        return [event_from_row(row, read_time, self._cipher) for row in rows]

    async def audit_actions(self) -> list[str]:
        async with self._connection() as conn:
            return sorted(row[0] for row in await conn.fetch(AUDIT_ACTIONS))

    async def verify_audit(self) -> AuditProblem | None:
        return (await self.check_audit()).problem

    async def check_audit(self) -> AuditChain:
        """One snapshot (REPEATABLE READ), so appends and prunes running meanwhile cannot
        make intact entries look broken."""
        async with self._transaction(snapshot=True) as conn:
            chain = ChainCheck(await conn.fetchrow(ANCHOR_QUERY), read_time, self._cipher)
            async for row in conn.cursor(f"SELECT {AUDIT_COLUMNS} FROM audit ORDER BY id"):
                if chain.check(row):
                    break
        return chain.result()

    async def prune_audit(self, before: datetime) -> int:
        """Entries are removed by id, as a prefix, under the append lock: an entry older
        than `before` that follows a newer one (a clock stepped back) stays until the newer
        one ages out."""
        async with self._transaction() as conn:
            await lock_audit_chain(conn)
            last = await conn.fetchrow(
                "SELECT id, hash FROM audit"
                " WHERE id < coalesce((SELECT min(id) FROM audit WHERE time >= $1),"
                "                     (SELECT max(id) + 1 FROM audit))"
                " ORDER BY id DESC LIMIT 1",
                utc(before),
            )
            if last is None:
                return 0
            await conn.execute(
                "INSERT INTO audit_anchor (id, entry_id, hash, pruned_at) VALUES (1, $1, $2, now())"
                " ON CONFLICT (id) DO UPDATE SET entry_id = excluded.entry_id,"
                " hash = excluded.hash, pruned_at = excluded.pruned_at",
                last["id"],
                last["hash"],
            )
            return affected(await conn.execute("DELETE FROM audit WHERE id <= $1", last["id"]))


async def lock_audit_chain(conn: asyncpg.Connection) -> None:
    """Held until the transaction ends; every writer of the chain takes it first."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, 0)", AUDIT_LOCK_CLASS)


async def insert_audit(
    conn: asyncpg.Connection, event: AuditEvent, cipher: DataCipher
) -> AuditEvent:
    """The chain lock is taken before reading the last hash, so the link cannot go stale
    in any replica."""
    await lock_audit_chain(conn)
    linked = link(
        event,
        await conn.fetchval(
            "SELECT coalesce((SELECT hash FROM audit ORDER BY id DESC LIMIT 1),"
            " (SELECT hash FROM audit_anchor WHERE id = 1))"
        ),
        cipher,
    )
    entry = linked.entry
    entry_id = await conn.fetchval(
        "INSERT INTO audit (time, actor, action, subject, details_json, prev_hash, hash)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        entry.time,
        entry.actor,
        entry.action,
        *sealed_columns(linked, cipher),
        entry.prev_hash,
        entry.hash,
    )
    return replace(entry, id=entry_id)
