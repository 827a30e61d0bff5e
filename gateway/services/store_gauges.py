"""The store-backed gauges (is the store up, how many suppressions, how old each agent key
is), refreshed in the background so that a scrape never waits on the store."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gateway.runtime.clock import Clock
from gateway.runtime.logs import log_event
from gateway.runtime.metrics import Metrics
from gateway.store.base import Store, StoreUnavailable

log = logging.getLogger("gateway.services.store_gauges")

COUNT_SHARE_OF_TIME = 0.02


class StoreGauges:
    """Keeps the store-backed gauges fresh; logs only when reachability changes."""

    def __init__(
        self, metrics: Metrics, store: Store, monotonic: Callable[[], float] = time.monotonic,
        clock: Clock | None = None, agent_key_max_age_days: int = 90,
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.monotonic = monotonic
        self.clock = clock or Clock()
        self.reachable: bool | None = None
        self.next_count_at = 0.0
        self.key_ids: set[str] = set()
        metrics.key_max_age.labels("agent").set(agent_key_max_age_days * 86400)

    async def refresh(self) -> None:
        """Ping, and count when the last count's cost allows; a failure marks the store down
        and keeps the last count."""
        try:
            await self.store.ping()
            if self.monotonic() >= self.next_count_at:
                await self._count()
            await self._key_ages()
        except StoreUnavailable as exc:
            if self.reachable is not False:
                log_event(log, "store-unreachable", logging.ERROR, error=str(exc))
            self.reachable = False
        else:
            if self.reachable is False:
                log_event(log, "store-reachable-again")
            self.reachable = True
        self.metrics.store_up.set(1 if self.reachable else 0)
        self.metrics.store_checked.set_to_current_time()

    async def _count(self) -> None:
        started = self.monotonic()
        self.metrics.suppressions.set(await self.store.count_suppressed())
        self.next_count_at = started + (self.monotonic() - started) / COUNT_SHARE_OF_TIME

    async def _key_ages(self) -> None:
        """One series per usable agent key; a revoked or expired key's series goes."""
        now = self.clock.now()
        usable = {
            row.key_id: (now - row.created_at).total_seconds()
            for row in await self.store.agent_keys()
            if row.revoked_at is None and (row.expires_at is None or row.expires_at > now)
        }
        for key_id in self.key_ids - set(usable):
            self.metrics.key_age.remove("agent", key_id)
        for key_id, age in usable.items():
            self.metrics.key_age.labels("agent", key_id).set(age)
        self.key_ids = set(usable)

    async def run(self, interval_s: float) -> None:
        """Now, then every `interval_s` until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(interval_s)
