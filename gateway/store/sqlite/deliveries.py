"""The delivery ledger in SQLite. A recipient is stored as the blind index of its
case-folded form (as the agent spelled it otherwise), with its sealed copy for the export:
a claim is only ever found by the recipient it was made for, and an erasure finds an
email's rows by its key."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from gateway.store.base import DeliveryClaim
from gateway.store.core import SEALED_RECIPIENT, seal_if_enabled, stale_before
from gateway.store.sealing import search_folded
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import from_text, to_text, transaction


class SqliteDeliveryLedger(SqliteConnection):
    async def claim_delivery(
        self, delivery_key: str, recipient: str, now: datetime, stale_after_s: float
    ) -> DeliveryClaim:
        stale = stale_before(now, stale_after_s)
        forms, sealed = self._delivery_forms(recipient), self._sealed_recipient(recipient)
        return await self._run(
            lambda conn: _claim_delivery(conn, delivery_key, forms, sealed, now, stale),
            batchable=True,
            durable=False,
        )

    async def complete_delivery(self, delivery_key: str, recipient: str, upstream_id: str) -> None:
        forms, sealed = self._delivery_forms(recipient), self._sealed_recipient(recipient)
        await self._run(
            lambda conn: _complete_delivery(conn, delivery_key, forms, sealed, upstream_id),
            batchable=True,
            durable=False,
        )

    async def release_delivery(self, delivery_key: str, recipient: str) -> None:
        forms = self._delivery_forms(recipient)
        await self._run(
            lambda conn: _release_delivery(conn, delivery_key, forms),
            batchable=True,
            durable=False,
        )

    def _delivery_forms(self, recipient: str) -> list[str]:
        """The stored recipient a claim is written with first, then (encryption on) the
        recipient as a row written before encryption holds it."""
        if not self._cipher.enabled:
            return [recipient]
        return [self._cipher.blind(search_folded(recipient)), recipient]

    def _sealed_recipient(self, recipient: str) -> str:
        return seal_if_enabled(self._cipher, recipient, SEALED_RECIPIENT)


def _claim_delivery(
    conn: sqlite3.Connection,
    delivery_key: str,
    forms: Sequence[str],
    sealed: str,
    now: datetime,
    stale: datetime,
) -> DeliveryClaim:
    """Read and decide inside one IMMEDIATE transaction, so two claimants (in this process
    or another) cannot both see "no claim"."""
    with transaction(conn, write=True):
        row = conn.execute(
            "SELECT recipient, state, claimed_at FROM deliveries WHERE delivery_key = ?"
            f" AND recipient IN ({_among(forms)}) ORDER BY state = 'done' DESC LIMIT 1",
            (delivery_key, *forms),
        ).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO deliveries (delivery_key, recipient, state, claimed_at,"
                " recipient_sealed) VALUES (?, ?, 'pending', ?, ?)",
                (delivery_key, forms[0], to_text(now), sealed),
            )
            return DeliveryClaim.CLAIMED
        stored, state, claimed_at = row
        key = (delivery_key, stored)
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
    conn: sqlite3.Connection,
    delivery_key: str,
    forms: Sequence[str],
    sealed: str,
    upstream_id: str,
) -> None:
    """Upsert rather than update: the message did go out, so "done" must be recorded even if
    the claim row is gone, or a retry would send a second copy. A claim made before
    encryption is completed where it is."""
    with transaction(conn, write=True):
        updated = conn.execute(
            "UPDATE deliveries SET state = 'done', upstream_id = ?"
            f" WHERE delivery_key = ? AND recipient IN ({_among(forms)})",
            (upstream_id, delivery_key, *forms),
        ).rowcount
        if not updated:
            conn.execute(
                "INSERT INTO deliveries (delivery_key, recipient, state, claimed_at, upstream_id,"
                " recipient_sealed) VALUES (?, ?, 'done', ?, ?, ?)",
                (delivery_key, forms[0], to_text(datetime.now(UTC)), upstream_id, sealed),
            )


def _release_delivery(conn: sqlite3.Connection, delivery_key: str, forms: Sequence[str]) -> None:
    with transaction(conn, write=True):
        conn.execute(
            f"DELETE FROM deliveries WHERE delivery_key = ? AND recipient IN ({_among(forms)})"
            " AND state = 'pending'",
            (delivery_key, *forms),
        )


def _among(forms: Sequence[str]) -> str:
    return ", ".join("?" * len(forms))
