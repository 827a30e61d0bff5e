"""Calling and texting rule types (TCPA, CRTC, state laws).

Pure data, resolved at load time by `gateway.rules.calling_loader` (zone objects, windows as
seconds since local midnight, rules grouped by jurisdiction and channel), so the policy
only looks things up and compares. A rule says when it is in force (`effective`, `until`),
what it binds (channels, purposes), what lifts it for one callee (`exemptions`) and where
it comes from (`citation`, `confidence`).
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from gateway.model import Channel, ConsentKind, Purpose
from gateway.rules.calendars import (
    DefinedHoliday,
    HolidayCalendar,
    RelativeHoliday,
    calendar_dates,
)
from gateway.rules.errors import RulesError
from gateway.rules.geography import AreaCodeTable
from gateway.rules.keywords import Keywords

WEEKDAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TELEPHONY_CHANNELS = (Channel.CALL, Channel.SMS)

# Rules every rule set must have, with the only code each may carry.
CHECK_RULES = {
    "telephony.callee.located": "TIMEZONE_UNKNOWN",
    "telephony.number.valid": "INVALID_RECIPIENT",
    "telephony.suppression": "SUPPRESSED",
    "telephony.destination.covered": "DESTINATION_NOT_COVERED",
    "telephony.callee.timezone": "TIMEZONE_UNKNOWN",
    "operator.consent.required": "NO_CONSENT",
}
NOTICE_RULE = "sms.opt_out_notice"
NOTICE_PLACEHOLDERS = frozenset({"sender_name"})



@dataclass(frozen=True)
class TimeWindow:
    """Allowed from `start_s` up to, not including, `end_s` (seconds after local midnight):
    a call at exactly the end minute is already outside."""

    start_s: int
    end_s: int

    def __contains__(self, seconds: int) -> bool:
        return self.start_s <= seconds < self.end_s

    def __str__(self) -> str:
        return f"{_hhmm(self.start_s)}-{_hhmm(self.end_s)}"


@dataclass(frozen=True, kw_only=True)
class CallingRule:
    """What every rule has: identity, the reason it produces, scope, and its source."""

    id: str
    code: str
    name: str
    channels: frozenset[Channel]
    purposes: frozenset[Purpose]
    citation: str
    confidence: str
    verify: bool
    note: str
    effective: date | None = None
    until: date | None = None

    def binds(self, channel: Channel, purpose: Purpose) -> bool:
        return channel in self.channels and purpose in self.purposes

    @functools.cached_property
    def evidence(self) -> Mapping[str, object]:
        """What a decision's evidence says of this rule: built once, shared by every
        decision (which copies it before adding to it)."""
        return {
            "citation": self.citation,
            "effective": self.effective.isoformat() if self.effective else None,
            "until": self.until.isoformat() if self.until else None,
        }

    def in_force(self, day: date) -> bool:
        """From `effective` (inclusive) up to `until` (exclusive), in the callee's local date."""
        return (self.effective is None or self.effective <= day) and (
            self.until is None or day < self.until
        )


@dataclass(frozen=True)
class Exemption:
    """What lifts a rule for one callee: a recorded consent of one of `kinds` on the message's
    channel, unexpired, and (with `within_days`) obtained at most that many days ago."""

    kinds: frozenset[ConsentKind]
    within_days: int | None
    citation: str


@dataclass(frozen=True, kw_only=True)
class JurisdictionRule(CallingRule):
    """A rule of one jurisdiction: "US"/"CA" (national) or an ISO 3166-2 code."""

    jurisdiction: str
    automated_only: bool
    exemptions: tuple[Exemption, ...] = ()

    @property
    def activity(self) -> str:
        """How reason messages name what is restricted (the statute's own scope)."""
        if self.automated_only:
            return "automated telephone solicitation"
        return "telephone solicitation"


@dataclass(frozen=True, kw_only=True)
class WindowRule(JurisdictionRule):
    windows: tuple[TimeWindow | None, ...]  # by weekday, Monday first; None: not open that day

    def label(self, weekday: int) -> str:
        window = self.windows[weekday]
        listed = {w for w in self.windows if w is not None}
        if len(listed) == 1:
            return str(window)
        return f"{window} on {WEEKDAY_NAMES[weekday]}s"


