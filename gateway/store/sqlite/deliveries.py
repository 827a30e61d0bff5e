"""The delivery ledger in SQLite."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from gateway.store.base import DeliveryClaim
from gateway.store.core import stale_before
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import from_text, to_text, transaction


class SqliteDeliveryLedger(SqliteConnection):
    async def claim_delivery(
        self, delivery_key: str, recipient: str, now: datetime, stale_after_s: float
    ) -> DeliveryClaim:
        stale = stale_before(now, stale_after_s)
        return await self._run(
            lambda conn: _claim_delivery(conn, delivery_key, recipient, now, stale),
            batchable=True,
            durable=False,
        )

    async def complete_delivery(self, delivery_key: str, recipient: str, upstream_id: str) -> None:
        await self._run(
            lambda conn: _complete_delivery(conn, delivery_key, recipient, upstream_id),
            batchable=True,
            durable=False,
        )

    async def release_delivery(self, delivery_key: str, recipient: str) -> None:
        await self._run(
            lambda conn: _release_delivery(conn, delivery_key, recipient),
            batchable=True,
            durable=False,
        )


def _claim_delivery(
    conn: sqlite3.Connection,
    delivery_key: str,
    recipient: str,
    now: datetime,
    stale: datetime,
) -> DeliveryClaim:
    """Read and decide inside one IMMEDIATE transaction, so two claimants (in this process
    or another) cannot both see "no claim"."""
    key = (delivery_key, recipient)
    with transaction(conn, write=True):
        row = conn.execute(
            "SELECT state, claimed_at FROM deliveries WHERE delivery_key = ? AND recipient = ?",
            key,
        ).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO deliveries (delivery_key, recipient, state, claimed_at)"
                " VALUES (?, ?, 'pending', ?)",
                (*key, to_text(now)),
            )
            return DeliveryClaim.CLAIMED
        state, claimed_at = row
        if state == "done":
            return DeliveryClaim.ALREADY_DELIVERED
        if from_text(claimed_at) > stale:
            return DeliveryClaim.IN_FLIGHT
        conn.execute(
            "UPDATE deliveries SET claimed_at = ? WHERE delivery_key = ? AND recipient = ?",
            (to_text(now), *key),
        )
        return DeliveryClaim.CLAIMED


def _complete_delivery(
    conn: sqlite3.Connection, delivery_key: str, recipient: str, upstream_id: str
) -> None:
    """Upsert rather than update: the message did go out, so "done" must be recorded even if
    the claim row is gone, or a retry would send a second copy."""
    with transaction(conn, write=True):
        conn.execute(
            "INSERT INTO deliveries (delivery_key, recipient, state, claimed_at, upstream_id)"
            " VALUES (?, ?, 'done', ?, ?)"
            " ON CONFLICT (delivery_key, recipient) DO UPDATE SET"
            " state = 'done', upstream_id = excluded.upstream_id",
            (delivery_key, recipient, to_text(datetime.now(UTC)), upstream_id),
        )


def _release_delivery(conn: sqlite3.Connection, delivery_key: str, recipient: str) -> None:
    with transaction(conn, write=True):
        conn.execute(
            "DELETE FROM deliveries WHERE delivery_key = ? AND recipient = ? AND state = 'pending'",
            (delivery_key, recipient),
        )
