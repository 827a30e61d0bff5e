"""The PostgreSQL store: shared state for several gateway replicas on one database.

Nothing is cached in memory: every decision reads the database, so an opt-out taken by one
replica is honored by every other on its next message (no LISTEN/NOTIFY needed), and a
consent recorded anywhere counts everywhere at once.

Correctness across processes comes from the database, never from this process:
- `reserve_contact` counts and inserts under a transaction-scoped advisory lock on the
  recipient, so two replicas cannot both see room for the last contact;
- audit appends (and prunes, purges) serialize on one advisory lock inside the inserting
  transaction, so the hash chain stays linear and id order is chain order;
- delivery claims are one INSERT ... ON CONFLICT, so exactly one claimant wins;
- migrations run under a session advisory lock, so replicas starting together apply each
  migration once.

Writers run at READ COMMITTED: after a lock is granted, the next statement's snapshot sees
everything committed by the lock's previous holder. Every driver, network or server error
becomes `StoreUnavailable` (fail closed); the pool replaces broken connections, so the store
recovers by itself once the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from gateway.model import (
    AuditEvent,
    BlockRecord,
    Channel,
    Consent,
    ConsentKind,
    KnownLocation,
    Reason,
    Suppression,
)
from gateway.store.audit_chain import GENESIS_HASH, entry_hash
from gateway.store.base import (
    ERASED_PREFIX,
    ERASED_SOURCE,
    AuditProblem,
    BlockQuery,
    ContactRow,
    DeliveryClaim,
    DeliveryRow,
    PersonalData,
    StoreUnavailable,
    erased_address,
)
from gateway.store.migrations import (
    VERSION_TABLE_DDL,
    Migration,
    discover_migrations,
    migration_directory,
    run_migrations_async,
)

# Advisory lock keys. The one-bigint and two-int key spaces never overlap; the class ids
# (first int) keep this application's locks apart from anything else on the database.
_MIGRATION_LOCK = 0x67_77_6D_69  # "gwmi"
_AUDIT_LOCK_CLASS = 0x67_77_61_75  # "gwau"
_CONTACT_LOCK_CLASS = 0x67_77_63_6F  # "gwco"

# Above this many entries an import is staged with COPY (far faster than parameters);
# below it, the batch travels as arrays in the statement itself, with no temp table.
_COPY_THRESHOLD = 5_000

# A bulk import may legitimately run far longer than any single decision's query.
_BULK_TIMEOUT_S = 3_600.0

_DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)

_BLOCK_COLUMNS = (
    "id, time, channel, account, sender, recipient, reasons_json, rules_version,"
    " message_id, subject, size, gateway_id, evidence_json"
)
_AUDIT_COLUMNS = "id, time, actor, action, subject, details_json, prev_hash, hash"
_CONSENT_COLUMNS = "subject, channel, kind, obtained_at, expires_at, source, evidence"
_SUPPRESSION_COLUMNS = "address, source, reason, actor, created_at"

_BATCH_COLUMNS = ("n", "address", "source", "reason", "actor", "created_at", "alias")
_BATCH_TABLE = "suppression_batch"
_BATCH_ARRAYS = (
    "unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],"
    " $6::timestamptz[], $7::text[]) AS b(" + ", ".join(_BATCH_COLUMNS) + ")"
)

# Which of the keys in $1 have a row: one primary-key probe per key (the key leads with
# address), so a lookup costs the same with ten million rows as with ten.
SUPPRESSED_QUERY = (
    "SELECT q.address FROM unnest($1::text[]) AS q(address)"
    " WHERE EXISTS (SELECT 1 FROM suppressions s WHERE s.address = q.address)"
)

# One statement over a batch relation ({batch}: the staged temp table or the arrays), so
# the count of new addresses and the upsert see one snapshot. DISTINCT ON keeps each
# (address, source)'s last entry, as applying the batch in order would, and inserts in key
# order, so two concurrent imports lock rows in the same order and cannot deadlock.
_UPSERT_BATCH = """
WITH batch AS MATERIALIZED (SELECT * FROM {batch}),
known AS (
    SELECT count(DISTINCT b.address) AS n FROM batch b
    WHERE EXISTS (SELECT 1 FROM suppressions s WHERE s.address = b.address)
       OR EXISTS (SELECT 1 FROM suppressions s WHERE s.address = b.alias)
),
upserted AS (
    INSERT INTO suppressions (address, source, reason, actor, created_at)
    SELECT DISTINCT ON (address, source) address, source, reason, actor, created_at
    FROM batch ORDER BY address, source, n DESC
    ON CONFLICT (address, source) DO UPDATE SET
        reason = excluded.reason,
        actor = excluded.actor,
        created_at = excluded.created_at
)
SELECT (SELECT count(DISTINCT address) FROM batch) - (SELECT n FROM known)
"""


class PostgresStore:
    """`Store` on a PostgreSQL database through an asyncpg connection pool."""

    def __init__(
        self,
        dsn: str,
        *,
        max_connections: int = 10,
        connect_timeout_s: float = 5.0,
        command_timeout_s: float = 30.0,
    ) -> None:
        self._dsn = dsn
        self._where = describe_dsn(dsn)
        self._max_connections = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._command_timeout_s = command_timeout_s
        self._pool: asyncpg.Pool | None = None
        self._closed = False
        self._erasure_key: bytes | None = None
        self.applied_migrations: list[Migration] = []

    async def open(self) -> None:
        """Connect and apply pending migrations: the migration run is the first query, so a
        wrong address, password or database name fails here, at start-up."""
        if self._closed:
            raise StoreUnavailable("store is closed")
        if self._pool is None:
            async with self._guarded():
                self._pool = await self._create_pool()
        self.applied_migrations = await self._migrate()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), self._connect_timeout_s)
            except (*_DATABASE_ERRORS, TimeoutError):
                self._pool.terminate()

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval("SELECT 1")

    async def suppressed(self, addresses: Iterable[str]) -> frozenset[str]:
        unique = list(dict.fromkeys(addresses))
        aliases = self._erased_aliases(unique)
        async with self._connection() as conn:
            return frozenset(await _suppressed_keys(conn, unique, aliases))

    async def add_suppressions(self, entries: Sequence[Suppression]) -> int:
        """One statement in one transaction, whatever the size: an import either lands
        whole or not at all. Large batches are staged with COPY into a temp table."""
        if not entries:
            return 0
        alias_of = {address: alias for alias, address in self._erased_aliases(
            dict.fromkeys(e.address for e in entries)).items()}
        rows = [
            (n, e.address, e.source, e.reason, e.actor, _utc(e.time), alias_of.get(e.address))
            for n, e in enumerate(entries)
        ]
        async with self._transaction() as conn:
            if len(rows) < _COPY_THRESHOLD:
                columns = [list(column) for column in zip(*rows, strict=True)]
                return await conn.fetchval(_UPSERT_BATCH.format(batch=_BATCH_ARRAYS), *columns)
            return await _upsert_staged(conn, rows)

    async def import_suppressions(
        self,
        addresses: Sequence[str],
        *,
        source: str,
        reason: str,
        actor: str,
        time: datetime,
        audit: Callable[[int], AuditEvent],
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Staged with COPY and upserted in one statement, with the audit entry in the same
        transaction. Erased aliases are hashed only when the table holds an erased row:
        hashing a million addresses takes seconds."""
        at = _utc(time)
        async with self._transaction() as conn:
            has_erased = self._erasure_key is not None and await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM suppressions WHERE address >= $1 AND address < $2)",
                ERASED_PREFIX,
                ERASED_PREFIX[:-1] + chr(ord(ERASED_PREFIX[-1]) + 1),
            )
            alias_of = (
                {a: alias for alias, a in self._erased_aliases(dict.fromkeys(addresses)).items()}
                if has_erased
                else {}
            )
            rows = [
                (n, address, source, reason, actor, at, alias_of.get(address))
                for n, address in enumerate(addresses)
            ]
            new = await _upsert_staged(conn, rows) if rows else 0
            if progress is not None:
                progress(len(rows))
            await _insert_audit(conn, audit(new))
        return new

    async def remove_suppressions(self, addresses: Iterable[str]) -> int:
        """Every source's row goes, an erased row too; counts addresses, not rows."""
        unique = list(dict.fromkeys(addresses))
        aliases = self._erased_aliases(unique)
        async with self._transaction() as conn:
            existed = len(await _suppressed_keys(conn, unique, aliases))
            await conn.execute(
                "DELETE FROM suppressions WHERE address = ANY($1::text[])", [*unique, *aliases]
            )
        return existed

    async def list_suppressions(self) -> list[Suppression]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions ORDER BY address, source"
            )
        return [_suppression_from_row(row) for row in rows]

    async def count_suppressed(self) -> int:
        async with self._connection() as conn:
            # DISTINCT in a subquery reads the primary key's index in order (an index-only
            # scan); count(DISTINCT) sorts every row first: 2.1 s against 2.8 s at 10 M.
            return await conn.fetchval(
                "SELECT count(*) FROM (SELECT DISTINCT address FROM suppressions) AS addresses"
            )

    async def remove_suppressions_from_source(self, addresses: Iterable[str], source: str) -> int:
        async with self._connection() as conn:
            status = await conn.execute(
                "DELETE FROM suppressions WHERE address = ANY($1::text[]) AND source = $2",
                list(addresses),
                source,
            )
        return _affected(status)

    async def remove_suppressions_with_source_prefix(
        self, addresses: Iterable[str], prefix: str
    ) -> int:
        async with self._connection() as conn:
            status = await conn.execute(
                "DELETE FROM suppressions"
                " WHERE address = ANY($1::text[]) AND starts_with(source, $2)",
                list(addresses),
                prefix,
            )
        return _affected(status)

    async def add_consents(self, consents: Sequence[Consent]) -> int:
        """An ignored duplicate inserts nothing, so the inserted rows are the new ones."""
        if not consents:
            return 0
        columns = list(zip(*(_consent_values(c) for c in consents), strict=True))
        async with self._connection() as conn:
            status = await conn.execute(
                f"INSERT INTO consents ({_CONSENT_COLUMNS})"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[],"
                " $5::timestamptz[], $6::text[], $7::text[])"
                " ON CONFLICT (subject, channel, kind, obtained_at) DO NOTHING",
                *map(list, columns),
            )
        return _affected(status)

    async def consents_for(self, subjects: Iterable[str]) -> dict[str, tuple[Consent, ...]]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_CONSENT_COLUMNS} FROM consents WHERE subject = ANY($1::text[])"
                " ORDER BY subject, obtained_at, channel, kind",
                list(dict.fromkeys(subjects)),
            )
        found: dict[str, list[Consent]] = {}
        for row in rows:
            consent = _consent_from_row(row)
            found.setdefault(consent.subject, []).append(consent)
        return {subject: tuple(consents) for subject, consents in found.items()}

    async def known_locations(self, numbers: Iterable[str]) -> dict[str, KnownLocation]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT number, timezone, latitude, longitude, region, postal_code"
                " FROM known_locations WHERE number = ANY($1::text[])",
                list(dict.fromkeys(numbers)),
            )
        return {row["number"]: KnownLocation(*tuple(row)[1:]) for row in rows}

    async def set_known_location(self, number: str, location: KnownLocation) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO known_locations"
                " (number, timezone, latitude, longitude, region, postal_code)"
                " VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (number) DO UPDATE SET timezone = excluded.timezone,"
                " latitude = excluded.latitude, longitude = excluded.longitude,"
                " region = excluded.region, postal_code = excluded.postal_code",
                number,
                location.timezone,
                location.latitude,
                location.longitude,
                location.region,
                location.postal_code,
            )

    async def contact_counts(self, recipients: Iterable[str], since: datetime) -> dict[str, int]:
        """Every requested recipient is in the answer, with 0 when it has no contacts."""
        counts = dict.fromkeys(recipients, 0)
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT recipient, count(*) FROM contacts"
                " WHERE recipient = ANY($1::text[]) AND time >= $2 GROUP BY recipient",
                list(counts),
                _utc(since),
            )
        counts.update((recipient, n) for recipient, n in rows)
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
        insert commits, in whichever replica holds it. Contacts stamped after `now` count
        too: a replica whose clock runs ahead must not let a slower one exceed the cap."""
        now = _utc(now)
        starts = [now - timedelta(seconds=window_s) for _, window_s in limits]
        async with self._transaction() as conn:
            if limits:
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))", _CONTACT_LOCK_CLASS, recipient
                )
            inserted = await conn.fetchval(
                "INSERT INTO contacts (recipient, channel, time, gateway_id)"
                " SELECT $1, $2, $3, $4 WHERE NOT EXISTS ("
                "   SELECT 1 FROM unnest($5::bigint[], $6::timestamptz[]) AS w(cap, start)"
                "   WHERE (SELECT count(*) FROM contacts"
                "          WHERE recipient = $1 AND time > w.start) >= w.cap)"
                " RETURNING id",
                recipient,
                channel.value,
                now,
                gateway_id,
                [limit for limit, _ in limits],
                starts,
            )
        return inserted is not None

    async def release_contact(self, recipient: str, gateway_id: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "DELETE FROM contacts WHERE recipient = $1 AND gateway_id = $2",
                recipient,
                gateway_id,
            )

    async def notice_sent_at(self, recipients: Iterable[str]) -> dict[str, datetime]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT recipient, sent_at FROM notices WHERE recipient = ANY($1::text[])",
                list(dict.fromkeys(recipients)),
            )
        return {recipient: sent_at for recipient, sent_at in rows}

    async def mark_notice_sent(self, recipient: str, at: datetime) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO notices (recipient, sent_at) VALUES ($1, $2)"
                " ON CONFLICT (recipient) DO UPDATE SET sent_at = excluded.sent_at",
                recipient,
                _utc(at),
            )

    async def record_block(self, record: BlockRecord) -> int:
        async with self._connection() as conn:
            return await conn.fetchval(
                "INSERT INTO blocks (time, channel, account, sender, recipient, reasons_json,"
                " reason_codes, rules_version, message_id, subject, size, gateway_id,"
                " evidence_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                " RETURNING id",
                _utc(record.time),
                record.channel.value,
                record.account,
                record.sender,
                record.recipient,
                json.dumps([reason.as_dict() for reason in record.reasons]),
                "," + "".join(f"{reason.code}," for reason in record.reasons),
                record.rules_version,
                record.message_id,
                record.subject,
                record.size,
                record.gateway_id,
                json.dumps(dict(record.evidence), sort_keys=True, default=str),
            )

    async def query_blocks(self, query: BlockQuery) -> list[BlockRecord]:
        where = _BlockFilter(query)
        limit = where.bind(query.limit)
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_BLOCK_COLUMNS} FROM blocks {where.sql}"
                f" ORDER BY time DESC, id DESC LIMIT {limit}",
                *where.values,
            )
        return [_block_from_row(row) for row in rows]

    async def get_block(self, block_id: int) -> BlockRecord | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {_BLOCK_COLUMNS} FROM blocks WHERE id = $1", block_id
            )
        return None if row is None else _block_from_row(row)

    async def block_counts(
        self, since: datetime | None, until: datetime | None
    ) -> list[tuple[str, str, int]]:
        """Counting distinct block ids makes a code repeated within one block count once."""
        where = _BlockFilter(BlockQuery(since=since, until=until))
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT channel, code, count(DISTINCT id) FROM blocks,"
                " unnest(string_to_array(trim(both ',' from reason_codes), ',')) AS code"
                f" {where.sql} {'AND' if where.sql else 'WHERE'} code <> ''"
                ' GROUP BY channel, code ORDER BY channel, code COLLATE "C"',
                *where.values,
            )
        return [(channel, code, n) for channel, code, n in rows]

    async def block_series(
        self, since: datetime | None, until: datetime | None, bucket_s: int
    ) -> list[tuple[datetime, int]]:
        if bucket_s <= 0:
            raise ValueError(f"bucket_s must be positive, not {bucket_s}")
        where = _BlockFilter(BlockQuery(since=since, until=until))
        size = where.bind(bucket_s)
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT (floor(extract(epoch FROM time) / {size}::bigint) * {size}::bigint)"
                "::bigint AS bucket,"
                f" count(*) FROM blocks {where.sql} GROUP BY bucket ORDER BY bucket",
                *where.values,
            )
        return [(datetime.fromtimestamp(bucket, UTC), n) for bucket, n in rows]

    async def claim_delivery(
        self, delivery_key: str, recipient: str, now: datetime, stale_after_s: float
    ) -> DeliveryClaim:
        """One INSERT ... ON CONFLICT decides, so of any number of claimants in any number
        of replicas exactly one wins; a stale pending claim is taken over in the same
        statement. A loser then reads what it lost to."""
        now = _utc(now)
        stale_before = now - timedelta(seconds=stale_after_s)
        async with self._transaction() as conn:
            claimed = await conn.fetchval(
                "INSERT INTO deliveries (delivery_key, recipient, state, claimed_at)"
                " VALUES ($1, $2, 'pending', $3)"
                " ON CONFLICT (delivery_key, recipient) DO UPDATE SET claimed_at = $3"
                " WHERE deliveries.state = 'pending' AND deliveries.claimed_at <= $4"
                " RETURNING true",
                delivery_key,
                recipient,
                now,
                stale_before,
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

    async def append_audit(self, event: AuditEvent) -> AuditEvent:
        async with self._transaction() as conn:
            return await _insert_audit(conn, event)

    async def audit_events(self) -> list[AuditEvent]:
        async with self._connection() as conn:
            rows = await conn.fetch(f"SELECT {_AUDIT_COLUMNS} FROM audit ORDER BY id")
        return [_audit_from_row(row) for row in rows]

    async def verify_audit(self) -> AuditProblem | None:
        """One snapshot (REPEATABLE READ), so appends and prunes running meanwhile cannot
        make intact entries look broken. The chain starts at the anchor a prune left."""
        async with self._transaction(snapshot=True) as conn:
            expected_prev = await _audit_anchor(conn)
            previous_id: int | None = None
            async for row in conn.cursor(f"SELECT {_AUDIT_COLUMNS} FROM audit ORDER BY id"):
                if not _audit_row_hash_matches(row):
                    return AuditProblem(row["id"], "content does not match its hash")
                if row["prev_hash"] != expected_prev:
                    if previous_id is None:
                        return AuditProblem(row["id"], "first entry does not start the chain")
                    return AuditProblem(row["id"], f"does not follow entry {previous_id}")
                expected_prev, previous_id = row["hash"], row["id"]
        return None

    async def use_erasure_key(self, key: bytes) -> None:
        """The first key used is fingerprinted in the database (shared by every replica);
        another key later is refused, because erased people's opt-outs would silently
        stop matching."""
        if not key:
            raise ValueError("the erasure key must not be empty")
        fingerprint = hmac.new(key, b"erasure-key-fingerprint", hashlib.sha256).hexdigest()
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO settings (name, value) VALUES ('erasure_key_fingerprint', $1)"
                " ON CONFLICT (name) DO NOTHING",
                fingerprint,
            )
            stored = await conn.fetchval(
                "SELECT value FROM settings WHERE name = 'erasure_key_fingerprint'"
            )
        if not hmac.compare_digest(stored, fingerprint):
            raise StoreUnavailable(
                "the erasure key differs from the one this database's erased opt-outs were "
                "written with; restore privacy.erasure_key (or data_dir/erasure-key)"
            )
        self._erasure_key = key

    async def personal_data(self, key: str) -> PersonalData:
        erased = erased_address(self._erasure_key, key) if self._erasure_key else key
        match = _subject_match(key)
        async with self._transaction(snapshot=True) as conn:
            suppressions = [
                _suppression_from_row(row)
                for row in await conn.fetch(
                    f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions"
                    " WHERE address IN ($1, $2) ORDER BY address, source",
                    key,
                    erased,
                )
            ]
            consents = await conn.fetch(
                f"SELECT {_CONSENT_COLUMNS} FROM consents WHERE {match('subject')}"
                " ORDER BY obtained_at",
                key,
            )
            location = await conn.fetchrow(
                "SELECT timezone, latitude, longitude, region, postal_code"
                " FROM known_locations WHERE number = $1",
                key,
            )
            blocks = await conn.fetch(
                f"SELECT {_BLOCK_COLUMNS} FROM blocks WHERE {_block_match(key)}"
                " ORDER BY time DESC, id DESC",
                key,
            )
            contacts = await conn.fetch(
                f"SELECT channel, time, gateway_id FROM contacts WHERE {match('recipient')}"
                " ORDER BY time",
                key,
            )
            notice = await conn.fetchval(
                f"SELECT sent_at FROM notices WHERE {match('recipient')}", key
            )
            deliveries = await conn.fetch(
                "SELECT delivery_key, recipient, state, claimed_at, upstream_id"
                f" FROM deliveries WHERE {match('recipient')} ORDER BY claimed_at",
                key,
            )
            audit = await conn.fetch(
                f"SELECT {_AUDIT_COLUMNS} FROM audit"
                " WHERE strpos(subject, $1) > 0 ORDER BY id",
                key,
            )
        return PersonalData(
            key=key,
            suppressions=tuple(s for s in suppressions if s.address == key),
            erased_suppressions=tuple(s for s in suppressions if s.address != key),
            consents=tuple(_consent_from_row(row) for row in consents),
            known_location=KnownLocation(*location) if location else None,
            blocks=tuple(_block_from_row(row) for row in blocks),
            contacts=tuple(
                ContactRow(Channel(channel), time, gateway_id)
                for channel, time, gateway_id in contacts
            ),
            notice_sent_at=notice,
            deliveries=tuple(DeliveryRow(*row) for row in deliveries),
            audit=tuple(_audit_from_row(row) for row in audit),
        )

    async def erase_personal_data(self, key: str, now: datetime, actor: str) -> dict[str, int]:
        """One transaction: a crash leaves either the person's data with their opt-out, or
        the erased row alone, never neither."""
        if self._erasure_key is None:
            raise ValueError("no erasure key: call use_erasure_key first")
        match = _subject_match(key)
        deletes = {
            "blocks": f"DELETE FROM blocks WHERE {_block_match(key)}",
            "consents": f"DELETE FROM consents WHERE {match('subject')}",
            "known_locations": "DELETE FROM known_locations WHERE number = $1",
            "contacts": f"DELETE FROM contacts WHERE {match('recipient')}",
            "notices": f"DELETE FROM notices WHERE {match('recipient')}",
            "deliveries": f"DELETE FROM deliveries WHERE {match('recipient')}",
            "suppressions": "DELETE FROM suppressions WHERE address = $1",
        }
        async with self._transaction() as conn:
            counts = {table: _affected(await conn.execute(sql, key))
                      for table, sql in deletes.items()}
            if counts["suppressions"]:
                await _insert_erased(
                    conn, [erased_address(self._erasure_key, key)], "erased on request",
                    actor, now,
                )
        return counts

    async def clear_block_metadata(self, before: datetime) -> int:
        async with self._connection() as conn:
            return _affected(await conn.execute(
                "UPDATE blocks SET subject = '', message_id = ''"
                " WHERE time < $1 AND (subject <> '' OR message_id <> '')",
                _utc(before),
            ))

    async def delete_blocks(self, before: datetime) -> int:
        async with self._connection() as conn:
            return _affected(await conn.execute("DELETE FROM blocks WHERE time < $1", _utc(before)))

    async def prune_audit(self, before: datetime) -> int:
        """Entries are removed by id, as a prefix, under the append lock: an entry older
        than `before` that follows a newer one (a clock stepped back) stays until the newer
        one ages out."""
        async with self._transaction() as conn:
            await _lock_audit_chain(conn)
            last = await conn.fetchrow(
                "SELECT id, hash FROM audit"
                " WHERE id < coalesce((SELECT min(id) FROM audit WHERE time >= $1),"
                "                     (SELECT max(id) + 1 FROM audit))"
                " ORDER BY id DESC LIMIT 1",
                _utc(before),
            )
            if last is None:
                return 0
            await conn.execute(
                "INSERT INTO audit_anchor (id, entry_id, hash, pruned_at) VALUES (1, $1, $2, now())"
                " ON CONFLICT (id) DO UPDATE SET entry_id = excluded.entry_id,"
                " hash = excluded.hash, pruned_at = excluded.pruned_at",
                last["id"],
                last["hash"],
            )
            return _affected(await conn.execute("DELETE FROM audit WHERE id <= $1", last["id"]))

    async def purge(self, event: AuditEvent) -> AuditEvent:
        """Everything goes in one transaction with the purge entry, so the log never shows a
        purge that did not happen or misses one that did. Opt-outs survive as keyed hashes,
        as after an erasure: a purge must never make an opted-out person reachable again."""
        if self._erasure_key is None:
            raise StoreUnavailable("purge needs the erasure key, to keep opt-outs as hashes")
        key = self._erasure_key
        async with self._transaction() as conn:
            await _lock_audit_chain(conn)
            kept = {
                address if address.startswith(ERASED_PREFIX) else erased_address(key, address)
                for (address,) in await conn.fetch("SELECT DISTINCT address FROM suppressions")
            }
            for table in _PURGED_TABLES:
                await conn.execute(f"DELETE FROM {table}")
            await _insert_erased(
                conn, sorted(kept), "kept through a workspace purge", event.actor, event.time
            )
            return await _insert_audit(conn, event)

    def _erased_aliases(self, addresses: Iterable[str]) -> dict[str, str]:
        """Keyed hash -> address, so an erased row answers for its address (empty without
        a key: then no erased row can exist that this store wrote)."""
        if self._erasure_key is None:
            return {}
        return {erased_address(self._erasure_key, address): address for address in addresses}

    async def _create_pool(self) -> asyncpg.Pool:
        """No floor of idle connections: asyncpg would keep reconnecting in the background
        (and logging each failure) while the database is down; callers reconnect anyway."""
        return await asyncpg.create_pool(
            self._dsn,
            min_size=0,
            max_size=self._max_connections,
            timeout=self._connect_timeout_s,
            command_timeout=self._command_timeout_s,
            server_settings={"application_name": "compliance-gateway", "jit": "off"},
        )

    async def _migrate(self) -> list[Migration]:
        """Under a session advisory lock, so replicas starting at once apply each
        migration exactly once (the others wait, then find nothing pending)."""
        migrations = discover_migrations(migration_directory("postgres"))
        async with self._connection() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
            try:
                return await run_migrations_async(PostgresMigrationTarget(conn), migrations)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; any database failure inside becomes StoreUnavailable."""
        if self._closed:
            raise StoreUnavailable("store is closed")
        if self._pool is None:
            raise StoreUnavailable("store is not open")
        pool = self._pool
        async with self._guarded():
            async with pool.acquire(timeout=self._command_timeout_s) as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def _transaction(self, *, snapshot: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """Writers run at READ COMMITTED (see the module docstring); readers that need one
        consistent view of several queries get a read-only REPEATABLE READ snapshot."""
        async with self._connection() as conn:
            isolation = "repeatable_read" if snapshot else "read_committed"
            async with conn.transaction(isolation=isolation, readonly=snapshot):
                yield conn

    @contextlib.asynccontextmanager
    async def _guarded(self) -> AsyncIterator[None]:
        try:
            yield
        except _DATABASE_ERRORS as exc:
            raise StoreUnavailable(f"PostgreSQL at {self._where}: {_error_text(exc)}") from exc


class PostgresMigrationTarget:
    """Runs migrations on one connection; each migration is one transaction."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def ensure_version_table(self) -> None:
        await self._connection.execute(VERSION_TABLE_DDL)

    async def applied_versions(self) -> set[int]:
        rows = await self._connection.fetch("SELECT version FROM schema_migrations")
        return {version for (version,) in rows}

    async def apply(self, migration: Migration) -> bool:
        conn = self._connection
        async with conn.transaction():
            if await conn.fetchval(
                "SELECT 1 FROM schema_migrations WHERE version = $1", migration.version
            ):
                return False
            try:
                await conn.execute(migration.sql)
            except asyncpg.PostgresError as exc:
                raise StoreUnavailable(
                    f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                ) from exc
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                datetime.now(UTC).isoformat(timespec="microseconds"),
            )
        return True


def describe_dsn(dsn: str) -> str:
    """user@host:port/database, for messages: never the password."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = parts.hostname or query.get("host", ["localhost"])[0]
    port = parts.port or int(query.get("port", ["5432"])[0])
    user = unquote(parts.username or query.get("user", [""])[0])
    database = unquote(parts.path.lstrip("/")) or user
    return f"{user + '@' if user else ''}{host}:{port}/{database}"


def _error_text(exc: BaseException) -> str:
    """The server's or driver's own words; a socket error says the server is unreachable."""
    text = str(exc) or type(exc).__name__
    return f"server unreachable ({text})" if isinstance(exc, OSError) else text


async def _suppressed_keys(
    conn: asyncpg.Connection, addresses: Sequence[str], aliases: Mapping[str, str]
) -> set[str]:
    """The addresses with a row of their own or an erased row (`aliases` maps each
    address's keyed hash back to it). One index probe per key on the primary key."""
    rows = await conn.fetch(SUPPRESSED_QUERY, [*addresses, *aliases])
    return {aliases.get(address, address) for (address,) in rows}


async def _upsert_staged(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> int:
    """COPY the batch into a temp table (dropped at commit), then one upsert from it, with
    memory enough to sort a million rows without spilling to disk."""
    await conn.execute("SET LOCAL work_mem = '256MB'")
    await conn.execute(
        f"CREATE TEMP TABLE {_BATCH_TABLE} (n bigint, address text COLLATE \"C\","
        " source text COLLATE \"C\", reason text, actor text, created_at timestamptz,"
        " alias text COLLATE \"C\") ON COMMIT DROP"
    )
    await conn.copy_records_to_table(
        _BATCH_TABLE, records=rows, columns=_BATCH_COLUMNS, timeout=_BULK_TIMEOUT_S
    )
    await conn.execute(f"ANALYZE {_BATCH_TABLE}")
    return await conn.fetchval(
        _UPSERT_BATCH.format(batch=_BATCH_TABLE), timeout=_BULK_TIMEOUT_S
    )


async def _insert_erased(
    conn: asyncpg.Connection, addresses: Sequence[str], reason: str, actor: str, at: datetime
) -> None:
    await conn.execute(
        f"INSERT INTO suppressions ({_SUPPRESSION_COLUMNS})"
        " SELECT address, $2, $3, $4, $5 FROM unnest($1::text[]) AS a(address)"
        " ON CONFLICT (address, source) DO UPDATE SET reason = excluded.reason,"
        " actor = excluded.actor, created_at = excluded.created_at",
        list(addresses),
        ERASED_SOURCE,
        reason,
        actor,
        _utc(at),
    )


async def _lock_audit_chain(conn: asyncpg.Connection) -> None:
    """Held until the transaction ends; every writer of the chain takes it first."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, 0)", _AUDIT_LOCK_CLASS)


async def _insert_audit(conn: asyncpg.Connection, event: AuditEvent) -> AuditEvent:
    """The event is hashed as it will read back (UTC time, details through canonical JSON),
    so `verify_audit` recomputes the same hash from the stored row. The chain lock is taken
    before reading the last hash, so the link cannot go stale in any replica."""
    details_json = json.dumps(event.details, sort_keys=True, separators=(",", ":"), default=str)
    stored = AuditEvent(
        time=_utc(event.time),
        actor=event.actor,
        action=event.action,
        subject=event.subject,
        details=json.loads(details_json),
    )
    await _lock_audit_chain(conn)
    prev_hash = await conn.fetchval(
        "SELECT hash FROM audit ORDER BY id DESC LIMIT 1"
    ) or await _audit_anchor(conn)
    digest = entry_hash(prev_hash, stored)
    entry_id = await conn.fetchval(
        "INSERT INTO audit (time, actor, action, subject, details_json, prev_hash, hash)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        stored.time,
        stored.actor,
        stored.action,
        stored.subject,
        details_json,
        prev_hash,
        digest,
    )
    return replace(stored, id=entry_id, prev_hash=prev_hash, hash=digest)


async def _audit_anchor(conn: asyncpg.Connection) -> str:
    """The hash the first remaining audit entry links to: the last pruned entry's, or
    GENESIS when nothing was ever pruned (or since the last purge)."""
    return await conn.fetchval("SELECT hash FROM audit_anchor WHERE id = 1") or GENESIS_HASH


def _audit_from_row(row: asyncpg.Record) -> AuditEvent:
    return AuditEvent(
        time=row["time"],
        actor=row["actor"],
        action=row["action"],
        subject=row["subject"],
        details=json.loads(row["details_json"]),
        id=row["id"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


def _audit_row_hash_matches(row: asyncpg.Record) -> bool:
    """A row edited into something unreadable (bad JSON) is tampered too."""
    try:
        event = _audit_from_row(row)
    except (ValueError, TypeError):
        return False
    return entry_hash(event.prev_hash, event) == event.hash


_PURGED_TABLES = (
    "suppressions", "blocks", "consents", "known_locations", "contacts", "notices",
    "deliveries", "audit", "audit_anchor",
)


class _BlockFilter:
    """The WHERE clause for a block query, with its parameters numbered as bound."""

    def __init__(self, query: BlockQuery) -> None:
        self.values: list[object] = []
        clauses: list[str] = []
        if query.since is not None:
            clauses.append(f"time >= {self.bind(_utc(query.since))}")
        if query.until is not None:
            clauses.append(f"time < {self.bind(_utc(query.until))}")
        if query.reason is not None:
            clauses.append(f"strpos(reason_codes, {self.bind(f',{query.reason},')}) > 0")
        for column, value in (
            ("channel", query.channel),
            ("account", query.account),
            ("recipient", query.recipient),
        ):
            if value is not None:
                clauses.append(f"{column} = {self.bind(str(value))}")
        if query.before_id is not None:
            # If the cursor's block was erased meanwhile, the id alone still moves the walk on.
            cursor = self.bind(query.before_id)
            clauses.append(
                f"((time, id) < (SELECT time, id FROM blocks WHERE id = {cursor})"
                f" OR (NOT EXISTS (SELECT 1 FROM blocks WHERE id = {cursor}) AND id < {cursor}))"
            )
        self.sql = f"WHERE {' AND '.join(clauses)}" if clauses else ""

    def bind(self, value: object) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


# Emails are recorded as the agent wrote them ('Bob@Example.com'); their keys are lower
# case, so email rows match without case. Numbers are recorded in E.164 and match exactly.
# The key is always parameter $1.
def _subject_match(key: str) -> Callable[[str], str]:
    def match(column: str) -> str:
        return f"lower({column}) = $1" if "@" in key else f"{column} = $1"

    return match


def _block_match(key: str) -> str:
    """A person's blocks: as recipient, and for emails also as sender."""
    match = _subject_match(key)
    return f"({match('recipient')} OR {match('sender')})" if "@" in key else match("recipient")


def _block_from_row(row: asyncpg.Record) -> BlockRecord:
    return BlockRecord(
        time=row["time"],
        channel=Channel(row["channel"]),
        account=row["account"],
        sender=row["sender"],
        recipient=row["recipient"],
        reasons=tuple(Reason(**reason) for reason in json.loads(row["reasons_json"])),
        rules_version=row["rules_version"],
        message_id=row["message_id"],
        subject=row["subject"],
        size=row["size"],
        gateway_id=row["gateway_id"],
        evidence=json.loads(row["evidence_json"]),
        id=row["id"],
    )


def _suppression_from_row(row: asyncpg.Record) -> Suppression:
    address, source, reason, actor, created_at = row
    return Suppression(address, source, reason, created_at, actor)


def _consent_values(consent: Consent) -> tuple[object, ...]:
    return (
        consent.subject,
        consent.channel.value,
        consent.kind.value,
        _utc(consent.obtained_at),
        None if consent.expires_at is None else _utc(consent.expires_at),
        consent.source,
        consent.evidence,
    )


def _consent_from_row(row: asyncpg.Record) -> Consent:
    subject, channel, kind, obtained_at, expires_at, source, evidence = row
    return Consent(
        subject=subject,
        channel=Channel(channel),
        kind=ConsentKind(kind),
        obtained_at=obtained_at,
        expires_at=expires_at,
        source=source,
        evidence=evidence,
    )


def _affected(status: str) -> int:
    """Rows a command touched, from its status tag ('DELETE 3', 'INSERT 0 2')."""
    return int(status.rsplit(" ", 1)[-1])


def _utc(moment: datetime) -> datetime:
    """asyncpg would take a naive time as UTC; the SQLite store refuses one, and so does
    this one (a naive time is a bug upstream, not a fact to store)."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: the store keeps UTC times only")
    return moment.astimezone(UTC)