@dataclass(frozen=True, kw_only=True)
class RestrictedDayRule(JurisdictionRule):
    weekdays: frozenset[int]
    calendars: tuple[HolidayCalendar, ...]
    extra_holidays: tuple[RelativeHoliday, ...]
    defined_holidays: tuple[DefinedHoliday, ...] = ()
    # A holiday restricts only when it falls on one of these weekdays (Rhode Island: a
    # Saturday holiday keeps the Saturday window).
    holiday_weekdays: frozenset[int] = frozenset(range(7))
    _by_year: dict[int, Mapping[date, str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def holidays_in(self, year: int) -> Mapping[date, str]:
        """Restricted dates of `year` with their names; memoised, as the calendars are pure
        functions of the year and a decision must not rebuild them."""
        days = self._by_year.get(year)
        if days is None:
            days = self._by_year[year] = self._compute(year)
        return days

    def _compute(self, year: int) -> Mapping[date, str]:
        days: dict[date, str] = {}
        for calendar in self.calendars:
            for day, name in calendar_dates(calendar, year).items():
                days.setdefault(day, f"{name} ({calendar.label})")
        for extra in self.extra_holidays:
            anchors = {
                day
                for calendar in self.calendars
                for anchor_year in (year - 1, year, year + 1)
                for day, name in calendar_dates(calendar, anchor_year).items()
                if extra.after in name.split("; ")
            }
            if not any(day.year == year for day in anchors):
                raise RulesError(f"rule {self.id}: no holiday named {extra.after!r} in {year}")
            for anchor in anchors:
                day = anchor + timedelta(days=extra.days)
                if day.year == year:
                    days.setdefault(day, extra.name)
        for defined in self.defined_holidays:
            for day in defined.dates_in(year):
                if day.year == year:
                    days.setdefault(day, defined.name)
        return {day: name for day, name in days.items() if day.weekday() in self.holiday_weekdays}


@dataclass(frozen=True, kw_only=True)
class CapRule(JurisdictionRule):
    """At most `limit` contacts per `window_s`. `per` is what the statute counts per
    ("recipient", or "offer": the gateway cannot tell offers apart, so it counts every
    contact to the recipient, which is stricter)."""

    limit: int = 1
    window_s: int = 86_400
    per: str = "recipient"

    @property
    def period(self) -> str:
        return period_text(self.window_s)


def period_text(window_s: int) -> str:
    """A cap's period as statutes say it: "24 h", "8 h", "30 days"."""
    days, rest = divmod(window_s, 86_400)
    return f"{days} days" if days > 1 and not rest else f"{window_s // 3600} h"


@dataclass(frozen=True, kw_only=True)
class ConsentRule(JurisdictionRule):
    """A marketing contact on the rule's channels needs a recorded, unexpired consent of one
    of `kinds`."""

    kinds: frozenset[ConsentKind] = frozenset()


@dataclass(frozen=True, kw_only=True)
class NoticeRule(CallingRule):
    """The SMS opt-out notice: repeated once `repeat_after` has passed, on every message in
    `every_message_in` (national jurisdictions)."""

    repeat_after: timedelta
    every_message_in: frozenset[str]


@dataclass(frozen=True)
class JurisdictionRules:
    """The rules of one jurisdiction for one channel, precomputed at load time."""

    windows: tuple[WindowRule, ...] = ()
    restricted_days: tuple[RestrictedDayRule, ...] = ()
    caps: tuple[CapRule, ...] = ()
    consents: tuple[ConsentRule, ...] = ()


NO_RULES = JurisdictionRules()


@dataclass(frozen=True)
class CallingRules:
    """Everything `decide_telephony` needs, resolved at load time.

    The consent rules always apply; `require_consent` (configuration: `[policy]
    require_consent`) lists channels on which the operator asks for a recorded consent of any
    kind even where no encoded law does. `zones` holds every IANA zone, loaded once, so a
    decision never reads tzdata. `Facts.recent_contacts` must count each of
    `cap_windows_s`.
    """

    rules: Mapping[str, CallingRule]
    by_jurisdiction: Mapping[tuple[str, Channel], JurisdictionRules]
    national: Mapping[str, str]
    notice: NoticeRule
    area_codes: AreaCodeTable
    keywords: Keywords
    sms_opt_out_notice: str
    zones: Mapping[str, zoneinfo.ZoneInfo] = field(repr=False)
    require_consent: frozenset[Channel] = frozenset()

    def rule(self, rule_id: str) -> CallingRule:
        return self.rules[rule_id]

    def for_jurisdiction(self, jurisdiction: str, channel: Channel) -> JurisdictionRules:
        return self.by_jurisdiction.get((jurisdiction, channel), NO_RULES)

    @property
    def cap_windows_s(self) -> tuple[int, ...]:
        return tuple(sorted({r.window_s for r in self.rules.values() if isinstance(r, CapRule)}))



def _hhmm(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"
