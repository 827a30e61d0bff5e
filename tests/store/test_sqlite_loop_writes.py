"""Small writes the event loop makes itself while the SQLite store's worker is idle
(gateway/store/sqlite/connection.py `_write_on_loop`): they never overtake a write submitted
earlier, never hold the loop while someone else holds a lock, are never applied twice when
they fall back to the worker, and leave the WAL checkpointed. The suppression count, a full
scan, runs beside the worker rather than on it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import gateway.store.sqlite.connection as sqlite_module
from gateway.model import Channel
from gateway.store.base import BlockQuery
from gateway.store.sqlite import SqliteStore
from tests.store.test_store import T0, block, suppression
from tests.store.test_writer_lock import HeldLock, opened_store


@pytest.fixture
async def store(tmp_path: Path):
    async with opened_store(tmp_path / "gateway.db", busy_timeout_s=5) as ready:
        yield ready


async def test_a_write_never_overtakes_one_submitted_before_it(store: SqliteStore) -> None:
    """The first block waits behind a job the worker is stuck on; the second, submitted
    while the first waits, must not be written on the loop ahead of it."""
    release = threading.Event()
    stuck = asyncio.create_task(store._worker.submit(release.wait))
    try:
        first = asyncio.create_task(store.record_block(block("first@example.com")))
        await asyncio.sleep(0.02)
        second = asyncio.create_task(store.record_block(block("second@example.com")))
        await asyncio.sleep(0.02)
        assert not first.done() and not second.done()
    finally:
        release.set()
    await stuck
    first_id, second_id = await first, await second
    assert first_id < second_id
    recorded = await store.query_blocks(BlockQuery())
    assert sorted(r.recipient for r in recorded) == ["first@example.com", "second@example.com"]


async def test_counting_suppressions_does_not_wait_for_the_worker(store: SqliteStore) -> None:
    """At ten million entries the count takes a second; queued on the worker it would hold
    every write behind it."""
    await store.add_suppressions([
        suppression("a@x.com"),
        suppression("a@x.com", source="unsubscribe"),
        suppression("b@x.com"),
    ])
    release = threading.Event()
    stuck = asyncio.create_task(store._worker.submit(release.wait))
    try:
        assert await asyncio.wait_for(store.count_suppressed(), timeout=10) == 2
    finally:
        release.set()
    await stuck


async def test_close_waits_for_a_count_whose_caller_gave_up(tmp_path: Path) -> None:
    """Once close returns nothing reads the file, not even a count still running in its
    thread after the gauge task that asked for it was cancelled (as at shutdown)."""
    started, release = threading.Event(), threading.Event()

    class HeldCount(SqliteStore):
        def _read_once(self, work: Callable[[sqlite3.Connection], int]) -> int:
            started.set()
            release.wait(10)
            return super()._read_once(work)

    store = HeldCount(tmp_path / "gateway.db")
    await store.open()
    caller = asyncio.create_task(store.count_suppressed())
    await asyncio.to_thread(started.wait, 10)
    caller.cancel()
    closing = asyncio.create_task(store.close())
    await asyncio.sleep(0.1)
    try:
        assert not closing.done()
    finally:
        release.set()
    await asyncio.wait_for(closing, 10)
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_a_write_finding_the_writers_queue_taken_waits_off_the_loop(
    store: SqliteStore, tmp_path: Path
) -> None:
    """Another process holds the writers' queue: the write waits on the worker (up to the
    5 s busy timeout) while the loop keeps running, and lands once the holder lets go."""
    held = HeldLock(tmp_path / "gateway.db")
    loop = asyncio.get_running_loop()
    try:
        writing = asyncio.create_task(store.mark_notice_sent("+12125550100", T0))
        started = loop.time()
        await asyncio.sleep(0.05)
        assert loop.time() - started < 2.0, "the loop waited for the lock itself"
        assert not writing.done()
    finally:
        held.release()
    await writing
    assert await store.notice_sent_at(["+12125550100"]) == {"+12125550100": T0}


async def test_a_write_finding_sqlite_locked_is_applied_once_after_the_lock_goes(
    store: SqliteStore, tmp_path: Path
) -> None:
    """A writer that does not use the queue (the sqlite3 shell) holds SQLite's lock: the
    loop's attempt is rolled back and handed to the worker, which applies it exactly once."""
    other = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
    loop = asyncio.get_running_loop()
    try:
        other.execute("BEGIN EXCLUSIVE")
        reserving = asyncio.create_task(
            store.reserve_contact("+12125550101", Channel.SMS, T0, "g1", [(5, 86_400)])
        )
        started = loop.time()
        await asyncio.sleep(0.05)
        assert loop.time() - started < 2.0, "the loop waited for SQLite's lock itself"
        assert not reserving.done()
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert await reserving is True
    counts = await store.contact_counts(["+12125550101"], T0.replace(year=2000))
    assert counts == {"+12125550101": 1}


async def test_loop_writes_keep_the_wal_checkpointed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's own connection never checkpoints (a checkpoint can take milliseconds), so
    the worker is asked to; without that the WAL would grow with every write.

    Each write waits for the worker to be idle, as a message's writes find it between
    messages, so every write runs on the loop: a write handed to the worker would be
    checkpointed by SQLite's own autocheckpoint there, at 1,000 pages, whatever the loop
    does. The bound is that autocheckpoint's 1,000 pages, the size the loop's cadence is
    documented to keep the WAL at; at one request per 20 commits the WAL holds about 20
    writes (~80 pages), and unchecked it grows to ~6,400."""
    monkeypatch.setattr(sqlite_module, "LOOP_COMMITS_PER_CHECKPOINT", 20)
    store = SqliteStore(tmp_path / "gateway.db")
    await store.open()
    try:
        for n in range(3_000):
            while not store._worker.idle:
                await asyncio.sleep(0)
            await store.mark_notice_sent(f"+1212555{n:04d}", T0)
        wal_pages = (tmp_path / "gateway.db-wal").stat().st_size // 4096
    finally:
        await store.close()
    assert wal_pages < 1_000, f"the WAL grew to {wal_pages} pages"
