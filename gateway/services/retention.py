"""The retention job: personal data is kept only as long as `[retention]` allows.

Message metadata (subject, message id) goes first, the block rows later, the decision log's
rows after `decision_days` (400 by default: Twilio keeps message logs that long), delivered
copies in the outbox after hours, audit entries after the audit period (the store anchors the
chain so what remains still verifies). The gateway runs it every `interval_s`;
`compliance-gateway retention run` runs it once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from gateway.config.settings import Config
from gateway.model import AuditEvent
from gateway.runtime.clock import Clock
from gateway.runtime.logs import log_event
from gateway.services.privacy import delete_files, outbox_directories
from gateway.store.base import Store, StoreUnavailable

log = logging.getLogger("gateway.services.retention")


async def apply_retention(store: Store, config: Config, now: datetime) -> dict[str, int]:
    """Delete what is older than its limit at `now`; returns how many of each went.

    Blocks are deleted before their metadata is blanked, so no row is counted twice. When
    anything went, an audit entry records the counts (after the audit prune, so it is
    never the entry pruned).
    """
    limits = config.retention
    counts = {
        "blocks": await store.delete_blocks(now - timedelta(days=limits.blocks_days)),
        "decisions": await store.delete_decisions(now - timedelta(days=limits.decision_days)),
        "block_metadata": await store.clear_block_metadata(
            now - timedelta(days=limits.block_metadata_days)
        ),
        "outbox_files": await asyncio.to_thread(
            delete_files,
            outbox_directories(config),
            (now - timedelta(hours=limits.outbox_hours)).timestamp(),
        ),
        "audit": await store.prune_audit(now - timedelta(days=limits.audit_days)),
    }
    if any(counts.values()):
        await store.append_audit(
            AuditEvent(time=now, actor="gateway", action="retention.apply", details=counts)
        )
    return counts


async def run_retention_periodically(store: Store, config: Config, clock: Clock) -> None:
    """Every `interval_s` (first after one interval, so start-up stays quick), until
    cancelled. A failed run is logged and retried next interval: retention may lag, but the
    gateway keeps serving."""
    while True:
        await asyncio.sleep(config.retention.interval_s)
        try:
            counts = await apply_retention(store, config, clock.now())
        except (StoreUnavailable, OSError) as exc:
            log_event(log, "retention-failed", logging.WARNING, error=str(exc))
            continue
        log_event(log, "retention-applied", **counts)
