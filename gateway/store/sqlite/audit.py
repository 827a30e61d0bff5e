"""The audit log in SQLite: rows in, rows out; the chain's rules are audit_chain.py's."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial

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
from gateway.store.core import AUDIT_ACTIONS, audit_filter
from gateway.store.sealing import DataCipher
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import from_text, row_id, select_page, to_text, transaction


class SqliteAuditLog(SqliteConnection):
    async def append_audit(self, event: AuditEvent) -> AuditEvent:
        cipher = self._cipher
        return await self._run(lambda conn: _append_audit(conn, event, cipher), batchable=True)

    async def audit_events(self) -> list[AuditEvent]:
        cipher = self._cipher
        return await self._run(lambda conn: _select_audit_events(conn, cipher))

    async def query_audit(self, query: AuditQuery) -> list[AuditEvent]:
        """In a thread of its own: a search over the actors may walk many rows, and must
        hold up neither the event loop nor the writes queued on the worker."""
        cipher = self._cipher
        return await self._read_in_thread(lambda conn: _select_audit_page(conn, query, cipher))

    async def audit_actions(self) -> list[str]:
        """A seek per action: short enough for the loop's own reader."""
        return self._read_on_loop(lambda conn: sorted(a for (a,) in conn.execute(AUDIT_ACTIONS)))

    async def verify_audit(self) -> AuditProblem | None:
        return (await self.check_audit()).problem

    async def check_audit(self) -> AuditChain:
        """A walk of every entry, in a thread of its own beside the writers."""
        cipher = self._cipher
        return await self._read_in_thread(lambda conn: _check_audit_chain(conn, cipher))

    async def prune_audit(self, before: datetime) -> int:
        return await self._run(lambda conn: _prune_audit(conn, before))


def _append_audit(conn: sqlite3.Connection, event: AuditEvent, cipher: DataCipher) -> AuditEvent:
    with transaction(conn, write=True):
        return insert_audit(conn, event, cipher)


def insert_audit(conn: sqlite3.Connection, event: AuditEvent, cipher: DataCipher) -> AuditEvent:
    """Callers hold a write transaction, so the link to the last entry cannot go stale."""
    (prev_hash,) = conn.execute(
        "SELECT coalesce((SELECT hash FROM audit ORDER BY id DESC LIMIT 1),"
        " (SELECT hash FROM audit_anchor WHERE id = 1))"
    ).fetchone()
    linked = link(event, prev_hash, cipher)
    entry = linked.entry
    cursor = conn.execute(
        "INSERT INTO audit (time, actor, action, subject, details_json, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            to_text(entry.time),
            entry.actor,
            entry.action,
            *sealed_columns(linked, cipher),
            entry.prev_hash,
            entry.hash,
        ),
    )
    return replace(entry, id=row_id(cursor))


def _select_audit_events(conn: sqlite3.Connection, cipher: DataCipher) -> list[AuditEvent]:
    rows = conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit ORDER BY id")
    return [event_from_row(row, from_text, cipher) for row in rows]


def _select_audit_page(
    conn: sqlite3.Connection, query: AuditQuery, cipher: DataCipher
) -> list[AuditEvent]:
    rows = select_page(
        conn,
        f"SELECT {AUDIT_COLUMNS} FROM audit",
        partial(audit_filter, query),
        "id DESC",
        query.limit,
    )
    return [event_from_row(row, from_text, cipher) for row in rows]


def _check_audit_chain(conn: sqlite3.Connection, cipher: DataCipher) -> AuditChain:
    """One read snapshot for the anchor and every entry."""
    with transaction(conn, write=False):
        chain = ChainCheck(conn.execute(ANCHOR_QUERY).fetchone(), from_text, cipher)
        for row in conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit ORDER BY id"):
            if chain.check(row):
                break
    return chain.result()


def _prune_audit(conn: sqlite3.Connection, before: datetime) -> int:
    """Entries are removed by id, as a prefix: an entry older than `before` that follows a
    newer one (a clock stepped back) stays until the newer one ages out."""
    with transaction(conn, write=True):
        first_kept = conn.execute(
            "SELECT min(id) FROM audit WHERE time >= ?", (to_text(before),)
        ).fetchone()[0]
        last = conn.execute(
            "SELECT id, hash FROM audit WHERE id < coalesce(?, (SELECT max(id) + 1 FROM audit))"
            " ORDER BY id DESC LIMIT 1",
            (first_kept,),
        ).fetchone()
        if last is None:
            return 0
        last_id, last_hash = last
        conn.execute(
            "INSERT INTO audit_anchor (id, entry_id, hash, pruned_at) VALUES (1, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET entry_id = excluded.entry_id,"
            " hash = excluded.hash, pruned_at = excluded.pruned_at",
            (last_id, last_hash, to_text(datetime.now(UTC))),
        )
        return conn.execute("DELETE FROM audit WHERE id <= ?", (last_id,)).rowcount
