"""A data subject's export and erasure, and a workspace purge, in PostgreSQL; which rows
are a person's and which tables each touches are erasure.py's rules."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from gateway.model import AuditEvent, Suppression
from gateway.store.base import PersonalData
from gateway.store.core import SUPPRESSION_COLUMNS, suppression_values, utc
from gateway.store.erasure import (
    PURGED_TABLES,
    ErasureKey,
    erase_statements,
    export_statements,
    exported,
    purge_survivors,
)
from gateway.store.postgres.audit import insert_audit, lock_audit_chain
from gateway.store.postgres.connection import Numbered, PostgresConnection, affected, read_time


class PostgresPrivacy(PostgresConnection, ErasureKey):
    _stored_time = staticmethod(read_time)

    async def personal_data(self, key: str, mailbox: str = "") -> PersonalData:
        statements = export_statements(
            key, self._person_aliases(key, mailbox), Numbered, self._cipher, mailbox
        )
        async with self._transaction(snapshot=True) as conn:
            rows = {
                field: await conn.fetch(sql, *values)
                for field, (sql, values) in statements.items()
            }
        read = self._suppression_reader(self._lookup_forms([key, mailbox]))
        return exported(key, rows, read_time, self._cipher, read)

    async def erase_personal_data(
        self, key: str, now: datetime, actor: str, mailbox: str = ""
    ) -> dict[str, int]:
        """One transaction: a crash leaves either the person's data with their opt-out, or
        the erased row alone, never neither."""
        erased = self._erasure_row(key, now, actor, mailbox)
        async with self._transaction() as conn:
            counts = {
                table: affected(await conn.execute(sql, *values))
                for table, (sql, values) in erase_statements(
                    key, Numbered, self._cipher, mailbox
                ).items()
            }
            if counts["suppressions"]:
                await self._upsert_suppressions(conn, [erased])
        return counts

    async def purge(self, event: AuditEvent) -> AuditEvent:
        """Everything goes in one transaction with the purge entry, so the log never shows a
        purge that did not happen or misses one that did."""
        key = self._purge_key()
        async with self._transaction() as conn:
            await lock_audit_chain(conn)
            read = self._suppression_reader({})
            kept = purge_survivors(
                map(read, await conn.fetch(f"SELECT {SUPPRESSION_COLUMNS} FROM suppressions")),
                key,
                event,
            )
            for table in PURGED_TABLES:
                await conn.execute(f"DELETE FROM {table}")
            await self._upsert_suppressions(conn, kept)
            return await insert_audit(conn, event, self._cipher)

    async def _upsert_suppressions(
        self, conn: asyncpg.Connection, rows: Sequence[Suppression]
    ) -> None:
        """Erased rows: their keyed hashes are stored as they are, with no sealed copy."""
        values = [suppression_values(row, utc(row.time), self._cipher) for row in rows]
        if not values:
            return
        await conn.execute(
            f"INSERT INTO suppressions ({SUPPRESSION_COLUMNS})"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
            " $5::timestamptz[], $6::text[], $7::text[], $8::text[], $9::boolean[])"
            " ON CONFLICT (address, source) DO UPDATE SET reason = excluded.reason,"
            " actor = excluded.actor, created_at = excluded.created_at,"
            " mailbox = excluded.mailbox, address_sealed = excluded.address_sealed,"
            " mailbox_sealed = excluded.mailbox_sealed, is_email = excluded.is_email",
            *map(list, zip(*values, strict=True)),
        )
