"""Dry-run decisions ("may I send this?") for the CLI's `check` and `POST /v1/check`.

Both build the same hypothetical message and run the real pipeline's facts and policy, with
no side effects: nothing is recorded, counted or sent.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from gateway.addresses import e164
from gateway.model import (
    Account,
    Channel,
    EmailContent,
    KnownLocation,
    OutboundMessage,
    Purpose,
    TelephonyContent,
)
from gateway.pipeline.process import Pipeline
from gateway.runtime.ids import unique_hex


class CheckError(ValueError):
    """Input that does not describe a message: one line for the user."""


@dataclass(frozen=True)
class CheckRequest:
    channel: Channel
    to: str
    sender: str = ""
    subject: str = ""
    is_reply: bool = False
    at: datetime | None = None
    purpose: Purpose | None = None
    timezone: str = ""


RELATIVE_TIME = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(value: str, *, now: datetime | None = None) -> datetime:
    """ISO 8601 (naive means UTC), or with `now`, a span back from it such as 24h or 7d."""
    match = RELATIVE_TIME.match(value)
    if match and now is not None:
        try:
            return now - timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
        except (OverflowError, ValueError):  # ValueError: over int()'s 4300 digits
            raise CheckError("that span reaches beyond the calendar") from None
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise CheckError(f"not an ISO 8601 time: {value!r}") from None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def parse_timezone(name: str) -> str:
    if not name:
        return ""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise CheckError(f"unknown IANA time zone {name!r}") from None
    return name


def check_message(request: CheckRequest, account: Account, now: datetime) -> OutboundMessage:
    if request.purpose is not None:
        account = replace(account, purpose=request.purpose)
    if request.channel is Channel.EMAIL:
        if not request.sender:
            raise CheckError("an email check needs a From address")
        return OutboundMessage(
            id=unique_hex(), channel=Channel.EMAIL, ingress="check", account=account,
            envelope_sender=request.sender, recipients=(request.to,), received_at=now,
            email=EmailContent(
                from_addresses=(request.sender,), subject=request.subject,
                is_reply=request.is_reply, message_id="", size=0,
            ),
        )
    return OutboundMessage(
        id=unique_hex(), channel=request.channel, ingress="check", account=account,
        envelope_sender=request.sender, recipients=(e164(request.to),), received_at=now,
        telephony=TelephonyContent(from_number=request.sender),
    )


async def run_check(pipeline: Pipeline, request: CheckRequest, account: Account) -> dict:
    at = request.at or pipeline.clock.now()
    message = check_message(request, account, at)
    known = {}
    if request.timezone:
        known = {message.recipients[0]: KnownLocation(timezone=request.timezone)}
    decision = await pipeline.evaluate(message, at=at, known_locations=known)
    result = decision.as_dict()
    result.update(
        channel=request.channel.value,
        account=account.name,
        purpose=message.account.purpose.value,
        at=at.isoformat(),
    )
    return result
