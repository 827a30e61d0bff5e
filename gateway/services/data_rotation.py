"""Re-sealing the store under the active data key: `keys rotate-data`, and the background
pass that seals a database written before encryption: its values sealed, and its lookup
columns (suppressions' address and mailbox, consents' subject, contacts', notices' and
deliveries' recipient, known locations' number) replaced by their blind indexes with their
sealed copies, so that once a pass has finished the raw store holds none of them in clear
(gateway/store/resealing.py).

Resumable by construction: a pass skips every value already under the active key, so one
started again after a crash or a deploy only walks what is done. When a pass finishes, the
keys nothing is sealed under any more are marked retired in the store, and a replica may
then start without them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.runtime.logs import log_event
from gateway.services.data_key_use import SealersAtStart, Wait
from gateway.services.data_keys import (
    RETIRED,
    WRAPPED_INDEX_KEY,
    has_setting,
    stored_key_ids,
)
from gateway.store.base import SharedSettings, Store, StoreUnavailable
from gateway.store.resealing import SEALED_TABLES
from gateway.store.sealing import DataCipher, SealedDataError

log = logging.getLogger("gateway.services.data_rotation")

BATCH_ROWS = 1000
RESEALED_THROUGH = "resealed-through:data-key:"
"""A settings row per active key id: a full pass finished with every value under it."""

Progress = Callable[[str, int, int], None]
"""(table, rows walked so far, rows in the table)."""


@dataclass
class ResealReport:
    active_key: str
    resealed: dict[str, int] = field(default_factory=dict)
    retired: list[str] = field(default_factory=list)
    in_use: list[str] = field(default_factory=list)
    """Older keys a running process still seals under: kept, and the pass is not done (the
    next start, or `keys rotate-data` once every replica runs the new key, retires them)."""
    skipped: int = 0
    """Rows a concurrent writer won from the pass (PostgreSQL): left as they were, so the
    pass is not done, retires no key, and the next start walks again."""

    @property
    def done(self) -> bool:
        """Every value is sealed under the active key."""
        return not self.in_use and not self.skipped


async def reseal_store(
    store: Store, active_key: str, progress: Progress | None = None, batch: int = BATCH_ROWS,
    wait: Wait = asyncio.sleep,
) -> ResealReport:
    """One pass over every sealed table; a value that does not open stops it (SealedDataError
    naming the row), before anything is marked retired."""
    report = ResealReport(active_key)
    sealed_under, retired = await stored_key_ids(store)
    candidates = [key_id for key_id in sealed_under
                  if key_id != active_key and key_id not in retired]
    sealers = await SealersAtStart.read(store)
    for table in SEALED_TABLES:
        # Counted only for a progress report: the background pass has none to give.
        total = await store.count_rows(table) if progress is not None else 0
        after = None
        walked = resealed = 0
        while True:
            done = await store.reseal_batch(table, after, batch)
            walked += done.walked
            resealed += done.resealed
            report.skipped += done.skipped
            if progress is not None:
                progress(table.name, walked, max(total, walked))
            if done.next_after is None:
                break
            after = done.next_after
        report.resealed[table.name] = resealed
    await store.settle_resealing()
    report.in_use = sorted(await sealers.keys_in_use(store, candidates, wait))
    for key_id in candidates:
        # A skipped row may still be sealed under any older key: none is retired.
        if key_id in report.in_use or report.skipped:
            continue
        await store.claim_setting(RETIRED + key_id, active_key)
        # Whoever holds a retired key must not open the index key from a later copy.
        await store.drop_setting(WRAPPED_INDEX_KEY + key_id)
        report.retired.append(key_id)
    if report.done:
        await store.claim_setting(RESEALED_THROUGH + active_key, "done")
    return report


async def reseal_in_background(
    store: Store, active_key: str, finished: Callable[[], None] = lambda: None
) -> None:
    """At start-up, when no pass has finished under the active key (a database from before
    encryption, or a key rotated without `keys rotate-data`): sealed while serving.
    `finished` is called when this pass finishes (one finished before is what start-up
    reads, `any_pass_finished`)."""
    try:
        if await has_setting(store, RESEALED_THROUGH + active_key):
            return
        log_event(log, "data.reseal_started", active_key=active_key)
        report = await reseal_store(store, active_key)
    except (StoreUnavailable, SealedDataError) as exc:
        # Nothing is lost: the next start (or `keys rotate-data`) takes the pass up again.
        log_event(log, "data.reseal_failed", logging.ERROR, error=str(exc))
        return
    log_event(log, "data.reseal_finished", active_key=active_key,
              resealed=sum(report.resealed.values()), retired=report.retired,
              in_use=report.in_use, skipped=report.skipped)
    if report.done:
        finished()


PASS_WATCH_INTERVAL_S = 5.0
"""How often a worker that does not yet refuse values in clear asks the store whether a
sealing pass has finished."""


async def refuse_clear_values_once_a_pass_finishes(
    store: SharedSettings, cipher: DataCipher, interval_s: float = PASS_WATCH_INTERVAL_S
) -> None:
    """For every worker that started before any pass had finished (start-up has just asked,
    `any_pass_finished`): it learns from the store that one did (another worker's, another
    replica's, `keys rotate-data`) and refuses values in clear from then on, rather than
    from its next start. The first worker's own pass switches it on as it finishes, which
    ends this too; but that pass may fail, stop short, or find another finished first."""
    while True:
        await asyncio.sleep(interval_s)
        if cipher.refuses_clear_values:
            return
        try:
            if await any_pass_finished(store):
                cipher.refuse_clear_values()
                return
        except Exception as exc:  # whatever a driver raises, the watch must go on: fail closed
            log_event(log, "data.reseal_watch_failed", logging.WARNING,
                      error=str(exc) or type(exc).__name__)


async def any_pass_finished(store: SharedSettings) -> bool:
    """Whether a sealing pass has finished under any data key: every value was sealed then,
    so one in clear now was written past the gateway (`DataCipher.refuse_clear_values`)."""
    return bool(await store.settings_named(RESEALED_THROUGH))
