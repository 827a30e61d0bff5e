"""The suppression list's changes, each with its audit entry.

Every way an opt-out arrives (unsubscribe link, one-click POST, mailto, STOP text, provider
webhook or refusal, CLI, admin API) and every way one is lifted goes through here, so none
can change the list without leaving its record. An email opt-out is stored with the key of
the mailbox it reaches (rules/mailboxes.toml), so that every spelling of that mailbox is
refused, and lifting one lifts the mailbox.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from gateway.addresses import (
    MailboxRules,
    folded_key,
    key_and_mailbox,
    mailbox_rules_version,
    suppression_key,
    suppression_keys,
)
from gateway.model import AuditEvent, Suppression
from gateway.runtime.clock import Clock
from gateway.runtime.logs import log_event
from gateway.runtime.metrics import Metrics
from gateway.store.base import Store

log = logging.getLogger("gateway.suppressions")


class Suppressions:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        mailboxes: Callable[[], MailboxRules],
    ) -> None:
        """`mailboxes` gives the rules in force (they change on SIGHUP)."""
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.mailboxes = mailboxes

    def lookup_keys(self, addresses: Sequence[str]) -> list[str]:
        """Every key a suppression of one of `addresses` may be stored under."""
        rules = self.mailboxes()
        return list(dict.fromkeys(k for a in addresses for k in suppression_keys(a, rules)))

    async def add(
        self,
        addresses: list[str],
        *,
        source: str,
        reason: str,
        actor: str,
        metric_source: str | None = None,
    ) -> int:
        """`metric_source` labels the opt-outs counter when `source` names more than how the
        opt-out arrived (a one-click entry's source names its link)."""
        now = self.clock.now()
        rules = self.mailboxes()
        pairs = [key_and_mailbox(a, rules) for a in addresses]
        added = await self.store.add_suppressions(
            [Suppression(k, source, reason, now, actor, mailbox) for k, mailbox in pairs]
        )
        await self.store.append_audit(
            AuditEvent(
                time=now,
                actor=actor,
                action="suppression.add",
                subject=",".join(dict.fromkeys(k for pair in pairs for k in pair if k)),
                details={"source": source, "reason": reason, "count": len(pairs), "new": added},
            )
        )
        self.metrics.unsubscribes.labels(metric_source or source).inc(len(pairs))
        return added

    async def remove(
        self, addresses: list[str], *, actor: str, reason: str | None = None
    ) -> int:
        """Lifts the mailbox, not one spelling: every entry under any key of the addresses
        (their spellings, their mailbox keys, erased hashes of either), whatever spelling or
        source put it there. The entries removed (and the `reason` given, if any) are named
        in the audit entry, written in the same transaction: a lifted opt-out is never
        without its record. Returns how many of the addresses were suppressed."""
        rules = self.mailboxes()
        groups = [suppression_keys(a, rules) for a in addresses]
        keys = list(dict.fromkeys(k for group in groups for k in group))
        present = await self.store.suppressed(keys)
        now = self.clock.now()
        lifted: list[Suppression] = []

        def audit(removed: Sequence[Suppression]) -> AuditEvent:
            lifted[:] = removed
            return AuditEvent(
                time=now,
                actor=actor,
                action="suppression.remove",
                subject=",".join(keys),
                details={
                    "count": len(addresses),
                    **({} if reason is None else {"reason": reason}),
                    "removed": [
                        {"address": e.address, "source": e.source, "mailbox": e.mailbox}
                        for e in removed
                    ],
                },
            )

        await self.store.remove_suppressions(keys, audit)
        return sum(1 for group in groups if present.intersection(group))

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

    async def lift_entry(
        self, key: str, source: str, *, actor: str, details: dict[str, object]
    ) -> Suppression | None:
        """Lift exactly one entry, the one stored under spelling `key` from `source`, and
        nothing else: not the mailbox's other spellings, not the key's other sources. The
        audit entry names the entry removed (with `details`) and is written in the same
        transaction; nothing is written when there was no such entry (None)."""
        now = self.clock.now()
        lifted: list[Suppression] = []

        def audit(removed: Sequence[Suppression]) -> AuditEvent:
            lifted[:] = removed
            return AuditEvent(
                time=now,
                actor=actor,
                action="suppression.remove",
                subject=key,
                details={
                    **details,
                    "removed": [
                        {"address": e.address, "source": e.source, "reason": e.reason,
                         "recorded_at": e.time.isoformat(), "actor": e.actor,
                         "mailbox": e.mailbox}
                        for e in removed
                    ],
                },
            )

        await self.store.remove_suppressions_from_source([key], source, audit=audit)
        return lifted[0] if lifted else None

    async def remove_with_source_prefix(
        self, addresses: list[str], prefix: str, *, actor: str
    ) -> int:
        """Only entries a provider caused (source `prefix…`) for these spellings: the
        provider lifts its own suppression of an address, and an entry it made for another
        spelling of the mailbox keeps holding."""
        keys = [suppression_key(a) for a in addresses]
        await self._audit_removal(keys, actor, {"source_prefix": prefix})
        return await self.store.remove_suppressions_with_source_prefix(keys, prefix)

    async def fold_stored(self) -> int:
        """Give stored email entries the mailbox keys of the rules in force: all of them when
        the mailbox rules changed since the last time, else those without one. At start-up
        and after a rules reload; audited when it changed anything."""
        rules = self.mailboxes()
        changed = await self.store.update_mailboxes(
            lambda key: folded_key(key, rules), mailbox_rules_version(rules)
        )
        if changed:
            log_event(log, "suppressions-folded", entries=changed, rules=rules.version)
            await self.store.append_audit(
                AuditEvent(
                    time=self.clock.now(),
                    actor="gateway",
                    action="suppression.fold",
                    details={"entries": changed, "mailbox_rules": mailbox_rules_version(rules)},
                )
            )
        return changed

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
