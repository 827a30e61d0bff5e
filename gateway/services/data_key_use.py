"""Which data keys processes seal under, so that a re-sealing pass never retires a key some
process sealed new rows under while the pass ran. Without this, `keys rotate-data` run
before every replica restarted with the new active key would leave the rows those replicas
write under a key marked retired, and a replica started without it could never open them.

Every process that may seal (a serving gateway, a CLI command) keeps a settings row
`sealing:data-key:<id>:<process>` whose value counts up every BEAT_S while it runs; when it
ends the row goes, or becomes STOPPED while a pass runs. A pass announces itself, notes the
rows before it walks the tables (`SealersAtStart`) and reads them again twice after it (a
little over two beats apart): a key stays when any of its processes was running at the
start, started during the pass, or still runs. A row that did not move in that time was
left by a process that died, and is marked STOPPED; rows already STOPPED at the start go.
Counting rather than timestamps: no two machines' clocks need agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from gateway.runtime.logs import log_event
from gateway.services.data_keys import RETIRED, has_setting
from gateway.store.base import SharedSettings, StoreUnavailable

log = logging.getLogger("gateway.services.data_key_use")

SEALING = "sealing:data-key:"
PASS_RUNNING = "resealing:pass:"
"""A settings row per pass while it runs: a process that stops then leaves its row (marked
STOPPED) for that pass to see; otherwise it removes it."""
STOPPED = "stopped"
BEAT_S = 10.0
STALE_AFTER_S = 2 * BEAT_S + 5
"""How long a row must not move to be taken for a dead process's (two missed beats)."""

Wait = Callable[[float], Awaitable[None]]
Rows = dict[str, tuple[str, str]]
"""Row name -> (key id, value)."""


def _prefix(key_id: str) -> str:
    """Key ids have no ':' (1-16 letters, digits, _ or -): 'k1:' never matches 'k10'."""
    return f"{SEALING}{key_id}:"


async def _rows(store: SharedSettings) -> Rows:
    return {
        name: (name.removeprefix(SEALING).partition(":")[0], value)
        for name, value in (await store.settings_named(SEALING)).items()
    }


class SealingBeat:
    """This process's row: written before it seals anything, counted up while it runs."""

    def __init__(self, store: SharedSettings, key_id: str) -> None:
        self._store = store
        self.key_id = key_id
        self.name = _prefix(key_id) + secrets.token_hex(8)
        self._count = 0

    async def beat(self) -> None:
        """A key retired under a process still sealing with it is taken back at once: a
        replica started without it is refused again, and the next pass re-seals the rows."""
        self._count += 1
        await self._store.put_setting(self.name, str(self._count))
        retired = RETIRED + self.key_id
        if await has_setting(self._store, retired):
            await self._store.drop_setting(retired)
            log_event(log, "data-key.retired_in_use", logging.ERROR, key_id=self.key_id,
                      action="restart this gateway with the new active data key, then run "
                             "`keys rotate-data` again")

    async def run(self) -> None:
        """Every BEAT_S until cancelled; a beat the store misses is only late."""
        while True:
            await asyncio.sleep(BEAT_S)
            try:
                await self.beat()
            except StoreUnavailable as exc:
                log_event(log, "data-key.beat_failed", logging.WARNING, error=str(exc))

    async def stop(self) -> None:
        """Removed outright when no pass runs: a pass that starts later walks everything
        this process wrote. A pass that has already started may have noted this row as
        running, and sees it as that, whatever happens to it now."""
        with contextlib.suppress(StoreUnavailable):
            if await self._store.settings_named(PASS_RUNNING):
                await self._store.put_setting(self.name, STOPPED)
            else:
                await self._store.drop_setting(self.name)


@dataclass(frozen=True)
class SealersAtStart:
    """Every process row as it was before the pass walked the tables."""

    rows: Rows
    running: str

    @classmethod
    async def read(cls, store: SharedSettings) -> SealersAtStart:
        """Announces the pass first: a process stopping from now on leaves its row."""
        running = PASS_RUNNING + secrets.token_hex(8)
        await store.put_setting(running, "running")
        return cls(await _rows(store), running)

    async def keys_in_use(
        self, store: SharedSettings, candidates: Iterable[str], wait: Wait = asyncio.sleep
    ) -> set[str]:
        """Of `candidates`, the keys a process may have sealed under while the pass ran. On
        the way, rows that did not move are marked STOPPED (their process died), and rows
        STOPPED before the pass began are removed: they tell nothing any more. Waits (two
        beats) only when a candidate key has a row that may be live."""
        wanted = set(candidates)
        in_use = {key_id for key_id, value in self.rows.values() if value != STOPPED}
        now = await _rows(store)
        later = now
        if any(value != STOPPED and key_id in wanted for key_id, value in now.values()):
            await wait(STALE_AFTER_S)
            later = await _rows(store)
        for name, (key_id, value) in later.items():
            if name not in self.rows:
                in_use.add(key_id)  # started during the pass
            if value == STOPPED:
                continue
            if later is not now and now.get(name, ("", ""))[1] == value:
                await store.put_setting(name, STOPPED)
            else:
                in_use.add(key_id)
        for name, (_, value) in self.rows.items():
            if value == STOPPED and later.get(name, ("", ""))[1] == STOPPED:
                await store.drop_setting(name)
        await store.drop_setting(self.running)
        return in_use & wanted
