"""The contact ledger in SQLite: contacts counted against frequency caps, and opt-out
notices sent. Recipients are stored as blind indexes, only ever looked up by a number the
caller knows (a row written before encryption holds it in clear and is found too)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from gateway.model import Channel
from gateway.store.core import contact_windows
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import from_text, rows_for_stored_forms, to_text, transaction


class SqliteContactLedger(SqliteConnection):
    async def contact_counts(self, recipients: Iterable[str], since: datetime) -> dict[str, int]:
        """Every requested recipient is in the answer, with 0 when it has no contacts."""
        lookup = self._lookup_forms(dict.fromkeys(recipients))
        counts = dict.fromkeys(recipients, 0)
        for stored, n in self._read_on_loop(lambda conn: _count_contacts(conn, lookup, since)):
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
        windows = contact_windows(now, limits)
        forms = list(self._lookup_forms([recipient]))
        return await self._run(
            lambda conn: _reserve_contact(conn, forms, channel, now, gateway_id, windows),
            batchable=True,
        )

    async def release_contact(self, recipient: str, gateway_id: str) -> None:
        forms = list(self._lookup_forms([recipient]))
        await self._run(
            lambda conn: _delete_contact(conn, forms, gateway_id),
            batchable=True, durable=False,
        )

    async def notice_sent_at(self, recipients: Iterable[str]) -> dict[str, datetime]:
        """The latest notice per recipient (a row written before encryption may remain
        beside its sealed successor until the sealing pass)."""
        lookup = self._lookup_forms(dict.fromkeys(recipients))
        found: dict[str, datetime] = {}
        for stored, at in self._read_on_loop(lambda conn: _select_notices(conn, list(lookup))):
            recipient = lookup[stored]
            found[recipient] = max(at, found.get(recipient, at))
        return found

    async def mark_notice_sent(self, recipient: str, at: datetime) -> None:
        stored = self._cipher.blind(recipient)
        await self._run(
            lambda conn: _upsert_notice(conn, stored, at), batchable=True, durable=False
        )


def _count_contacts(
    conn: sqlite3.Connection, lookup: Mapping[str, str], since: datetime
) -> list[tuple[str, int]]:
    """(stored recipient, contacts since `since`) for each stored form with any."""
    with transaction(conn, write=False):
        return list(rows_for_stored_forms(
            conn,
            "SELECT recipient, COUNT(*) FROM contacts"
            " WHERE time >= ? AND recipient IN ({keys}) GROUP BY recipient",
            list(lookup),
            [to_text(since)],
        ))


def _reserve_contact(
    conn: sqlite3.Connection,
    forms: Sequence[str],
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
            count = sum(n for (n,) in rows_for_stored_forms(
                conn, "SELECT COUNT(*) FROM contacts WHERE time > ? AND recipient IN ({keys})",
                forms, [start],
            ))
            if count >= limit:
                return False
        conn.execute(
            "INSERT INTO contacts (recipient, channel, time, gateway_id) VALUES (?, ?, ?, ?)",
            (forms[0], channel.value, now_text, gateway_id),
        )
    return True


def _delete_contact(conn: sqlite3.Connection, forms: Sequence[str], gateway_id: str) -> None:
    among = ", ".join("?" * len(forms))
    with transaction(conn, write=True):
        conn.execute(
            f"DELETE FROM contacts WHERE recipient IN ({among}) AND gateway_id = ?",
            (*forms, gateway_id),
        )


def _select_notices(
    conn: sqlite3.Connection, stored: Sequence[str]
) -> list[tuple[str, datetime]]:
    with transaction(conn, write=False):
        rows = rows_for_stored_forms(
            conn, "SELECT recipient, sent_at FROM notices WHERE recipient IN ({keys})", stored
        )
        return [(recipient, from_text(sent_at)) for recipient, sent_at in rows]


def _upsert_notice(conn: sqlite3.Connection, recipient: str, at: datetime) -> None:
    with transaction(conn, write=True):
        conn.execute(
            "INSERT INTO notices (recipient, sent_at) VALUES (?, ?)"
            " ON CONFLICT (recipient) DO UPDATE SET sent_at = excluded.sent_at",
            (recipient, to_text(at)),
        )
