"""Results of work done on a worker thread, handed back to coroutines waiting on their loop.

Worker threads that batch work (the outbox spool, the SQLite store) finish many jobs at once;
waking each job's event loop once per batch instead of once per job keeps the loop from
spending its time on wake-ups and on taking the GIL back from the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Handoff:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    result: Any = field(default=None)
    error: BaseException | None = field(default=None)

    @staticmethod
    def on_running_loop() -> tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]:
        loop = asyncio.get_running_loop()
        return loop, loop.create_future()


def settle(handoffs: Iterable[Handoff]) -> None:
    """Called on the worker thread once a batch is done: one callback per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Handoff]] = {}
    for handoff in handoffs:
        by_loop.setdefault(handoff.loop, []).append(handoff)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed while the work was done
            loop.call_soon_threadsafe(_resolve, settled)


def _resolve(settled: list[Handoff]) -> None:
    for handoff in settled:
        if handoff.future.done():  # the waiter was cancelled; the work itself stands
            continue
        if handoff.error is None:
            handoff.future.set_result(handoff.result)
        else:
            handoff.future.set_exception(handoff.error)
