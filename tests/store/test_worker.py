"""Group commit: the worker hands jobs waiting together to the store as one batch, in order,
and the SQLite store runs a batch in one transaction where a failing job undoes only itself."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from gateway.model import AuditEvent
from gateway.store.base import BlockQuery, StoreUnavailable
from gateway.store.sealing import PLAIN
from gateway.store.sqlite import SqliteStore
from gateway.store.sqlite.blocks import insert_block
from gateway.store.sqlite.sql import transaction
from gateway.store.worker import Job, StoreWorker
from tests.store.test_store import T0, block


async def test_jobs_waiting_together_form_one_batch_in_order() -> None:
    started, release = threading.Event(), threading.Event()
    batches: list[list[str]] = []

    def run_batch(jobs: list[Job]) -> None:
        batches.append([job.call() for job in jobs])
        for job in jobs:
            job.result = batches[-1]

    def held() -> str:
        started.set()
        release.wait(5)
        return "held"

    worker = StoreWorker("test-store", run_batch)
    first = asyncio.create_task(worker.submit(held, batchable=True))
    assert await asyncio.to_thread(started.wait, 5)
    names = ["a", "b", "c", "alone", "d", "e"]
    rest = [
        asyncio.create_task(worker.submit(lambda n=n: n, batchable=n != "alone")) for n in names
    ]
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(first, *rest)
    await asyncio.to_thread(worker.stop)

    assert batches == [["held"], ["a", "b", "c"], ["alone"], ["d", "e"]]


async def test_an_error_reaches_only_its_own_job() -> None:
    def run_batch(jobs: list[Job]) -> None:
        for job in jobs:
            try:
                job.result = job.call()
            except ValueError as exc:
                job.error = exc

    worker = StoreWorker("test-store", run_batch)

    def fails() -> None:
        raise ValueError("mine")

    results = await asyncio.gather(
        worker.submit(lambda: 1, batchable=True), worker.submit(fails, batchable=True),
        worker.submit(lambda: 3, batchable=True), return_exceptions=True,
    )
    await asyncio.to_thread(worker.stop)
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], ValueError)


async def test_a_failing_write_in_a_batch_undoes_only_itself(tmp_path: Path) -> None:
    """Writes sharing a transaction: the one that fails after writing leaves nothing, the
    others are committed, and the audit chain stays whole."""
    store = SqliteStore(tmp_path / "gateway.db")
    await store.open()

    def writes_then_fails(conn: sqlite3.Connection) -> None:
        with transaction(conn, write=True):
            insert_block(conn, block("doomed@example.com"), PLAIN)
            raise ValueError("after writing")

    started, release = threading.Event(), threading.Event()
    holding = asyncio.create_task(store._submit(lambda: (started.set(), release.wait(5))))
    assert await asyncio.to_thread(started.wait, 5)  # what follows queues up as one batch
    gathered = asyncio.gather(
        *(store.record_block(block(f"kept{n}@example.com")) for n in range(5)),
        store._run(writes_then_fails, batchable=True),
        *(store.append_audit(AuditEvent(T0, "ops", "test", f"s{n}", {})) for n in range(5)),
        return_exceptions=True,
    )
    await asyncio.sleep(0.05)
    release.set()
    await holding
    outcomes = await gathered

    assert isinstance(outcomes[5], ValueError)
    assert not any(isinstance(o, BaseException) for i, o in enumerate(outcomes) if i != 5)
    recipients = {b.recipient for b in await store.query_blocks(BlockQuery())}
    assert recipients == {f"kept{n}@example.com" for n in range(5)}
    assert await store.verify_audit() is None
    assert len(await store.audit_events()) == 5
    await store.close()


async def test_a_batch_on_a_vanished_file_fails_every_job(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "gateway.db")
    await store.open()
    (tmp_path / "gateway.db").rename(tmp_path / "moved.db")

    outcomes = await asyncio.gather(
        *(store.record_block(block(f"r{n}@example.com")) for n in range(4)),
        return_exceptions=True,
    )

    assert all(isinstance(o, StoreUnavailable) for o in outcomes)
    await store.close()
