"""The SQLite store: one database file, one connection, one worker thread.

sqlite3 calls block, so the connection lives on a dedicated thread (`StoreWorker`) and every
method runs its SQL there; that also serializes this process's writers without extra locks.
Write transactions begin IMMEDIATE, so writers in other processes queue instead of failing on
a stale snapshot; they queue on a file lock first (`writer_lock.py`), which hands over faster
than SQLite's busy timeout. Every commit is fsynced (synchronous=FULL): blocks,
suppressions, audit entries and contact counts must survive a power cut once reported. Three
kinds of write commit without waiting for the disk, since losing one to a power cut cannot
send anything unchecked: the delivery ledger's (durability would not prevent the one
duplicate a lost one can cause: a claim lost or kept pending both end in a resend), the
record of an SMS opt-out notice (lost, the next text carries the notice again) and the
release of a contact that was not made (lost, the cap counts one contact too many).
The small reads every message makes run on the event loop's own read-only connection, and
so do its small writes while the worker has nothing queued and no other writer holds the
lock; otherwise those writes are group-committed on the worker: those waiting together run in
one transaction, each in a savepoint of its own, and nobody hears of a write before the
commit that holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

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
    run_migrations,
)
from gateway.store.worker import Job, StoreWorker
from gateway.store.writer_lock import LockingConnection, WriterBusy, WriterLock, write_queue

_T = TypeVar("_T")

# A reader on the event loop waits this long at most (WAL readers wait only for recovery).
READER_BUSY_TIMEOUT_S = 0.1

# The event loop's writer leaves checkpoints (milliseconds each) to the worker, asking for
# one after this many commits: about SQLite's own default of 1,000 WAL pages.
LOOP_COMMITS_PER_CHECKPOINT = 300

# A bulk import reports progress after each chunk of this many entries.
_IMPORT_CHUNK = 50_000

# Stays under SQLITE_MAX_VARIABLE_NUMBER even on SQLite builds older than 3.32 (999).
_PARAMETERS_PER_QUERY = 900

_BLOCK_COLUMNS = (
    "id, time, channel, account, sender, recipient, reasons_json, rules_version,"
    " message_id, subject, size, gateway_id, evidence_json"
)
_AUDIT_COLUMNS = "id, time, actor, action, subject, details_json, prev_hash, hash"

_UPSERT_SUPPRESSION = """
INSERT INTO suppressions (address, source, reason, actor, created_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (address, source) DO UPDATE SET
    reason = excluded.reason,
    actor = excluded.actor,
    created_at = excluded.created_at
"""

_CONSENT_COLUMNS = "subject, channel, kind, obtained_at, expires_at, source, evidence"

_UPSERT_KNOWN_LOCATION = """
INSERT INTO known_locations (number, timezone, latitude, longitude, region, postal_code)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (number) DO UPDATE SET
    timezone = excluded.timezone,
    latitude = excluded.latitude,
    longitude = excluded.longitude,
    region = excluded.region,
    postal_code = excluded.postal_code
"""


class SqliteStore:
    """`Store` on one SQLite file; several instances (or processes) may share the file."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 5.0) -> None:
        self._path = Path(path).absolute()
        self._busy_timeout_s = busy_timeout_s
        self._worker = StoreWorker("sqlite-store", self._run_batch)
        # Touched only on the worker thread.
        self._connection: StoreConnection | None = None
        self._file_identity: tuple[int, int] | None = None
        self._opened = False
        # Touched only on the event loop.
        self._closed = False
        self._reader = _OwnConnection(self._connect_reader, writes=False)
        self._loop_writer = _OwnConnection(self._connect_loop_writer, writes=True)
        self._loop_commits = 0
        self._reads_in_threads: set[asyncio.Future[Any]] = set()
        self._erasure_key: bytes | None = None
        # What the last `open` applied (for `compliance-gateway migrate`).
        self.applied_migrations: list[Migration] = []

    async def open(self) -> None:
        await self._submit(self._open_on_worker)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._reader.close()
        self._loop_writer.close()
        # Nothing reads the file once close returns, not even a count whose caller gave up.
        await asyncio.gather(*self._reads_in_threads, return_exceptions=True)
        await self._worker.submit(self._discard_connection)
        await asyncio.to_thread(self._worker.stop)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def suppressed(self, addresses: Iterable[str]) -> frozenset[str]:
        unique = list(dict.fromkeys(addresses))
        aliases = self._erased_aliases(unique)
        return self._read_on_loop(lambda conn: _select_suppressed(conn, unique, aliases))

    def _read_on_loop(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """The reads every message makes (suppressions; for calls and texts also locations,
        consents, contact counts, notices) run on the event loop's own read-only connection:
        they cost tens of microseconds, where the hop to the worker thread and back waits
        milliseconds under load (for the thread, then for the GIL). In WAL mode a reader
        never waits for a writer, so this cannot stall the loop behind a commit."""
        return self._run_on(self._reader, work)

    def _write_on_loop(self, work: Callable[[sqlite3.Connection], _T], durable: bool) -> _T:
        """A small write costs less than the hop to the worker and back (a commit's fsync is
        about 0.2 ms here), so while the worker is idle the loop writes itself. It never
        waits: a lock held by anyone else raises WriterBusy with nothing written, and the
        write goes to the worker, which waits in line.

        Every LOOP_COMMITS_PER_CHECKPOINT-th commit asks the worker for a checkpoint. The
        worker is idle here, so the last one asked for has run: whether its future has been
        settled yet depends on the loop having run since, which a burst of writes on the
        loop never lets it do. A checkpoint that failed is harmless: the WAL keeps growing
        until the next."""
        result = self._run_on(
            self._loop_writer, lambda connection: _at_durability(connection, durable, work)
        )
        self._loop_commits += 1
        if self._loop_commits % LOOP_COMMITS_PER_CHECKPOINT == 0:
            checkpoint = self._worker.enqueue(lambda: self._with_connection(_checkpoint_passively))
            checkpoint.add_done_callback(_take_outcome)
        return result

    def _run_on(
        self, connection: _OwnConnection, work: Callable[[sqlite3.Connection], _T]
    ) -> _T:
        """Any database or file-system failure becomes StoreUnavailable; WriterBusy (nothing
        written) passes, for the caller to hand the write to the worker."""
        if self._closed or not self._opened:
            raise StoreUnavailable("store is closed" if self._closed else "store is not open")
        try:
            return connection.run(self._path, work)
        except WriterBusy:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(str(exc) or type(exc).__name__) from exc

    def _require_opened_file(self) -> None:
        """Own connections open the file the store opened, never one put in its place."""
        _require_same_file(self._path, self._file_identity)

    def _connect_reader(self) -> sqlite3.Connection:
        self._require_opened_file()
        reader = sqlite3.connect(
            f"{self._path.as_uri()}?mode=rw", uri=True, timeout=READER_BUSY_TIMEOUT_S,
            isolation_level=None,
        )
        try:
            reader.execute("PRAGMA query_only = ON")
        except BaseException:
            reader.close()
            raise
        return reader

    def _connect_loop_writer(self) -> StoreConnection:
        """Waits for no lock (SQLite's or the writers' queue) and runs no checkpoint."""
        self._require_opened_file()
        writer = self._connect(create=False, busy_timeout_s=0.0)
        try:
            writer.execute("PRAGMA wal_autocheckpoint = 0")
        except BaseException:
            writer.close()
            raise
        return writer

    async def add_suppressions(self, entries: Sequence[Suppression]) -> int:
        aliases = self._erased_aliases(dict.fromkeys(e.address for e in entries))
        return await self._run(lambda conn: _upsert_suppressions(conn, entries, aliases))

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
        """Hashing a million addresses for their erased aliases takes seconds, so it is
        skipped when the table holds no erased row."""
        has_erased = self._erasure_key is not None and await self._run(_has_erased_rows)
        aliases = self._erased_aliases(addresses) if has_erased else {}
        fields = (source, reason, actor, _to_text(time))
        return await self._run(
            lambda conn: _import_suppressions(conn, addresses, fields, aliases, audit, progress)
        )

    async def remove_suppressions(self, addresses: Iterable[str]) -> int:
        unique = list(dict.fromkeys(addresses))
        aliases = self._erased_aliases(unique)
        return await self._run(lambda conn: _delete_suppressions(conn, unique, aliases))

    async def list_suppressions(self) -> list[Suppression]:
        return await self._run(_select_all_suppressions)

    async def count_suppressed(self) -> int:
        """A full count takes about a second at ten million entries: on the worker thread it
        would hold every write queued behind it, so it reads in a thread of its own."""
        read = asyncio.ensure_future(asyncio.to_thread(
            self._read_once,
            lambda conn: conn.execute(
                "SELECT COUNT(DISTINCT address) FROM suppressions"
            ).fetchone()[0],
        ))
        self._reads_in_threads.add(read)
        read.add_done_callback(self._read_in_thread_done)
        return await asyncio.shield(read)  # a cancelled caller leaves `read` for close to await

    def _read_in_thread_done(self, read: asyncio.Future[Any]) -> None:
        """Its caller may be gone."""
        self._reads_in_threads.discard(read)
        _take_outcome(read)

    def _read_once(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """`work` on a read-only connection opened and closed by the calling thread (WAL
        lets it read beside the writers)."""
        connection = _OwnConnection(self._connect_reader, writes=False)
        try:
            return self._run_on(connection, work)
        finally:
            connection.close()

    async def remove_suppressions_from_source(self, addresses: Iterable[str], source: str) -> int:
        keys = [(address, source) for address in addresses]
        return await self._run(lambda conn: _delete_suppressions_from_source(conn, keys))

    async def remove_suppressions_with_source_prefix(
        self, addresses: Iterable[str], prefix: str
    ) -> int:
        pattern = _escape_like(prefix) + "%"
        keys = [(address, pattern) for address in addresses]
        return await self._run(lambda conn: _delete_suppressions_by_source_pattern(conn, keys))

    async def add_consents(self, consents: Sequence[Consent]) -> int:
        return await self._run(lambda conn: _insert_consents(conn, consents))

    async def consents_for(self, subjects: Iterable[str]) -> dict[str, tuple[Consent, ...]]:
        unique = list(dict.fromkeys(subjects))
        return self._read_on_loop(lambda conn: _select_consents(conn, unique))

    async def known_locations(self, numbers: Iterable[str]) -> dict[str, KnownLocation]:
        unique = list(dict.fromkeys(numbers))
        return self._read_on_loop(lambda conn: _select_known_locations(conn, unique))

    async def set_known_location(self, number: str, location: KnownLocation) -> None:
        await self._run(lambda conn: _upsert_known_location(conn, number, location))

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
        windows = [(limit, now - timedelta(seconds=window_s)) for limit, window_s in limits]
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

    async def record_block(self, record: BlockRecord) -> int:
        return await self._run(lambda conn: _insert_block(conn, record), batchable=True)

    async def query_blocks(self, query: BlockQuery) -> list[BlockRecord]:
        return await self._run(lambda conn: _select_blocks(conn, query))

    async def get_block(self, block_id: int) -> BlockRecord | None:
        return await self._run(lambda conn: _select_block(conn, block_id))

    async def block_counts(
        self, since: datetime | None, until: datetime | None
    ) -> list[tuple[str, str, int]]:
        window = BlockQuery(since=since, until=until)
        return await self._run(lambda conn: _count_blocks_by_reason(conn, window))

    async def block_series(
        self, since: datetime | None, until: datetime | None, bucket_s: int
    ) -> list[tuple[datetime, int]]:
        if bucket_s <= 0:
            raise ValueError(f"bucket_s must be positive, not {bucket_s}")
        window = BlockQuery(since=since, until=until)
        return await self._run(lambda conn: _count_blocks_by_bucket(conn, window, bucket_s))

    async def claim_delivery(
        self, delivery_key: str, recipient: str, now: datetime, stale_after_s: float
    ) -> DeliveryClaim:
        stale_before = now - timedelta(seconds=stale_after_s)
        return await self._run(
            lambda conn: _claim_delivery(conn, delivery_key, recipient, now, stale_before),
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

    async def append_audit(self, event: AuditEvent) -> AuditEvent:
        return await self._run(lambda conn: _append_audit(conn, event), batchable=True)

    async def audit_events(self) -> list[AuditEvent]:
        return await self._run(_select_audit_events)

    async def verify_audit(self) -> AuditProblem | None:
        return await self._run(_verify_audit_chain)

    async def use_erasure_key(self, key: bytes) -> None:
        """Set on the event loop, where every lookup computes its aliases. The first key used
        is fingerprinted in the database; another key later is refused, because erased
        people's opt-outs would silently stop matching."""
        if not key:
            raise ValueError("the erasure key must not be empty")
        fingerprint = hmac.new(key, b"erasure-key-fingerprint", hashlib.sha256).hexdigest()
        if not await self._run(lambda conn: _claim_erasure_key(conn, fingerprint)):
            raise StoreUnavailable(
                "the erasure key differs from the one this database's erased opt-outs were "
                "written with; restore privacy.erasure_key (or data_dir/erasure-key)"
            )
        self._erasure_key = key

    async def personal_data(self, key: str) -> PersonalData:
        erased = erased_address(self._erasure_key, key) if self._erasure_key else None
        return await self._run(lambda conn: _select_personal_data(conn, key, erased))

    async def erase_personal_data(self, key: str, now: datetime, actor: str) -> dict[str, int]:
        if self._erasure_key is None:
            raise ValueError("no erasure key: call use_erasure_key first")
        erased = Suppression(
            erased_address(self._erasure_key, key), ERASED_SOURCE, "erased on request", now, actor
        )
        return await self._run(lambda conn: _erase_personal_data(conn, key, erased))

    async def clear_block_metadata(self, before: datetime) -> int:
        return await self._run(lambda conn: _clear_block_metadata(conn, before))

    async def delete_blocks(self, before: datetime) -> int:
        return await self._run(lambda conn: _delete_blocks_before(conn, before))

    async def prune_audit(self, before: datetime) -> int:
        return await self._run(lambda conn: _prune_audit(conn, before))

    async def purge(self, event: AuditEvent) -> AuditEvent:
        if self._erasure_key is None:
            raise StoreUnavailable("purge needs the erasure key, to keep opt-outs as hashes")
        key = self._erasure_key
        return await self._run(lambda conn: _purge(conn, event, key))

    def _erased_aliases(self, addresses: Iterable[str]) -> dict[str, str]:
        """Keyed hash -> address, so an erased row answers for its address (empty without
        a key: then no erased row can exist that this store wrote)."""
        if self._erasure_key is None:
            return {}
        return {erased_address(self._erasure_key, address): address for address in addresses}

    async def _run(
        self,
        work: Callable[[sqlite3.Connection], _T],
        *,
        batchable: bool = False,
        durable: bool = True,
    ) -> _T:
        """`batchable`: small writes that may share a transaction with others (group
        commit), or run on the loop while the worker is idle (never ahead of a job
        submitted earlier). `durable=False`: the commit need not reach the disk before the
        answer (a power cut may lose it; a crash of the process may not), for writes whose
        loss is harmless."""
        if batchable and self._worker.idle:
            with contextlib.suppress(WriterBusy):
                return self._write_on_loop(work, durable)
        return await self._submit(
            lambda: self._with_connection(work), batchable=batchable, durable=durable
        )

    async def _submit(
        self,
        call: Callable[[], _T],
        *,
        batchable: bool = False,
        durable: bool = True,
    ) -> _T:
        if self._closed:
            raise StoreUnavailable("store is closed")
        result: _T = await self._worker.submit(call, batchable=batchable, durable=durable)
        return result

    def _run_batch(self, jobs: list[Job]) -> None:
        """On the worker: one job as it is, several in one transaction, each in a savepoint
        (`_transaction` nests), so one that fails undoes only itself. If the commit fails,
        every job fails: none of their writes happened."""
        durable = any(job.durable for job in jobs)
        if len(jobs) == 1:
            _settle_job(jobs[0], lambda: self._guarded(lambda: self._durably(durable, jobs[0])))
            return
        try:
            connection = self._with_connection(lambda conn: conn)
            _use_synchronous(connection, durable)
            with write_queue(connection):
                self._run_in_one_transaction(connection, jobs)
        except (sqlite3.Error, OSError, StoreUnavailable) as exc:
            self._fail_batch(jobs, exc)

    def _run_in_one_transaction(self, connection: sqlite3.Connection, jobs: list[Job]) -> None:
        connection.execute("BEGIN IMMEDIATE")
        for job in jobs:
            _settle_job(job, job.call)
        try:
            connection.execute("COMMIT")
            self._check_file_identity()
        except (sqlite3.Error, OSError):
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            raise

    def _durably(self, durable: bool, job: Job) -> Any:
        if self._connection is not None:  # a new connection starts FULL: stricter is fine
            _use_synchronous(self._connection, durable)
        assert job.call is not None
        return job.call()

    def _fail_batch(self, jobs: list[Job], exc: Exception) -> None:
        if not isinstance(exc, StoreUnavailable):
            self._discard_connection()
            exc = StoreUnavailable(str(exc) or type(exc).__name__)
        for job in jobs:
            job.result, job.error = None, job.error or exc

    def _guarded(self, call: Callable[[], _T]) -> _T:
        """Run on the worker; any database or file-system failure becomes StoreUnavailable.

        The connection is dropped on failure and reopened by the next call, so the store
        recovers once the condition (lock, full disk, restored file) clears.
        """
        try:
            result = call()
            self._check_file_identity()
        except (sqlite3.Error, OSError) as exc:
            self._discard_connection()
            raise StoreUnavailable(str(exc) or type(exc).__name__) from exc
        return result

    def _with_connection(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        if not self._opened:
            raise StoreUnavailable("store is not open")
        if self._connection is not None:
            self._check_file_identity()  # before writing too: never into a moved-away file
        if self._connection is None:
            self._connection = self._connect(create=False)
            self._file_identity = _file_identity(self._path)
        return work(self._connection)

    def _open_on_worker(self) -> None:
        if self._connection is None:
            self._connection = self._connect(create=True)
            self._file_identity = _file_identity(self._path)
        migrations = discover_migrations(migration_directory("sqlite"))
        self.applied_migrations = run_migrations(
            SqliteMigrationTarget(self._connection), migrations
        )
        self._opened = True

    def _connect(self, *, create: bool, busy_timeout_s: float | None = None) -> StoreConnection:
        """Only `open` may create the file: a reconnect that silently started an empty
        database would forget every suppression, so a vanished file stays an error."""
        mode = "rwc" if create else "rw"
        timeout_s = self._busy_timeout_s if busy_timeout_s is None else busy_timeout_s
        connection = sqlite3.connect(
            f"{self._path.as_uri()}?mode={mode}",
            uri=True,
            timeout=timeout_s,
            isolation_level=None,
            factory=StoreConnection,
        )
        connection.writer_lock = WriterLock(self._path, timeout_s)
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
        except BaseException:
            connection.close()
            raise
        return connection

    def _check_file_identity(self) -> None:
        if self._connection is not None:
            _require_same_file(self._path, self._file_identity)

    def _discard_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None


class StoreConnection(LockingConnection):
    synchronous = "FULL"  # as `_connect` sets it; `_use_synchronous` changes it


class _OwnConnection:
    """A connection its user's thread runs SQL on directly, not through the worker (the
    event loop's reader and writer, a one-off read in a thread): opened on first use,
    dropped on any failure (the next use reopens it), and only ever used on the file it was
    opened on (a writer checks before writing too: never into a moved-away file)."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], *, writes: bool) -> None:
        self._connect = connect
        self._writes = writes
        self._connection: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None

    def run(self, path: Path, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """A writer finding a lock taken raises WriterBusy with nothing written: the writers'
        queue refuses before any SQL (the connection stays open), SQLite's BUSY closes the
        connection, which rolls back what it began."""
        try:
            if self._connection is None:
                self._connection = self._connect()
                self._identity = _file_identity(path)
            elif self._writes:
                _require_same_file(path, self._identity)
            result = work(self._connection)
            _require_same_file(path, self._identity)
        except WriterBusy:
            raise
        except (sqlite3.Error, OSError) as exc:
            self.close()
            if self._writes and _is_busy(exc):
                raise WriterBusy(str(exc)) from exc
            raise
        return result

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None


def _take_outcome(future: asyncio.Future[Any]) -> None:
    """For a future nobody may await: its failure is taken here, never reported as
    unretrieved."""
    if not future.cancelled():
        future.exception()


def _is_busy(exc: Exception) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_BUSY


def _use_synchronous(connection: sqlite3.Connection, durable: bool) -> None:
    """FULL fsyncs the WAL at every commit; NORMAL leaves it to the next FULL commit or
    checkpoint (WAL order keeps the database consistent either way)."""
    mode = "FULL" if durable else "NORMAL"
    if isinstance(connection, StoreConnection) and connection.synchronous != mode:
        connection.execute(f"PRAGMA synchronous = {mode}")
        connection.synchronous = mode


def _at_durability(
    connection: sqlite3.Connection, durable: bool, work: Callable[[sqlite3.Connection], _T]
) -> _T:
    _use_synchronous(connection, durable)
    return work(connection)


def _checkpoint_passively(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


class SqliteMigrationTarget:
    """Runs migrations on one connection that is in autocommit mode (isolation_level=None)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def ensure_version_table(self) -> None:
        self._connection.execute(VERSION_TABLE_DDL)

    def applied_versions(self) -> set[int]:
        rows = self._connection.execute("SELECT version FROM schema_migrations")
        return {version for (version,) in rows}

    def apply(self, migration: Migration) -> bool:
        with _transaction(self._connection, write=True) as conn:
            recorded = conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
            ).fetchone()
            if recorded:
                return False
            for statement in _split_statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, _to_text(datetime.now(UTC))),
            )
        return True


def _split_statements(script: str) -> list[str]:
    """`executescript` would commit the migration's transaction, so statements run one by
    one; a statement ends with the line on which it is complete."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending)
            pending = ""
    if pending.strip():
        statements.append(pending)
    return statements


def _settle_job(job: Job, call: Callable[[], Any]) -> None:
    try:
        job.result = call()
    except (sqlite3.Error, OSError) as exc:
        job.error = StoreUnavailable(str(exc) or type(exc).__name__)
    except Exception as exc:  # the caller's own error (StoreUnavailable, ValueError, ...)
        job.error = exc


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, *, write: bool) -> Iterator[sqlite3.Connection]:
    """Writers take the write lock up front (IMMEDIATE); readers get one snapshot. Inside a
    group commit's transaction, a savepoint stands for the transaction."""
    if conn.in_transaction:
        conn.execute("SAVEPOINT work")
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK TO work")
                conn.execute("RELEASE work")
            raise
        conn.execute("RELEASE work")
        return
    with write_queue(conn) if write else contextlib.nullcontext():
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield conn
        except BaseException:
            # A failed rollback leaves the connection suspect; the caller discards it anyway.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _file_identity(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_dev, status.st_ino


def _require_same_file(path: Path, identity: tuple[int, int] | None) -> None:
    """SQLite keeps reading and writing a deleted or replaced file through its open
    descriptor, so without this check writes would vanish with the unlinked file."""
    if _file_identity(path) != identity:
        raise FileNotFoundError(f"database file {path} was removed or replaced")


def _to_text(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: the store keeps UTC times only")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _from_text(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _rows_for_keys(
    conn: sqlite3.Connection,
    query: str,
    keys: Sequence[str],
    parameters: Sequence[object] = (),
) -> Iterator[tuple[Any, ...]]:
    """Rows of `query` for every key, `{keys}` in it standing for the IN list, in as many
    queries as the parameter limit needs; `parameters` bind before the keys. Callers read
    inside one transaction so that every chunk sees the same snapshot."""
    for chunk in _chunks(keys, _PARAMETERS_PER_QUERY):
        placeholders = ", ".join("?" * len(chunk))
        yield from conn.execute(query.format(keys=placeholders), [*parameters, *chunk])


def _select_suppressed(
    conn: sqlite3.Connection, addresses: Sequence[str], aliases: Mapping[str, str]
) -> frozenset[str]:
    with _transaction(conn, write=False):
        return frozenset(_suppressed_keys(conn, addresses, aliases))


def _suppressed_keys(
    conn: sqlite3.Connection, addresses: Sequence[str], aliases: Mapping[str, str]
) -> set[str]:
    """The addresses with a row of their own or an erased row (`aliases` maps each
    address's keyed hash back to it); callers hold a transaction."""
    found = _suppressed_among(conn, [*addresses, *aliases])
    return {aliases.get(address, address) for address in found}


def _suppressed_among(conn: sqlite3.Connection, addresses: Sequence[str]) -> Iterator[str]:
    """The addresses (unique) with at least one row, whatever its source; callers hold a
    transaction. The primary key leads with address, so each chunk is an index search."""
    rows = _rows_for_keys(
        conn, "SELECT DISTINCT address FROM suppressions WHERE address IN ({keys})", addresses
    )
    return (address for (address,) in rows)


def _upsert_suppressions(
    conn: sqlite3.Connection, entries: Sequence[Suppression], aliases: Mapping[str, str]
) -> int:
    with _transaction(conn, write=True):
        return _upsert_rows(conn, _suppression_rows(entries), aliases)


def _has_erased_rows(conn: sqlite3.Connection) -> bool:
    """An index range search: erased rows sort together under their prefix."""
    upper = ERASED_PREFIX[:-1] + chr(ord(ERASED_PREFIX[-1]) + 1)
    row = conn.execute(
        "SELECT 1 FROM suppressions WHERE address >= ? AND address < ? LIMIT 1",
        (ERASED_PREFIX, upper),
    ).fetchone()
    return row is not None


def _import_suppressions(
    conn: sqlite3.Connection,
    addresses: Sequence[str],
    fields: tuple[str, str, str, str],
    aliases: Mapping[str, str],
    audit: Callable[[int], AuditEvent],
    progress: Callable[[int], None] | None,
) -> int:
    """One write transaction with the audit entry; the chunks only pace the progress
    reports. An address repeated in a later chunk is found there as present, so it counts
    once. Rows are built and sorted (index order, about twice as fast to write) before the
    transaction begins: the gateway's own writers wait for it."""
    rows = [(address, *fields) for address in sorted(addresses)]
    hashes = {address: alias for alias, address in aliases.items()}
    new = 0
    with _transaction(conn, write=True):
        for start in range(0, len(rows), _IMPORT_CHUNK):
            chunk = rows[start : start + _IMPORT_CHUNK]
            chunk_aliases = {hashes[row[0]]: row[0] for row in chunk if row[0] in hashes}
            new += _upsert_rows(conn, chunk, chunk_aliases)
            if progress is not None:
                progress(start + len(chunk))
        _insert_audit(conn, audit(new))
    return new


def _suppression_rows(entries: Sequence[Suppression]) -> list[tuple[str, str, str, str, str]]:
    """Ordered by address (stably: a later entry for the same address and source still
    wins), so a large batch walks the primary-key index in order, about twice as fast as in
    arrival order. Each distinct time (a batch usually has one) is formatted once."""
    texts = {moment: _to_text(moment) for moment in {e.time for e in entries}}
    rows = [(e.address, e.source, e.reason, e.actor, texts[e.time]) for e in entries]
    rows.sort(key=itemgetter(0))
    return rows


def _upsert_rows(
    conn: sqlite3.Connection,
    rows: Sequence[tuple[str, str, str, str, str]],
    aliases: Mapping[str, str],
) -> int:
    """One row per (address, source): a second source adds a row, the same source refreshes
    its own. New addresses are the rows' distinct addresses that had no row of any source,
    looked up inside the caller's write transaction, so the count is exact (repeats
    included) and costs index searches for these rows only, never a scan of the table."""
    addresses = list(dict.fromkeys(row[0] for row in rows))
    existing = len(_suppressed_keys(conn, addresses, aliases))
    conn.executemany(_UPSERT_SUPPRESSION, rows)
    return len(addresses) - existing


def _delete_suppressions(
    conn: sqlite3.Connection, addresses: Sequence[str], aliases: Mapping[str, str]
) -> int:
    """Every source's row goes, an erased row too (an operator may re-admit an erased
    person); the count is of addresses (unique), not rows, read in the same write
    transaction as the delete."""
    with _transaction(conn, write=True):
        existed = len(_suppressed_keys(conn, addresses, aliases))
        conn.executemany(
            "DELETE FROM suppressions WHERE address = ?",
            [(address,) for address in [*addresses, *aliases]],
        )
    return existed


def _delete_suppressions_from_source(
    conn: sqlite3.Connection, keys: Sequence[tuple[str, str]]
) -> int:
    """Rows removed; an address keeps its rows from other sources, so it may stay
    suppressed. A repeated address finds nothing the second time, so it counts once."""
    with _transaction(conn, write=True):
        cursor = conn.executemany("DELETE FROM suppressions WHERE address = ? AND source = ?", keys)
        return cursor.rowcount


def _delete_suppressions_by_source_pattern(
    conn: sqlite3.Connection, keys: Sequence[tuple[str, str]]
) -> int:
    """As `_delete_suppressions_from_source`, for every source matching a LIKE pattern."""
    with _transaction(conn, write=True):
        cursor = conn.executemany(
            "DELETE FROM suppressions WHERE address = ? AND source LIKE ? ESCAPE '\\'", keys
        )
        return cursor.rowcount


def _select_all_suppressions(conn: sqlite3.Connection) -> list[Suppression]:
    rows = conn.execute(
        "SELECT address, source, reason, actor, created_at FROM suppressions"
        " ORDER BY address, source"
    )
    return [
        Suppression(address, source, reason, _from_text(created_at), actor)
        for address, source, reason, actor, created_at in rows
    ]


def _insert_consents(conn: sqlite3.Connection, consents: Sequence[Consent]) -> int:
    """An ignored duplicate changes no row, so the summed row count is exactly the new ones
    (repeats inside the batch included)."""
    rows = [
        (
            c.subject,
            c.channel.value,
            c.kind.value,
            _to_text(c.obtained_at),
            None if c.expires_at is None else _to_text(c.expires_at),
            c.source,
            c.evidence,
        )
        for c in consents
    ]
    with _transaction(conn, write=True):
        cursor = conn.executemany(
            f"INSERT INTO consents ({_CONSENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (subject, channel, kind, obtained_at) DO NOTHING",
            rows,
        )
        return cursor.rowcount


def _select_consents(
    conn: sqlite3.Connection, subjects: Sequence[str]
) -> dict[str, tuple[Consent, ...]]:
    found: dict[str, list[Consent]] = {}
    with _transaction(conn, write=False):
        rows = _rows_for_keys(
            conn,
            f"SELECT {_CONSENT_COLUMNS} FROM consents WHERE subject IN ({{keys}})"
            " ORDER BY subject, obtained_at, channel, kind",
            subjects,
        )
        for row in rows:
            consent = _consent_from_row(row)
            found.setdefault(consent.subject, []).append(consent)
    return {subject: tuple(consents) for subject, consents in found.items()}


def _consent_from_row(row: tuple[Any, ...]) -> Consent:
    subject, channel, kind, obtained_at, expires_at, source, evidence = row
    return Consent(
        subject=subject,
        channel=Channel(channel),
        kind=ConsentKind(kind),
        obtained_at=_from_text(obtained_at),
        expires_at=None if expires_at is None else _from_text(expires_at),
        source=source,
        evidence=evidence,
    )


def _select_known_locations(
    conn: sqlite3.Connection, numbers: Sequence[str]
) -> dict[str, KnownLocation]:
    with _transaction(conn, write=False):
        rows = _rows_for_keys(
            conn,
            "SELECT number, timezone, latitude, longitude, region, postal_code"
            " FROM known_locations WHERE number IN ({keys})",
            numbers,
        )
        return {
            number: KnownLocation(timezone, latitude, longitude, region, postal_code)
            for number, timezone, latitude, longitude, region, postal_code in rows
        }


def _upsert_known_location(conn: sqlite3.Connection, number: str, location: KnownLocation) -> None:
    with _transaction(conn, write=True):
        conn.execute(
            _UPSERT_KNOWN_LOCATION,
            (
                number,
                location.timezone,
                location.latitude,
                location.longitude,
                location.region,
                location.postal_code,
            ),
        )


def _count_contacts(
    conn: sqlite3.Connection, recipients: Sequence[str], since: datetime
) -> dict[str, int]:
    counts = dict.fromkeys(recipients, 0)
    with _transaction(conn, write=False):
        rows = _rows_for_keys(
            conn,
            "SELECT recipient, COUNT(*) FROM contacts"
            " WHERE time >= ? AND recipient IN ({keys}) GROUP BY recipient",
            recipients,
            [_to_text(since)],
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
    room for the last contact. `windows` pairs each limit with its window's open start.
    Contacts stamped after `now` count too: a replica whose clock runs ahead must not
    let a slower one exceed the cap."""
    now_text = _to_text(now)
    starts = [(limit, _to_text(start)) for limit, start in windows]
    with _transaction(conn, write=True):
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
    with _transaction(conn, write=True):
        conn.execute(
            "DELETE FROM contacts WHERE recipient = ? AND gateway_id = ?", (recipient, gateway_id)
        )


def _select_notices(conn: sqlite3.Connection, recipients: Sequence[str]) -> dict[str, datetime]:
    with _transaction(conn, write=False):
        rows = _rows_for_keys(
            conn, "SELECT recipient, sent_at FROM notices WHERE recipient IN ({keys})", recipients
        )
        return {recipient: _from_text(sent_at) for recipient, sent_at in rows}


def _upsert_notice(conn: sqlite3.Connection, recipient: str, at: datetime) -> None:
    with _transaction(conn, write=True):
        conn.execute(
            "INSERT INTO notices (recipient, sent_at) VALUES (?, ?)"
            " ON CONFLICT (recipient) DO UPDATE SET sent_at = excluded.sent_at",
            (recipient, _to_text(at)),
        )


def _insert_block(conn: sqlite3.Connection, record: BlockRecord) -> int:
    reasons_json = json.dumps([reason.as_dict() for reason in record.reasons])
    reason_codes = "," + "".join(f"{reason.code}," for reason in record.reasons)
    with _transaction(conn, write=True):
        cursor = conn.execute(
            "INSERT INTO blocks (time, channel, account, sender, recipient, reasons_json,"
            " reason_codes, rules_version, message_id, subject, size, gateway_id, evidence_json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                _to_text(record.time),
                record.channel.value,
                record.account,
                record.sender,
                record.recipient,
                reasons_json,
                reason_codes,
                record.rules_version,
                record.message_id,
                record.subject,
                record.size,
                record.gateway_id,
                json.dumps(dict(record.evidence), sort_keys=True, default=str),
            ),
        )
    return _row_id(cursor)


def _select_blocks(conn: sqlite3.Connection, query: BlockQuery) -> list[BlockRecord]:
    where, parameters = _block_filters(query)
    rows = conn.execute(
        f"SELECT {_BLOCK_COLUMNS} FROM blocks {where} ORDER BY time DESC, id DESC LIMIT ?",
        [*parameters, query.limit],
    )
    return [_block_from_row(row) for row in rows]


def _select_block(conn: sqlite3.Connection, block_id: int) -> BlockRecord | None:
    row = conn.execute(f"SELECT {_BLOCK_COLUMNS} FROM blocks WHERE id = ?", (block_id,)).fetchone()
    return None if row is None else _block_from_row(row)


def _count_blocks_by_reason(
    conn: sqlite3.Connection, window: BlockQuery
) -> list[tuple[str, str, int]]:
    """Counted here rather than in SQL: splitting the stored code list needs a recursive
    query, and a set per row is what makes a code repeated within one block count once."""
    where, parameters = _block_filters(window)
    counts: dict[tuple[str, str], int] = {}
    with _transaction(conn, write=False):
        for channel, reason_codes in conn.execute(
            f"SELECT channel, reason_codes FROM blocks {where}", parameters
        ):
            for code in set(reason_codes.strip(",").split(",")) - {""}:
                counts[channel, code] = counts.get((channel, code), 0) + 1
    return [(channel, code, n) for (channel, code), n in sorted(counts.items())]


def _count_blocks_by_bucket(
    conn: sqlite3.Connection, window: BlockQuery, bucket_s: int
) -> list[tuple[datetime, int]]:
    where, parameters = _block_filters(window)
    counts: dict[int, int] = {}
    with _transaction(conn, write=False):
        for (time,) in conn.execute(f"SELECT time FROM blocks {where}", parameters):
            bucket = int(_from_text(time).timestamp()) // bucket_s * bucket_s
            counts[bucket] = counts.get(bucket, 0) + 1
    return [(datetime.fromtimestamp(b, UTC), n) for b, n in sorted(counts.items())]


def _block_filters(query: BlockQuery) -> tuple[str, list[object]]:
    clauses: list[str] = []
    parameters: list[object] = []
    if query.since is not None:
        clauses.append("time >= ?")
        parameters.append(_to_text(query.since))
    if query.until is not None:
        clauses.append("time < ?")
        parameters.append(_to_text(query.until))
    if query.reason is not None:
        clauses.append("reason_codes LIKE ? ESCAPE '\\'")
        parameters.append(f"%,{_escape_like(query.reason)},%")
    for column, value in (
        ("channel", query.channel),
        ("account", query.account),
        ("recipient", query.recipient),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            parameters.append(str(value))
    if query.before_id is not None:
        # If the cursor's block was erased meanwhile, the id alone still moves the walk on.
        clauses.append(
            "((time, id) < (SELECT time, id FROM blocks WHERE id = ?)"
            " OR (NOT EXISTS (SELECT 1 FROM blocks WHERE id = ?) AND id < ?))"
        )
        parameters.extend([query.before_id] * 3)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    return where, parameters


def _escape_like(text: str) -> str:
    """Codes such as QUIET_HOURS contain `_`, which LIKE would treat as a wildcard."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _block_from_row(row: tuple[Any, ...]) -> BlockRecord:
    (
        block_id,
        time,
        channel,
        account,
        sender,
        recipient,
        reasons_json,
        rules_version,
        message_id,
        subject,
        size,
        gateway_id,
        evidence_json,
    ) = row
    return BlockRecord(
        time=_from_text(time),
        channel=Channel(channel),
        account=account,
        sender=sender,
        recipient=recipient,
        reasons=tuple(Reason(**reason) for reason in json.loads(reasons_json)),
        rules_version=rules_version,
        message_id=message_id,
        subject=subject,
        size=size,
        gateway_id=gateway_id,
        evidence=json.loads(evidence_json),
        id=block_id,
    )


def _claim_delivery(
    conn: sqlite3.Connection,
    delivery_key: str,
    recipient: str,
    now: datetime,
    stale_before: datetime,
) -> DeliveryClaim:
    """Read and decide inside one IMMEDIATE transaction, so two claimants (in this process
    or another) cannot both see "no claim"."""
    key = (delivery_key, recipient)
    with _transaction(conn, write=True):
        row = conn.execute(
            "SELECT state, claimed_at FROM deliveries WHERE delivery_key = ? AND recipient = ?",
            key,
        ).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO deliveries (delivery_key, recipient, state, claimed_at)"
                " VALUES (?, ?, 'pending', ?)",
                (*key, _to_text(now)),
            )
            return DeliveryClaim.CLAIMED
        state, claimed_at = row
        if state == "done":
            return DeliveryClaim.ALREADY_DELIVERED
        if _from_text(claimed_at) > stale_before:
            return DeliveryClaim.IN_FLIGHT
        conn.execute(
            "UPDATE deliveries SET claimed_at = ? WHERE delivery_key = ? AND recipient = ?",
            (_to_text(now), *key),
        )
        return DeliveryClaim.CLAIMED


def _complete_delivery(
    conn: sqlite3.Connection, delivery_key: str, recipient: str, upstream_id: str
) -> None:
    """Upsert rather than update: the message did go out, so "done" must be recorded even if
    the claim row is gone, or a retry would send a second copy."""
    with _transaction(conn, write=True):
        conn.execute(
            "INSERT INTO deliveries (delivery_key, recipient, state, claimed_at, upstream_id)"
            " VALUES (?, ?, 'done', ?, ?)"
            " ON CONFLICT (delivery_key, recipient) DO UPDATE SET"
            " state = 'done', upstream_id = excluded.upstream_id",
            (delivery_key, recipient, _to_text(datetime.now(UTC)), upstream_id),
        )


def _release_delivery(conn: sqlite3.Connection, delivery_key: str, recipient: str) -> None:
    with _transaction(conn, write=True):
        conn.execute(
            "DELETE FROM deliveries WHERE delivery_key = ? AND recipient = ? AND state = 'pending'",
            (delivery_key, recipient),
        )


def _append_audit(conn: sqlite3.Connection, event: AuditEvent) -> AuditEvent:
    with _transaction(conn, write=True):
        return _insert_audit(conn, event)


def _insert_audit(conn: sqlite3.Connection, event: AuditEvent) -> AuditEvent:
    """The event is hashed as it will read back (UTC time, details through canonical JSON),
    so `verify_audit` recomputes the same hash from the stored row. Callers hold a write
    transaction, so the link to the last entry cannot go stale."""
    time_text = _to_text(event.time)
    details_json = _canonical_json(event.details)
    stored = AuditEvent(
        time=_from_text(time_text),
        actor=event.actor,
        action=event.action,
        subject=event.subject,
        details=json.loads(details_json),
    )
    last = conn.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    prev_hash = last[0] if last else _audit_anchor(conn)
    digest = entry_hash(prev_hash, stored)
    cursor = conn.execute(
        "INSERT INTO audit (time, actor, action, subject, details_json, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            time_text,
            stored.actor,
            stored.action,
            stored.subject,
            details_json,
            prev_hash,
            digest,
        ),
    )
    return replace(stored, id=_row_id(cursor), prev_hash=prev_hash, hash=digest)


def _canonical_json(details: dict[str, object]) -> str:
    """Matches `entry_hash`'s encoding (sorted keys, `str` for anything else)."""
    return json.dumps(details, sort_keys=True, separators=(",", ":"), default=str)


def _select_audit_events(conn: sqlite3.Connection) -> list[AuditEvent]:
    rows = conn.execute(f"SELECT {_AUDIT_COLUMNS} FROM audit ORDER BY id")
    return [_audit_from_row(row) for row in rows]


def _audit_from_row(row: tuple[Any, ...]) -> AuditEvent:
    entry_id, time, actor, action, subject, details_json, prev_hash, digest = row
    return AuditEvent(
        time=_from_text(time),
        actor=actor,
        action=action,
        subject=subject,
        details=json.loads(details_json),
        id=entry_id,
        prev_hash=prev_hash,
        hash=digest,
    )


def _verify_audit_chain(conn: sqlite3.Connection) -> AuditProblem | None:
    """The chain starts at the anchor a retention prune left (else GENESIS); one read
    snapshot, so a prune running meanwhile cannot make intact entries look broken."""
    with _transaction(conn, write=False):
        expected_prev = _audit_anchor(conn)
        previous_id: int | None = None
        for row in conn.execute(f"SELECT {_AUDIT_COLUMNS} FROM audit ORDER BY id"):
            entry_id, *_, prev_hash, digest = row
            if not _audit_row_hash_matches(row):
                return AuditProblem(entry_id, "content does not match its hash")
            if prev_hash != expected_prev:
                if previous_id is None:
                    return AuditProblem(entry_id, "first entry does not start the chain")
                return AuditProblem(entry_id, f"does not follow entry {previous_id}")
            expected_prev, previous_id = digest, entry_id
        return None


def _audit_row_hash_matches(row: tuple[Any, ...]) -> bool:
    """A row edited into something unreadable (bad JSON, bad time) is tampered too."""
    try:
        event = _audit_from_row(row)
    except (ValueError, TypeError):
        return False
    return entry_hash(event.prev_hash, event) == event.hash


def _row_id(cursor: sqlite3.Cursor) -> int:
    if cursor.lastrowid is None:
        raise sqlite3.OperationalError("insert did not report a row id")
    return cursor.lastrowid


def _audit_anchor(conn: sqlite3.Connection) -> str:
    """The hash the first remaining audit entry links to: the last pruned entry's, or
    GENESIS when nothing was ever pruned (or since the last purge)."""
    row = conn.execute("SELECT hash FROM audit_anchor WHERE id = 1").fetchone()
    return row[0] if row else GENESIS_HASH


# Emails are recorded as the agent wrote them ('Bob@Example.com'); their keys are lower
# case, so email rows match without case. Numbers are recorded in E.164 and match exactly.
def _subject_match(column: str, key: str) -> str:
    return f"lower({column}) = ?" if "@" in key else f"{column} = ?"


def _block_match(key: str) -> tuple[str, list[object]]:
    """A person's blocks: as recipient, and for emails also as sender."""
    if "@" in key:
        return f"({_subject_match('recipient', key)} OR lower(sender) = ?)", [key, key]
    return _subject_match("recipient", key), [key]


def _select_personal_data(conn: sqlite3.Connection, key: str, erased: str | None) -> PersonalData:
    block_where, block_parameters = _block_match(key)
    with _transaction(conn, write=False):
        suppressions = [
            Suppression(address, source, reason, _from_text(created_at), actor)
            for address, source, reason, actor, created_at in conn.execute(
                "SELECT address, source, reason, actor, created_at FROM suppressions"
                " WHERE address IN (?, ?) ORDER BY address, source",
                (key, erased or key),
            )
        ]
        location = conn.execute(
            "SELECT timezone, latitude, longitude, region, postal_code"
            " FROM known_locations WHERE number = ?",
            (key,),
        ).fetchone()
        notice = conn.execute(
            f"SELECT sent_at FROM notices WHERE {_subject_match('recipient', key)}", (key,)
        ).fetchone()
        return PersonalData(
            key=key,
            suppressions=tuple(s for s in suppressions if s.address == key),
            erased_suppressions=tuple(s for s in suppressions if s.address != key),
            consents=tuple(
                _consent_from_row(row)
                for row in conn.execute(
                    f"SELECT {_CONSENT_COLUMNS} FROM consents"
                    f" WHERE {_subject_match('subject', key)} ORDER BY obtained_at",
                    (key,),
                )
            ),
            known_location=KnownLocation(*location) if location else None,
            blocks=tuple(
                _block_from_row(row)
                for row in conn.execute(
                    f"SELECT {_BLOCK_COLUMNS} FROM blocks WHERE {block_where}"
                    " ORDER BY time DESC, id DESC",
                    block_parameters,
                )
            ),
            contacts=tuple(
                ContactRow(Channel(channel), _from_text(time), gateway_id)
                for channel, time, gateway_id in conn.execute(
                    "SELECT channel, time, gateway_id FROM contacts"
                    f" WHERE {_subject_match('recipient', key)} ORDER BY time",
                    (key,),
                )
            ),
            notice_sent_at=_from_text(notice[0]) if notice else None,
            deliveries=tuple(
                DeliveryRow(delivery_key, recipient, state, _from_text(claimed_at), upstream_id)
                for delivery_key, recipient, state, claimed_at, upstream_id in conn.execute(
                    "SELECT delivery_key, recipient, state, claimed_at, upstream_id"
                    f" FROM deliveries WHERE {_subject_match('recipient', key)}"
                    " ORDER BY claimed_at",
                    (key,),
                )
            ),
            audit=tuple(
                _audit_from_row(row)
                for row in conn.execute(
                    f"SELECT {_AUDIT_COLUMNS} FROM audit"
                    " WHERE subject LIKE ? ESCAPE '\\' ORDER BY id",
                    (f"%{_escape_like(key)}%",),
                )
            ),
        )


def _erase_personal_data(conn: sqlite3.Connection, key: str, erased: Suppression) -> dict[str, int]:
    """One write transaction: a crash leaves either the person's data with their opt-out,
    or the erased row alone, never neither."""
    block_where, block_parameters = _block_match(key)
    deletes = {
        "blocks": (f"DELETE FROM blocks WHERE {block_where}", block_parameters),
        "consents": (f"DELETE FROM consents WHERE {_subject_match('subject', key)}", [key]),
        "known_locations": ("DELETE FROM known_locations WHERE number = ?", [key]),
        "contacts": (f"DELETE FROM contacts WHERE {_subject_match('recipient', key)}", [key]),
        "notices": (f"DELETE FROM notices WHERE {_subject_match('recipient', key)}", [key]),
        "deliveries": (f"DELETE FROM deliveries WHERE {_subject_match('recipient', key)}", [key]),
        "suppressions": ("DELETE FROM suppressions WHERE address = ?", [key]),
    }
    with _transaction(conn, write=True):
        counts = {
            table: conn.execute(sql, parameters).rowcount
            for table, (sql, parameters) in deletes.items()
        }
        if counts["suppressions"]:
            conn.execute(
                _UPSERT_SUPPRESSION,
                (erased.address, erased.source, erased.reason, erased.actor, _to_text(erased.time)),
            )
    return counts


def _clear_block_metadata(conn: sqlite3.Connection, before: datetime) -> int:
    with _transaction(conn, write=True):
        return conn.execute(
            "UPDATE blocks SET subject = '', message_id = ''"
            " WHERE time < ? AND (subject != '' OR message_id != '')",
            (_to_text(before),),
        ).rowcount


def _delete_blocks_before(conn: sqlite3.Connection, before: datetime) -> int:
    with _transaction(conn, write=True):
        return conn.execute("DELETE FROM blocks WHERE time < ?", (_to_text(before),)).rowcount


def _prune_audit(conn: sqlite3.Connection, before: datetime) -> int:
    """Entries are removed by id, as a prefix: an entry older than `before` that follows a
    newer one (a clock stepped back) stays until the newer one ages out."""
    with _transaction(conn, write=True):
        first_kept = conn.execute(
            "SELECT min(id) FROM audit WHERE time >= ?", (_to_text(before),)
        ).fetchone()[0]
        last = conn.execute(
            "SELECT id, hash FROM audit WHERE id < coalesce(?, (SELECT max(id) + 1 FROM audit))"
            " ORDER BY id DESC LIMIT 1",
            (first_kept,),
        ).fetchone()
        if last is None:
            return 0
        last_id, last_hash = last
        conn.execute(
            "INSERT INTO audit_anchor (id, entry_id, hash, pruned_at) VALUES (1, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET entry_id = excluded.entry_id,"
            " hash = excluded.hash, pruned_at = excluded.pruned_at",
            (last_id, last_hash, _to_text(datetime.now(UTC))),
        )
        return conn.execute("DELETE FROM audit WHERE id <= ?", (last_id,)).rowcount


_PURGED_TABLES = (
    "suppressions",
    "blocks",
    "consents",
    "known_locations",
    "contacts",
    "notices",
    "deliveries",
    "audit",
    "audit_anchor",
)


def _claim_erasure_key(conn: sqlite3.Connection, fingerprint: str) -> bool:
    """True when this key is the database's erasure key (recording it on first use)."""
    with _transaction(conn, write=True):
        conn.execute(
            "INSERT INTO settings (name, value) VALUES ('erasure_key_fingerprint', ?)"
            " ON CONFLICT (name) DO NOTHING",
            (fingerprint,),
        )
        (stored,) = conn.execute(
            "SELECT value FROM settings WHERE name = 'erasure_key_fingerprint'"
        ).fetchone()
    return hmac.compare_digest(stored, fingerprint)


def _purge(conn: sqlite3.Connection, event: AuditEvent, erasure_key: bytes) -> AuditEvent:
    """Everything goes in one transaction with the purge entry, so the log never shows a
    purge that did not happen or misses one that did. Opt-outs survive as keyed hashes, as
    after an erasure: a purge must never make an opted-out person reachable again."""
    with _transaction(conn, write=True):
        kept = {
            address if address.startswith(ERASED_PREFIX) else erased_address(erasure_key, address)
            for (address,) in conn.execute("SELECT DISTINCT address FROM suppressions")
        }
        for table in _PURGED_TABLES:
            conn.execute(f"DELETE FROM {table}")
        conn.executemany(
            "INSERT INTO suppressions (address, source, reason, actor, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                (
                    a,
                    ERASED_SOURCE,
                    "kept through a workspace purge",
                    event.actor,
                    _to_text(event.time),
                )
                for a in sorted(kept)
            ],
        )
        return _insert_audit(conn, event)
