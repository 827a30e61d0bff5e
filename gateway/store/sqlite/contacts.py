"""The contact ledger in SQLite: contacts counted against frequency caps, and opt-out
notices sent."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime

from gateway.model import Channel
from gateway.store.core import contact_windows
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import from_text, rows_for_keys, to_text, transaction


class SqliteContactLedger(SqliteConnection):
    async def contact_counts(self, recipients: Iterable[str], since: datetime) -> dict[str, int]:
        """Every requested recipient is in the answer, with 0 when it has no contacts."""
        unique = list(dict.fromkeys(recipients))
        return self._read_on_loop(lambda conn: _count_contacts(conn, unique, since))

    async def reserve_contact(
        self,
        recipient: str,
        channel: Channel,
        now: datetime,
        gateway_id: str,
        limits: Sequence[tuple[int, int]],
    ) -> bool:
        windows = contact_windows(now, limits)
        return await self._run(
            lambda conn: _reserve_contact(conn, recipient, channel, now, gateway_id, windows),
            batchable=True,
        )

    async def release_contact(self, recipient: str, gateway_id: str) -> None:
        await self._run(
            lambda conn: _delete_contact(conn, recipient, gateway_id),
            batchable=True, durable=False,
        )

    async def notice_sent_at(self, recipients: Iterable[str]) -> dict[str, datetime]:
        unique = list(dict.fromkeys(recipients))
        return self._read_on_loop(lambda conn: _select_notices(conn, unique))

    async def mark_notice_sent(self, recipient: str, at: datetime) -> None:
        await self._run(
            lambda conn: _upsert_notice(conn, recipient, at), batchable=True, durable=False
        )


def _count_contacts(
    conn: sqlite3.Connection, recipients: Sequence[str], since: datetime
) -> dict[str, int]:
    counts = dict.fromkeys(recipients, 0)
    with transaction(conn, write=False):
        rows = rows_for_keys(
            conn,
            "SELECT recipient, COUNT(*) FROM contacts"
            " WHERE time >= ? AND recipient IN ({keys}) GROUP BY recipient",
            recipients,
            [to_text(since)],
        )
        counts.update(rows)
    return counts


def _reserve_contact(
    conn: sqlite3.Connection,
    recipient: str,
    channel: Channel,
    now: datetime,
    gateway_id: str,
    windows: Sequence[tuple[int, datetime]],
) -> bool:
    """Count and insert inside one IMMEDIATE transaction: taking the write lock before
    counting is what stops two reservers (here or in another replica) from both seeing
    room for the last contact."""
    now_text = to_text(now)
    starts = [(limit, to_text(start)) for limit, start in windows]
    with transaction(conn, write=True):
        for limit, start in starts:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM contacts WHERE recipient = ? AND time > ?",
                (recipient, start),
            ).fetchone()
            if count >= limit:
                return False
        conn.execute(
            "INSERT INTO contacts (recipient, channel, time, gateway_id) VALUES (?, ?, ?, ?)",
            (recipient, channel.value, now_text, gateway_id),
        )
    return True


def _delete_contact(conn: sqlite3.Connection, recipient: str, gateway_id: str) -> None:
    with transaction(conn, write=True):
        conn.execute(
            "DELETE FROM contacts WHERE recipient = ? AND gateway_id = ?", (recipient, gateway_id)
        )


def _select_notices(conn: sqlite3.Connection, recipients: Sequence[str]) -> dict[str, datetime]:
    with transaction(conn, write=False):
        rows = rows_for_keys(
            conn, "SELECT recipient, sent_at FROM notices WHERE recipient IN ({keys})", recipients
        )
        return {recipient: from_text(sent_at) for recipient, sent_at in rows}


def _upsert_notice(conn: sqlite3.Connection, recipient: str, at: datetime) -> None:
    with transaction(conn, write=True):
        conn.execute(
            "INSERT INTO notices (recipient, sent_at) VALUES (?, ?)"
            " ON CONFLICT (recipient) DO UPDATE SET sent_at = excluded.sent_at",
            (recipient, to_text(at)),
        )
