"""Writes that need not hold up an answer, kept so that shutdown can wait for them."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class BackgroundWrites:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, write: Coroutine[Any, Any, Any]) -> None:
        """`write` handles its own errors: nobody is left to hear of them."""
        task = asyncio.get_running_loop().create_task(write)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Wait for every write started so far, and for those they start (before the store
        closes)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
