"""Data-subject requests (export, erasure) and the owner's purge of the whole workspace.

Erasure must not undo an opt-out: a person who is erased and then re-imported from a
customer's list would otherwise be contacted again. Their suppression rows therefore
become one row under a keyed hash of their suppression key (`erased_address`), with the
keyed hash of their mailbox key beside it so that every spelling of the mailbox stays
refused, which the store matches on every lookup once `Store.use_erasure_key` has been called (see
`Services.open`). The hash is computed in the store rather than by each caller so that
every path that asks `suppressed` (pipeline facts, SMS STOP/START handling, the CLI)
honors erased opt-outs without knowing erasure exists.

Audit entries are append-only and hash-chained, so they are never rewritten: entries that
name the person stay until retention prunes them, and the privacy entries themselves name
the keyed hash, never the address.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.addresses import InvalidAddress, MailboxRules, folded_key
from gateway.config.settings import Config
from gateway.model import AuditEvent, DecisionRecord
from gateway.runtime.clock import Clock
from gateway.services.block_reports import block_as_dict
from gateway.services.decision_reports import decision_as_dict
from gateway.services.imports import validated_key
from gateway.store.base import ERASED_PREFIX, PersonalData, Store, erased_address


def outbox_directories(config: Config) -> tuple[Path, ...]:
    """Where the outbox upstreams write (see `build_email_upstream`, `build_twilio_upstream`)."""
    return (config.data_dir / "outbox" / "email", config.data_dir / "outbox" / "twilio")


def delete_files(directories: tuple[Path, ...], older_than: float | None = None) -> int:
    """Delete the regular files under `directories` (modified before the POSIX time
    `older_than`, when given); returns how many. Blocking: run it in a thread."""
    deleted = 0
    for directory in directories:
        if not directory.is_dir():
            continue
        for path in directory.rglob("*"):
            try:
                if not path.is_file() or (
                    older_than is not None and path.stat().st_mtime >= older_than
                ):
                    continue
                path.unlink()
            except FileNotFoundError:
                continue  # written and renamed, or deleted, meanwhile
            deleted += 1
    return deleted


def person_key(subject: str) -> str:
    """A real address or E.164 number, never a stored hash: "erasing" the hashed row of an
    erased person would delete their opt-out."""
    if subject.startswith(ERASED_PREFIX):
        raise InvalidAddress("this is an erased person's keyed hash, not an address or number")
    return validated_key(subject)


class Privacy:
    def __init__(
        self, store: Store, clock: Clock, key: bytes, mailboxes: Callable[[], MailboxRules]
    ) -> None:
        self.store = store
        self.clock = clock
        self.key = key
        self.mailboxes = mailboxes

    def _mailbox(self, key: str) -> str:
        """The mailbox key of an email key ("" for a number): an export shows, and an erasure
        replaces, the entries of every spelling of the mailbox."""
        return folded_key(key, self.mailboxes()) if "@" in key else ""

    async def export(self, subject: str, *, actor: str) -> dict[str, Any]:
        """Everything held about `subject` (address or number) as JSON-ready data.

        Raises `InvalidAddress` for a subject that is no address or number.
        """
        key = person_key(subject)
        data = await self.store.personal_data(key, self._mailbox(key))
        now = self.clock.now()
        await self.store.append_audit(
            AuditEvent(
                time=now,
                actor=actor,
                action="privacy.export",
                subject=erased_address(self.key, key),
                details={"records": _record_count(data)},
            )
        )
        return export_document(data, now)

    async def erase(self, subject: str, *, actor: str) -> dict[str, int]:
        """Delete `subject`'s personal data, keeping their opt-out as a keyed hash.

        Returns rows removed per table. Raises `InvalidAddress` as `export` does.
        """
        key = person_key(subject)
        now = self.clock.now()
        counts = await self.store.erase_personal_data(key, now, actor, self._mailbox(key))
        await self.store.append_audit(
            AuditEvent(
                time=now,
                actor=actor,
                action="privacy.erase",
                subject=erased_address(self.key, key),
                details={"removed": counts, "opt_out_kept": counts["suppressions"] > 0},
            )
        )
        return counts


async def purge(store: Store, config: Config, clock: Clock, *, actor: str) -> AuditEvent:
    """Erase every record and outbox file; the purge's own audit entry starts a new chain.

    Files go first: a failure there leaves the store (and its audit log) untouched.
    """
    files = await asyncio.to_thread(delete_files, outbox_directories(config))
    return await store.purge(
        AuditEvent(
            time=clock.now(),
            actor=actor,
            action="workspace.purge",
            details={"outbox_files": files},
        )
    )


def _record_count(data: PersonalData) -> int:
    return (
        len(data.suppressions)
        + len(data.erased_suppressions)
        + len(data.consents)
        + (data.known_location is not None)
        + len(data.blocks)
        + len(data.decisions)
        + len(data.contacts)
        + (data.notice_sent_at is not None)
        + len(data.deliveries)
        + len(data.audit)
    )


def export_document(data: PersonalData, now: datetime) -> dict[str, Any]:
    location = data.known_location
    return {
        "subject": data.key,
        "exported_at": now.isoformat(),
        # Each entry's own spelling and mailbox: an email's export holds the entries of every
        # spelling of its mailbox.
        "suppressions": [
            {
                "address": s.address,
                "mailbox": s.mailbox,
                "source": s.source,
                "reason": s.reason,
                "actor": s.actor,
                "time": s.time.isoformat(),
            }
            for s in data.suppressions
        ],
        "erased_suppression": bool(data.erased_suppressions),
        "consents": [
            {
                "channel": c.channel.value,
                "kind": c.kind.value,
                "obtained_at": c.obtained_at.isoformat(),
                "expires_at": c.expires_at.isoformat() if c.expires_at else None,
                "source": c.source,
                "evidence": c.evidence,
            }
            for c in data.consents
        ],
        "known_location": vars(location) if location is not None else None,
        "blocks": [block_as_dict(b) for b in data.blocks],
        "decisions": [_decision_dict(d) for d in data.decisions],
        "contacts": {
            "count": len(data.contacts),
            "rows": [
                {"channel": c.channel.value, "time": c.time.isoformat(), "gateway_id": c.gateway_id}
                for c in data.contacts
            ],
        },
        "sms_notice_sent_at": (
            data.notice_sent_at.isoformat() if data.notice_sent_at is not None else None
        ),
        "deliveries": [
            {
                "recipient": d.recipient,
                "state": d.state,
                "claimed_at": d.claimed_at.isoformat(),
                "upstream_id": d.upstream_id,
            }
            for d in data.deliveries
        ],
        "audit": [
            {
                "id": e.id,
                "time": e.time.isoformat(),
                "actor": e.actor,
                "action": e.action,
                "subject": e.subject,
                "details": e.details,
            }
            for e in data.audit
        ],
    }


def export_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, default=str)


def _decision_dict(record: DecisionRecord) -> dict[str, Any]:
    """The decision with its evidence, as the decision log keeps it."""
    return {**decision_as_dict(record), "evidence": dict(record.evidence)}
