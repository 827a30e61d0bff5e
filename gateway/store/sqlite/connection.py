"""How the SQLite store runs its SQL: one database file, one connection, one worker thread.

sqlite3 calls block, so the connection lives on a dedicated thread (`StoreWorker`) and every
method runs its SQL there; that also serializes this process's writers without extra locks.
Write transactions begin IMMEDIATE, so writers in other processes queue instead of failing on
a stale snapshot; they queue on a file lock first (`writer_lock.py`), which hands over faster
than SQLite's busy timeout. Every commit is fsynced (synchronous=FULL): blocks,
suppressions, audit entries and contact counts must survive a power cut once reported. Four
kinds of write commit without waiting for the disk, since losing one to a power cut cannot
send anything unchecked: the delivery ledger's (durability would not prevent the one
duplicate a lost one can cause: a claim lost or kept pending both end in a resend), the
record of an SMS opt-out notice (lost, the next text carries the notice again), the
release of a contact that was not made (lost, the cap counts one contact too many) and the
decisions of copies already handed to a provider (lost, the provider's log still has the
message; a blocked recipient's decision is durable, as its block is). The next durable
commit or checkpoint takes them to the disk too (WAL order).
The small reads every message makes run on the event loop's own read-only connection, and
so do its small writes while the worker has nothing queued and no other writer holds the
lock; otherwise those writes are group-committed on the worker: those waiting together run in
one transaction, each in a savepoint of its own, and nobody hears of a write before the
commit that holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gateway.store.base import StoreUnavailable
from gateway.store.migrations import (
    Migration,
    discover_migrations,
    migration_directory,
    run_migrations,
)
from gateway.store.sealing import SealedColumns
from gateway.store.sqlite.sql import SqliteMigrationTarget
from gateway.store.worker import Job, StoreWorker
from gateway.store.writer_lock import LockingConnection, WriterBusy, WriterLock, write_queue

_T = TypeVar("_T")

# A reader on the event loop waits this long at most (WAL readers wait only for recovery).
READER_BUSY_TIMEOUT_S = 0.1

# The event loop's writer leaves checkpoints (milliseconds each) to the worker, asking for
# one after this many commits: about SQLite's own default of 1,000 WAL pages.
LOOP_COMMITS_PER_CHECKPOINT = 300


class SqliteConnection(SealedColumns):
    """The SQLite store's connections and the thread its SQL runs on: each module of the
    store (suppressions.py, blocks.py, ...) adds its methods to this, running its SQL
    through `_run`, `_read_on_loop` or `_read_in_thread`."""

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

    async def _read_in_thread(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """For a long read (a full count takes about a second at ten million entries): on
        the worker thread it would hold every write queued behind it, so it reads in a
        thread of its own, beside the writers."""
        read = asyncio.ensure_future(asyncio.to_thread(self._read_once, work))
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
        (`sql.transaction` nests), so one that fails undoes only itself. If the commit fails,
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
            _use_wal(connection)
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


def _use_wal(connection: StoreConnection) -> None:
    """WAL mode is kept in the file, so only the first connection to a new database switches
    it, in the writers' queue: two processes switching at once (`workers = N` starting on a
    new store) both hold a read lock and want the write lock, and SQLite answers one of them
    "database is locked" at once, without waiting, whatever the busy timeout."""
    (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
    if mode == "wal":
        return
    with write_queue(connection):
        connection.execute("PRAGMA journal_mode = WAL")


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


def _settle_job(job: Job, call: Callable[[], Any]) -> None:
    try:
        job.result = call()
    except (sqlite3.Error, OSError) as exc:
        job.error = StoreUnavailable(str(exc) or type(exc).__name__)
    except Exception as exc:  # the caller's own error (StoreUnavailable, ValueError, ...)
        job.error = exc


def _file_identity(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_dev, status.st_ino


def _require_same_file(path: Path, identity: tuple[int, int] | None) -> None:
    """SQLite keeps reading and writing a deleted or replaced file through its open
    descriptor, so without this check writes would vanish with the unlinked file."""
    if _file_identity(path) != identity:
        raise FileNotFoundError(f"database file {path} was removed or replaced")
