"""Inbound messages acted on, in PostgreSQL: one INSERT ... ON CONFLICT decides, so of two
replicas recording the same id at once exactly one is told it was new."""

from __future__ import annotations

from datetime import datetime

from gateway.store.core import utc
from gateway.store.postgres.connection import PostgresConnection, affected


class PostgresInboundMessages(PostgresConnection):
    async def inbound_seen(self, message_id: str) -> bool:
        async with self._connection() as conn:
            return bool(await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM inbound_messages WHERE message_id = $1)",
                message_id,
            ))

    async def record_inbound(self, message_id: str, received_at: datetime) -> bool:
        async with self._connection() as conn:
            status = await conn.execute(
                "INSERT INTO inbound_messages (message_id, received_at) VALUES ($1, $2)"
                " ON CONFLICT (message_id) DO NOTHING",
                message_id,
                utc(received_at),
            )
        return affected(status) == 1
