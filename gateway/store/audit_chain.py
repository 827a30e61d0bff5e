"""Hash chaining for the audit log, shared by every store backend.

Each entry's hash covers its content and the previous entry's hash, so changing, removing
or reordering any entry breaks verification from that entry on.
"""

from __future__ import annotations

import hashlib
import json

from gateway.model import AuditEvent

GENESIS_HASH = "0" * 64


def entry_hash(prev_hash: str, event: AuditEvent) -> str:
    body = json.dumps(
        {
            "prev": prev_hash,
            "time": event.time.isoformat(),
            "actor": event.actor,
            "action": event.action,
            "subject": event.subject,
            "details": event.details,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()
