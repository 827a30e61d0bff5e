"""The thread that owns a blocking database connection, and the batching of its jobs.

Jobs run one after another on the thread, in submission order. Jobs marked `batchable` that
are waiting together are handed to the store as one batch, which it runs in one transaction:
one commit (one fsync) and one wake-up of the event loop for all of them, instead of one of
each per job (group commit). `idle` tells the store when nothing is waiting or running here,
so work done elsewhere cannot overtake an earlier job.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.runtime.handoff import Handoff, settle

MAX_BATCH_JOBS = 64


@dataclass
class Job(Handoff):
    call: Callable[[], Any] | None = None
    batchable: bool = False
    durable: bool = True


class StoreWorker:
    def __init__(self, name: str, run_batch: Callable[[list[Job]], None]) -> None:
        """`run_batch` sets each job's result or error; it is given one job, or several
        batchable ones."""
        self._run_batch = run_batch
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._unfinished = 0
        self._unfinished_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    async def submit(
        self,
        call: Callable[[], Any],
        *,
        batchable: bool = False,
        durable: bool = True,
    ) -> Any:
        """`durable`: the store must have it on disk before answering."""
        return await self.enqueue(call, batchable=batchable, durable=durable)

    def enqueue(
        self,
        call: Callable[[], Any],
        *,
        batchable: bool = False,
        durable: bool = True,
    ) -> asyncio.Future[Any]:
        """Queues the job at once (`submit` does when first awaited); the future settles
        once it has run."""
        job = Job(*Handoff.on_running_loop(), call=call, batchable=batchable, durable=durable)
        self._count_unfinished(1)
        self._queue.put(job)
        return job.future

    @property
    def idle(self) -> bool:
        """No submitted job is waiting or running (those that ran have committed)."""
        return self._unfinished == 0

    def _count_unfinished(self, change: int) -> None:
        with self._unfinished_lock:
            self._unfinished += change

    def stop(self) -> None:
        """Blocks until the jobs already submitted are done."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        held: list[Job | None] = []  # taken while filling a batch, but not part of it
        while True:
            job = held.pop() if held else self._queue.get()
            if job is None:
                return
            batch = [job]
            while job.batchable and len(batch) < MAX_BATCH_JOBS:
                try:
                    following = self._queue.get_nowait()
                except queue.Empty:
                    break
                if following is None or not following.batchable:
                    held.append(following)
                    break
                batch.append(following)
            try:
                self._run_batch(batch)
            except BaseException as exc:  # no job may be left waiting forever
                for unfinished in batch:
                    unfinished.error = unfinished.error or exc
            settle(batch)
            self._count_unfinished(-len(batch))
