"""The suppression list's changes, each with its audit entry.

Every way an opt-out arrives (unsubscribe link, one-click POST, mailto, STOP text, provider
webhook or refusal, CLI, admin API) and every way one is lifted goes through here, so none
can change the list without leaving its record.
"""

from __future__ import annotations

from datetime import datetime

from gateway.addresses import suppression_key
from gateway.model import AuditEvent, Suppression
from gateway.runtime.clock import Clock
from gateway.runtime.metrics import Metrics
from gateway.store.base import Store


class Suppressions:
    def __init__(self, store: Store, clock: Clock, metrics: Metrics) -> None:
        self.store = store
        self.clock = clock
        self.metrics = metrics

    async def add(self, addresses: list[str], *, source: str, reason: str, actor: str) -> int:
        now = self.clock.now()
        keys = [suppression_key(a) for a in addresses]
        added = await self.store.add_suppressions(
            [Suppression(k, source, reason, now, actor) for k in keys]
        )
        await self.store.append_audit(
            AuditEvent(
                time=now,
                actor=actor,
                action="suppression.add",
                subject=",".join(keys),
                details={"source": source, "reason": reason, "count": len(keys), "new": added},
            )
        )
        self.metrics.unsubscribes.labels(source).inc(len(keys))
        return added

    async def remove(self, addresses: list[str], *, actor: str) -> int:
        """Every source's entry goes. The audit entry is written first: a lifted opt-out must
        never be without its record, even if the store fails in between."""
        keys = [suppression_key(a) for a in addresses]
        await self._audit_removal(keys, actor, {"count": len(keys)})
        return await self.store.remove_suppressions(keys)

    async def remove_from_source(
        self,
        addresses: list[str],
        source: str,
        *,
        actor: str,
        recorded_before: datetime | None = None,
    ) -> int:
        """Only `source`'s entries (START lifts a STOP); others stay in force. With
        `recorded_before`, only entries written before that time (a START never lifts a STOP
        recorded after, or too near, its own arrival)."""
        keys = [suppression_key(a) for a in addresses]
        details: dict[str, object] = {"source": source}
        if recorded_before is not None:
            details["recorded_before"] = recorded_before.isoformat()
        await self._audit_removal(keys, actor, details)
        return await self.store.remove_suppressions_from_source(
            keys, source, recorded_before=recorded_before
        )

    async def remove_with_source_prefix(
        self, addresses: list[str], prefix: str, *, actor: str
    ) -> int:
        """Only entries a provider caused (source `prefix…`)."""
        keys = [suppression_key(a) for a in addresses]
        await self._audit_removal(keys, actor, {"source_prefix": prefix})
        return await self.store.remove_suppressions_with_source_prefix(keys, prefix)

    async def _audit_removal(
        self, keys: list[str], actor: str, details: dict[str, object]
    ) -> None:
        await self.store.append_audit(
            AuditEvent(
                time=self.clock.now(),
                actor=actor,
                action="suppression.remove",
                subject=",".join(keys),
                details=details,
            )
        )
