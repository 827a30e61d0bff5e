"""The writers' queue (gateway/store/writer_lock.py) on real files: SQLite stores take it
before every write, reads never wait for it, and a holder that never lets go turns into a
temporary failure, not a hang."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import multiprocessing
import os
import sqlite3
from collections.abc import AsyncIterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from gateway.model import Suppression
from gateway.store.base import StoreUnavailable
from gateway.store.sqlite import SqliteStore
from gateway.store.writer_lock import writer_lock_path
from tests.store.test_store import T0


def entry(address: str) -> Suppression:
    return Suppression(address, "test", "why", T0)


class HeldLock:
    """The lock taken from outside the store, as another process would."""

    def __init__(self, database: Path) -> None:
        self._descriptor = os.open(writer_lock_path(database), os.O_RDWR | os.O_CREAT)
        fcntl.flock(self._descriptor, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self._descriptor, fcntl.LOCK_UN)
        os.close(self._descriptor)


@contextlib.asynccontextmanager
async def opened_store(path: Path, busy_timeout_s: float) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(path, busy_timeout_s=busy_timeout_s)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def store(tmp_path: Path):
    async with opened_store(tmp_path / "gateway.db", busy_timeout_s=0.3) as ready:
        yield ready


async def test_a_write_waits_for_the_lock_and_fails_temporarily_when_it_stays_held(
    store: SqliteStore, tmp_path: Path
) -> None:
    held = HeldLock(tmp_path / "gateway.db")
    try:
        with pytest.raises(StoreUnavailable, match=r"gateway\.db-writer\.lock"):
            await store.add_suppressions([entry("a@example.com")])
        # Reads do not queue behind writers.
        assert await store.suppressed(["a@example.com"]) == frozenset()
    finally:
        held.release()
    assert await store.add_suppressions([entry("a@example.com")]) == 1
    assert await store.suppressed(["a@example.com"]) == {"a@example.com"}


async def test_a_waiting_write_goes_through_once_the_holder_lets_go(
    store: SqliteStore, tmp_path: Path
) -> None:
    held = HeldLock(tmp_path / "gateway.db")
    writing = asyncio.create_task(store.add_suppressions([entry("b@example.com")]))
    await asyncio.sleep(0.05)
    assert not writing.done()
    held.release()
    assert await writing == 1


async def test_group_committed_writes_queue_too(store: SqliteStore, tmp_path: Path) -> None:
    """Small writes waiting together run as one batch (group commit), which queues too."""
    held = HeldLock(tmp_path / "gateway.db")
    try:
        results = await asyncio.gather(
            *(store.mark_notice_sent(f"+1415555{n:04d}", T0) for n in range(5)),
            return_exceptions=True,
        )
    finally:
        held.release()
    assert all(isinstance(r, StoreUnavailable) for r in results)
    await asyncio.gather(*(store.mark_notice_sent(f"+1415555{n:04d}", T0) for n in range(5)))
    assert len(await store.notice_sent_at([f"+1415555{n:04d}" for n in range(5)])) == 5


async def test_two_stores_on_one_file_lose_no_write(tmp_path: Path) -> None:
    """Two stores (as two worker processes would) writing at once through the queue."""
    stores = [SqliteStore(tmp_path / "gateway.db") for _ in range(2)]
    for each in stores:
        await each.open()
    try:
        await asyncio.gather(*(
            stores[n % 2].add_suppressions([entry(f"r{n}@example.com")]) for n in range(200)
        ))
        assert await stores[0].count_suppressed() == 200
    finally:
        for each in stores:
            await each.close()


def open_new_stores_in_step(
    directory: str, rounds: int, barrier: Barrier, failures: Queue
) -> None:
    """In a process of its own: open (and close) the store `<round>.db` in `directory` for
    each round, together with the other process; puts what each open raised, if anything,
    then None."""

    async def open_one(path: Path) -> None:
        store = SqliteStore(path)
        barrier.wait()
        try:
            await store.open()
        except StoreUnavailable as exc:
            failures.put(f"{path.name}: {exc}")
        finally:
            await store.close()

    for number in range(rounds):
        asyncio.run(open_one(Path(directory, f"{number}.db")))
    failures.put(None)


def test_processes_opening_a_new_store_at_once_both_open_it(tmp_path: Path) -> None:
    """`workers = 2` on a new SQLite store: both switch the new file to WAL, and SQLite
    answers one of two simultaneous switches "database is locked" without waiting (42
    opens failed in 200 pairs), which took the whole service down at start."""
    rounds = 80
    context = multiprocessing.get_context("spawn")
    barrier, failures = context.Barrier(2, timeout=60), context.Queue()
    processes = [context.Process(target=open_new_stores_in_step,
                                 args=(str(tmp_path), rounds, barrier, failures))
                 for _ in range(2)]
    for process in processes:
        process.start()
    reported, finished = [], 0
    while finished < len(processes):
        failure = failures.get(timeout=120)
        finished += failure is None
        reported += [failure] if failure else []
    for process in processes:
        process.join(timeout=30)
    assert [process.exitcode for process in processes] == [0, 0]
    assert reported == []
    modes = set()
    for number in range(rounds):
        with contextlib.closing(sqlite3.connect(tmp_path / f"{number}.db")) as connection:
            modes.add(connection.execute("PRAGMA journal_mode").fetchone()[0])
    assert modes == {"wal"}
