"""The delivery ledger in PostgreSQL."""

from __future__ import annotations

from datetime import datetime

from gateway.store.base import DeliveryClaim
from gateway.store.core import stale_before, utc
from gateway.store.postgres.connection import PostgresConnection


class PostgresDeliveryLedger(PostgresConnection):
    async def claim_delivery(
        self, delivery_key: str, recipient: str, now: datetime, stale_after_s: float
    ) -> DeliveryClaim:
        """One INSERT ... ON CONFLICT decides, so of any number of claimants in any number
        of replicas exactly one wins; a stale pending claim is taken over in the same
        statement. A loser then reads what it lost to."""
        async with self._transaction() as conn:
            claimed = await conn.fetchval(
                "INSERT INTO deliveries (delivery_key, recipient, state, claimed_at)"
                " VALUES ($1, $2, 'pending', $3)"
                " ON CONFLICT (delivery_key, recipient) DO UPDATE SET claimed_at = $3"
                " WHERE deliveries.state = 'pending' AND deliveries.claimed_at <= $4"
                " RETURNING true",
                delivery_key,
                recipient,
                utc(now),
                stale_before(now, stale_after_s),
            )
            if claimed:
                return DeliveryClaim.CLAIMED
            state = await conn.fetchval(
                "SELECT state FROM deliveries WHERE delivery_key = $1 AND recipient = $2",
                delivery_key,
                recipient,
            )
        return DeliveryClaim.ALREADY_DELIVERED if state == "done" else DeliveryClaim.IN_FLIGHT

    async def complete_delivery(self, delivery_key: str, recipient: str, upstream_id: str) -> None:
        """Upsert rather than update: the message did go out, so "done" must be recorded even
        if the claim row is gone, or a retry would send a second copy."""
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO deliveries (delivery_key, recipient, state, claimed_at, upstream_id)"
                " VALUES ($1, $2, 'done', now(), $3)"
                " ON CONFLICT (delivery_key, recipient) DO UPDATE SET"
                " state = 'done', upstream_id = excluded.upstream_id",
                delivery_key,
                recipient,
                upstream_id,
            )

    async def release_delivery(self, delivery_key: str, recipient: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "DELETE FROM deliveries"
                " WHERE delivery_key = $1 AND recipient = $2 AND state = 'pending'",
                delivery_key,
                recipient,
            )
