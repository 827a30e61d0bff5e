"""The queue that SQLite writers in several processes line up in before BEGIN IMMEDIATE.

With `workers = N`, N processes write one database file. A writer that finds SQLite's write
lock taken sleeps and retries on SQLite's own schedule (1, 2, 5, 10, 15 ms ...), so under
load a lost race costs milliseconds even when the holder needed a fraction of one. Each
writer first takes an exclusive `flock` on a file beside the database, polled at a much finer
grain, and the next writer starts as soon as the last one commits. SQLite's locking still
decides who may write; this lock only orders the queue, and a writer that does not take it
(an older process, the sqlite3 shell) still works, at SQLite's pace.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

FIRST_PAUSE_S = 0.0001
LONGEST_PAUSE_S = 0.001


def writer_lock_path(database: Path) -> Path:
    return database.with_name(database.name + "-writer.lock")


class WriterBusy(sqlite3.OperationalError):
    """Another writer held the lock for the whole timeout (at once, with a timeout of 0)."""


class WriterLock:
    """One per connection; several in one process exclude each other too (each holds its
    own open file description)."""

    def __init__(self, database: Path, timeout_s: float) -> None:
        self._path = writer_lock_path(database)
        self._timeout_s = timeout_s
        self._descriptor: int | None = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Waits at most the busy timeout, like SQLite would, then fails as SQLite does: a
        stopped process holding the lock must not hang every other writer."""
        descriptor = self._open()
        deadline = time.monotonic() + self._timeout_s
        pause = FIRST_PAUSE_S
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WriterBusy(
                        f"database is locked: another writer held {self._path.name} for"
                        f" {self._timeout_s:g} s"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, LONGEST_PAUSE_S)
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def _open(self) -> int:
        if self._descriptor is None:
            self._descriptor = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._descriptor


class LockingConnection(sqlite3.Connection):
    """A connection whose write transactions take `writer_lock` first (see `_transaction`)."""

    writer_lock: WriterLock | None = None

    def close(self) -> None:
        if self.writer_lock is not None:
            self.writer_lock.close()
        super().close()


def write_queue(connection: sqlite3.Connection) -> contextlib.AbstractContextManager[None]:
    if isinstance(connection, LockingConnection) and connection.writer_lock is not None:
        return connection.writer_lock.held()
    return contextlib.nullcontext()
