"""Gather what the decision needs from the store, before the pure `decide` runs.

Any fact that cannot be read raises `StoreUnavailable`: a message is never decided on a
missing fact (the pipeline turns it into a temporary failure).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from gateway.addresses import InvalidAddress, suppression_key
from gateway.callee import locate
from gateway.model import Facts, KnownLocation, OutboundMessage
from gateway.rules import RuleSet
from gateway.store.base import Store


def recipient_key(recipient: str) -> str | None:
    """The suppression key of a recipient, or None when it cannot be one (invalid address)."""
    try:
        return suppression_key(recipient)
    except InvalidAddress:
        return None


async def gather_facts(
    store: Store,
    message: OutboundMessage,
    rules: RuleSet,
    now: datetime,
    known_override: Mapping[str, KnownLocation] | None = None,
) -> Facts:
    keys = [key for key in map(recipient_key, message.recipients) if key is not None]
    suppressed = await store.suppressed(keys)
    if not message.channel.is_telephony:
        return Facts(suppressed=suppressed)
    numbers = list(message.recipients)
    known = await store.known_locations(numbers) | dict(known_override or {})
    return Facts(
        suppressed=suppressed,
        callees={n: locate(n, known.get(n), rules.calling.area_codes) for n in numbers},
        consents=await store.consents_for(numbers),
        recent_contacts=await store.contact_counts(
            numbers, now - timedelta(seconds=rules.calling.longest_cap_window_s)
        ),
        notice_sent_at=await store.notice_sent_at(numbers),
    )
