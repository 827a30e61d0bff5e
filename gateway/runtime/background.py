"""Work that must end before the store closes, kept so that shutdown can wait for it:
writes that need not hold up an answer, and sends whose answer nobody may be waiting for
any more (their caller was cut off) but whose delivery claim still has to be settled."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundWrites:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, write: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """`write` handles its own errors, or its caller awaits the task returned (through
        `asyncio.shield`, which hears of them even once the caller is cancelled)."""
        task = asyncio.get_running_loop().create_task(write)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def flush(self) -> None:
        """Wait for every write started so far, and for those they start (before the store
        closes)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
