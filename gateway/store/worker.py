"""The thread that owns a blocking database connection, and the batching of its jobs.

Jobs run one after another on the thread, in submission order. Jobs marked `batchable` that
are waiting together are handed to the store as one batch, which it runs in one transaction:
one commit (one fsync) and one wake-up of the event loop for all of them, instead of one of
each per job (group commit).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.handoff import Handoff, settle

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
        job = Job(*Handoff.on_running_loop(), call=call, batchable=batchable, durable=durable)
        self._queue.put(job)
        return await job.future

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
