"""The store-backed gauges (is the store up, how many suppressions, how old each key is),
refreshed in the background so that a scrape never waits on the store.

Key ages: agent keys are read here; every other kind comes from a `KeySource` the server
passes (token, DKIM and session keys from `key_ages.HeldKeys`, data keys from theirs). A key
that goes (revoked, expired, removed from the configuration) loses its series."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime

from gateway.config.settings import DEFAULT_KEY_MAX_AGE_DAYS, KEY_KINDS
from gateway.runtime.clock import Clock
from gateway.runtime.logs import log_event
from gateway.runtime.metrics import KeyAge, KeySource, Metrics
from gateway.store.base import Store, StoreUnavailable

log = logging.getLogger("gateway.services.store_gauges")

COUNT_SHARE_OF_TIME = 0.02


class StoreGauges:
    """Keeps the store-backed gauges fresh; logs only when reachability changes."""

    def __init__(
        self, metrics: Metrics, store: Store, monotonic: Callable[[], float] = time.monotonic,
        clock: Clock | None = None, max_age_days: Mapping[str, int] | None = None,
        key_sources: Sequence[KeySource] = (),
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.monotonic = monotonic
        self.clock = clock or Clock()
        self.key_sources = key_sources
        self.reachable: bool | None = None
        self.next_count_at = 0.0
        self.keys: set[tuple[str, str]] = set()
        days = dict.fromkeys(KEY_KINDS, DEFAULT_KEY_MAX_AGE_DAYS) | dict(max_age_days or {})
        for kind, kind_days in days.items():
            metrics.key_max_age.labels(kind).set(kind_days * 86400)

    async def refresh(self) -> None:
        """Ping, and count when the last count's cost allows; a failure marks the store down
        and keeps the last count. Reachability is published as soon as the ping answers, so
        no scrape shows a fresh count beside the store still marked down."""
        try:
            await self.store.ping()
            self._reached()
            if self.monotonic() >= self.next_count_at:
                await self._count()
            await self._key_ages()
        except StoreUnavailable as exc:
            if self.reachable is not False:
                log_event(log, "store-unreachable", logging.ERROR, error=str(exc))
            self.reachable = False
            self.metrics.store_up.set(0)
        self.metrics.store_checked.set_to_current_time()

    def _reached(self) -> None:
        if self.reachable is False:
            log_event(log, "store-reachable-again")
        self.reachable = True
        self.metrics.store_up.set(1)

    async def _count(self) -> None:
        started = self.monotonic()
        self.metrics.suppressions.set(await self.store.count_suppressed())
        self.next_count_at = started + (self.monotonic() - started) / COUNT_SHARE_OF_TIME

    async def _key_ages(self) -> None:
        """One series per key held; a revoked, expired or removed key's series goes. All are
        gathered before any is published, so a source that fails changes nothing."""
        now = self.clock.now()
        held = [
            KeyAge("agent", row.key_id, row.created_at)
            for row in await self.store.agent_keys()
            if row.revoked_at is None and (row.expires_at is None or row.expires_at > now)
        ]
        for source in self.key_sources:
            found = source()
            held.extend(await found if inspect.isawaitable(found) else found)
        self._publish(held, now)

    def _publish(self, held: Iterable[KeyAge], now: datetime) -> None:
        """Never a negative age: a key recorded a moment ago by a replica whose clock is a
        little ahead of this one's is new, not from the future."""
        current: set[tuple[str, str]] = set()
        for key in held:
            labels = (key.kind, key.key_id)
            current.add(labels)
            age = max(0.0, (now - key.created_at).total_seconds())
            self.metrics.key_age.labels(*labels).set(age)
            self.metrics.key_retired.labels(*labels).set(1 if key.retired else 0)
        for labels in self.keys - current:
            self.metrics.key_age.remove(*labels)
            self.metrics.key_retired.remove(*labels)
        self.keys = current

    async def run(self, interval_s: float) -> None:
        """Now, then every `interval_s` until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(interval_s)
