"""The delivery ledger in PostgreSQL. A recipient is stored as the blind index of its
case-folded form (as the agent spelled it otherwise), with its sealed copy for the export:
a claim is only ever found by the recipient it was made for, and an erasure finds an
email's rows by its key."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from gateway.store.base import DeliveryClaim
from gateway.store.core import SEALED_RECIPIENT, seal_if_enabled, stale_before, utc
from gateway.store.postgres.connection import PostgresConnection
from gateway.store.sealing import search_folded


class PostgresDeliveryLedger(PostgresConnection):
    async def claim_delivery(
        self, delivery_key: str, recipient: str, now: datetime, stale_after_s: float
    ) -> DeliveryClaim:
        """One INSERT ... ON CONFLICT decides, so of any number of claimants in any number
        of replicas exactly one wins; a stale pending claim is taken over in the same
        statement. A loser then reads what it lost to."""
        async with self._transaction() as conn:
            stored = await self._stored_recipient(conn, delivery_key, recipient)
            claimed = await conn.fetchval(
                "INSERT INTO deliveries (delivery_key, recipient, state, claimed_at,"
                " recipient_sealed) VALUES ($1, $2, 'pending', $3, $5)"
                " ON CONFLICT (delivery_key, recipient) DO UPDATE SET claimed_at = $3"
                " WHERE deliveries.state = 'pending' AND deliveries.claimed_at <= $4"
                " RETURNING true",
                delivery_key,
                stored,
                utc(now),
                stale_before(now, stale_after_s),
                self._sealed_recipient(recipient),
            )
            if claimed:
                return DeliveryClaim.CLAIMED
            state = await conn.fetchval(
                "SELECT state FROM deliveries WHERE delivery_key = $1 AND recipient = $2",
                delivery_key,
                stored,
            )
        return DeliveryClaim.ALREADY_DELIVERED if state == "done" else DeliveryClaim.IN_FLIGHT

    async def complete_delivery(self, delivery_key: str, recipient: str, upstream_id: str) -> None:
        """Upsert rather than update: the message did go out, so "done" must be recorded even
        if the claim row is gone, or a retry would send a second copy."""
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO deliveries (delivery_key, recipient, state, claimed_at, upstream_id,"
                " recipient_sealed) VALUES ($1, $2, 'done', now(), $3, $4)"
                " ON CONFLICT (delivery_key, recipient) DO UPDATE SET"
                " state = 'done', upstream_id = excluded.upstream_id",
                delivery_key,
                await self._stored_recipient(conn, delivery_key, recipient),
                upstream_id,
                self._sealed_recipient(recipient),
            )

    async def release_delivery(self, delivery_key: str, recipient: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "DELETE FROM deliveries"
                " WHERE delivery_key = $1 AND recipient = ANY($2::text[]) AND state = 'pending'",
                delivery_key,
                [self._delivery_index(recipient), recipient],
            )

    def _delivery_index(self, recipient: str) -> str:
        if not self._cipher.enabled:
            return recipient
        return self._cipher.blind(search_folded(recipient))

    def _sealed_recipient(self, recipient: str) -> str:
        return seal_if_enabled(self._cipher, recipient, SEALED_RECIPIENT)

    async def _stored_recipient(
        self, conn: asyncpg.Connection, delivery_key: str, recipient: str
    ) -> str:
        """The form a claim of `recipient` is kept under: its blind index, unless a claim
        made before encryption holds the recipient in clear (then that claim decides). The
        clear row is locked: the sealing pass converting it meanwhile makes this read wait
        and then miss it, so the claim goes on under the blind index, never beside it."""
        indexed = self._delivery_index(recipient)
        if indexed == recipient:
            return recipient
        legacy = await conn.fetchval(
            "SELECT true FROM deliveries WHERE delivery_key = $1 AND recipient = $2"
            " FOR UPDATE",
            delivery_key,
            recipient,
        )
        return recipient if legacy else indexed
