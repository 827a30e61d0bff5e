"""Gather what the decision needs from the store, before the pure `decide` runs.

Any fact that cannot be read raises (`StoreUnavailable`, or `UpstreamTemporaryError` when the
provider cannot say whether a template shows the footer): a message is never decided on a
missing fact, the pipeline turns it into a temporary failure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from gateway.addresses import InvalidAddress, MailboxRules, suppression_keys
from gateway.model import (
    CalleeLocation,
    Facts,
    KnownLocation,
    OutboundMessage,
    UpstreamPermanentError,
)
from gateway.policy.callee import locate
from gateway.rewrite.footer import TEMPLATE_FOOTER_KEYS, template_reference
from gateway.rules.ruleset import RuleSet
from gateway.store.base import Store


def recipient_keys(recipient: str, mailboxes: MailboxRules) -> tuple[str, ...]:
    """The keys an opt-out of the recipient's mailbox may be stored under (its spelling's and
    its mailbox's); none for an invalid address, which the policy refuses anyway."""
    try:
        return suppression_keys(recipient, mailboxes)
    except InvalidAddress:
        return ()


TemplateCheck = Callable[[int | str, Sequence[str]], Awaitable[bool]]


async def _template_has_footer(
    message: OutboundMessage, template_check: TemplateCheck | None
) -> bool | None:
    """Whether the provider's template shows the footer; None when nobody can render it."""
    template = message.email.template if message.email else None
    if template is None or template_check is None:
        return None
    try:
        return await template_check(template_reference(template), TEMPLATE_FOOTER_KEYS)
    except UpstreamPermanentError:
        return False  # no such template: nothing with a footer can be rendered


def merged_location(stored: KnownLocation | None, extra: KnownLocation) -> KnownLocation:
    """A dry run's extra knowledge adds to the registry's; it never hides a known state."""
    if stored is None:
        return extra
    given = {k: v for k, v in vars(extra).items() if v not in ("", None)}
    return replace(stored, **given)


def widened(stored: CalleeLocation, asked: CalleeLocation) -> CalleeLocation:
    """A dry run asks about more than the registry knows; it must never check fewer places
    than the real send will (a merged address could narrow a split area code)."""
    if stored.problem or asked.problem:
        return stored if stored.problem else asked
    if not stored.zones or not asked.zones:
        return replace(stored, zones=(), regions=tuple(sorted({*stored.regions, *asked.regions})))
    return replace(
        stored,
        zones=tuple(sorted({*stored.zones, *asked.zones})),
        regions=tuple(sorted({*stored.regions, *asked.regions})),
    )


async def _contact_counts(
    store: Store, numbers: list[str], now: datetime, windows_s: tuple[int, ...]
) -> dict[str, dict[int, int]]:
    """Each cap counts over its own window (a 30-day cap must not make a 24-hour one count
    30 days): one count per distinct window."""
    counts: dict[str, dict[int, int]] = {number: {} for number in numbers}
    for window_s in windows_s:
        found = await store.contact_counts(numbers, now - timedelta(seconds=window_s))
        for number in numbers:
            counts[number][window_s] = found.get(number, 0)
    return counts


async def gather_facts(
    store: Store,
    message: OutboundMessage,
    rules: RuleSet,
    now: datetime,
    known_override: Mapping[str, KnownLocation] | None = None,
    template_check: TemplateCheck | None = None,
    notices_being_recorded: Mapping[str, datetime] | None = None,
) -> Facts:
    """`notices_being_recorded`: texts that carried the opt-out notice and went out, whose
    record is still on its way to the store."""
    keys = [k for r in message.recipients for k in recipient_keys(r, rules.mailboxes)]
    suppressed = await store.suppressed(keys)
    if not message.channel.is_telephony:
        return Facts(
            suppressed=suppressed,
            template_has_footer=await _template_has_footer(message, template_check),
        )
    numbers = list(message.recipients)
    known = await store.known_locations(numbers)
    area_codes = rules.calling.area_codes
    callees = {n: locate(n, known.get(n), area_codes) for n in numbers}
    for number, extra in (known_override or {}).items():
        if number in callees:
            asked = locate(number, merged_location(known.get(number), extra), area_codes)
            callees[number] = widened(callees[number], asked)
    in_flight = notices_being_recorded or {}
    return Facts(
        suppressed=suppressed,
        callees=callees,
        consents=await store.consents_for(numbers),
        recent_contacts=await _contact_counts(store, numbers, now, rules.calling.cap_windows_s),
        notice_sent_at={
            **await store.notice_sent_at(numbers),
            **{n: in_flight[n] for n in numbers if n in in_flight},
        },
    )
