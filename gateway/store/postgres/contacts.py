"""The contact ledger in PostgreSQL: contacts counted against frequency caps, and opt-out
notices sent. Recipients are stored as blind indexes, only ever looked up by a number the
caller knows (a row written before encryption holds it in clear and is found too)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from gateway.model import Channel
from gateway.store.core import contact_windows, utc
from gateway.store.postgres.connection import CONTACT_LOCK_CLASS, PostgresConnection


class PostgresContactLedger(PostgresConnection):
    async def contact_counts(self, recipients: Iterable[str], since: datetime) -> dict[str, int]:
        """Every requested recipient is in the answer, with 0 when it has no contacts."""
        counts = dict.fromkeys(recipients, 0)
        lookup = self._lookup_forms(counts)
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT recipient, count(*) FROM contacts"
                " WHERE recipient = ANY($1::text[]) AND time >= $2 GROUP BY recipient",
                list(lookup),
                utc(since),
            )
        for stored, n in rows:
            counts[lookup[stored]] += n
        return counts

    async def reserve_contact(
        self,
        recipient: str,
        channel: Channel,
        now: datetime,
        gateway_id: str,
        limits: Sequence[tuple[int, int]],
    ) -> bool:
        """The advisory lock on the recipient is held from before the count until the
        insert commits, in whichever replica holds it, so two replicas cannot both see room
        for the last contact. The lock is on the number itself, which stays in memory."""
        windows = contact_windows(now, limits)
        forms = list(self._lookup_forms([recipient]))
        async with self._transaction() as conn:
            if windows:
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))", CONTACT_LOCK_CLASS, recipient
                )
            inserted = await conn.fetchval(
                "INSERT INTO contacts (recipient, channel, time, gateway_id)"
                " SELECT $1, $2, $3, $4 WHERE NOT EXISTS ("
                "   SELECT 1 FROM unnest($5::bigint[], $6::timestamptz[]) AS w(cap, start)"
                "   WHERE (SELECT count(*) FROM contacts"
                "          WHERE recipient = ANY($7::text[]) AND time > w.start) >= w.cap)"
                " RETURNING id",
                forms[0],
                channel.value,
                utc(now),
                gateway_id,
                [limit for limit, _ in windows],
                [start for _, start in windows],
                forms,
            )
        return inserted is not None

    async def release_contact(self, recipient: str, gateway_id: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "DELETE FROM contacts WHERE recipient = ANY($1::text[]) AND gateway_id = $2",
                list(self._lookup_forms([recipient])),
                gateway_id,
            )

    async def notice_sent_at(self, recipients: Iterable[str]) -> dict[str, datetime]:
        """The latest notice per recipient (a row written before encryption may remain
        beside its sealed successor until the sealing pass)."""
        lookup = self._lookup_forms(dict.fromkeys(recipients))
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT recipient, sent_at FROM notices WHERE recipient = ANY($1::text[])",
                list(lookup),
            )
        found: dict[str, datetime] = {}
        for stored, at in rows:
            recipient = lookup[stored]
            found[recipient] = max(at, found.get(recipient, at))
        return found

    async def mark_notice_sent(self, recipient: str, at: datetime) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO notices (recipient, sent_at) VALUES ($1, $2)"
                " ON CONFLICT (recipient) DO UPDATE SET sent_at = excluded.sent_at",
                self._cipher.blind(recipient),
                utc(at),
            )
