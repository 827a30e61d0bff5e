"""A real store whose next person write (or other call named) waits until the test lets it
go: two writers are interleaved at the store boundary, deterministically (no timing), so a
writer that read a person before another wrote them is seen writing after."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from gateway.store.base import Store

PERSON_WRITES = frozenset({"save_person", "update_person", "set_person_active"})


class HeldStore:
    """`store`, but once `hold(names)` is called the next call of one of those methods
    waits: `reached` is set when it is about to run, and it runs when `release()` is
    called."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._holding: frozenset[str] = frozenset()
        self.reached = asyncio.Event()
        self._released = asyncio.Event()
        self.held: str | None = None

    def hold(self, names: frozenset[str] = PERSON_WRITES) -> None:
        self._holding = names
        self.reached.clear()
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            if name in self._holding:
                self._holding = frozenset()
                self.held = name
                self.reached.set()
                await self._released.wait()
            return await attribute(*args, **kwargs)

        return call


async def interleaved(
    held: HeldStore, first: Any, meanwhile: Any, at: frozenset[str] = PERSON_WRITES
) -> Any:
    """Runs coroutine `first` until its next person write (or call of a method in `at`),
    then `meanwhile` to its end, then the rest of `first`; returns what `first` returns."""
    held.hold(at)
    task = asyncio.ensure_future(first)
    reached = asyncio.ensure_future(held.reached.wait())
    await asyncio.wait({task, reached}, return_when=asyncio.FIRST_COMPLETED)
    reached.cancel()
    assert not task.done(), "the first writer wrote no person"
    await meanwhile
    held.release()
    return await task
