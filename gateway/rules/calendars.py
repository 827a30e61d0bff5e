"""Holiday calendars of the `holidays` package, days it lacks defined relative to them, and
holidays a statute defines itself (a fixed date, a weekday of a month, a day relative to
Easter), for states whose legal holidays differ from the package's.

Pure functions of the year: a restricted-day rule asks for a year's dates and memoises them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

import holidays
from dateutil.easter import easter


@dataclass(frozen=True)
class HolidayCalendar:
    """One calendar of the `holidays` package; `label` names it in reason messages."""

    country: str
    subdiv: str
    categories: tuple[str, ...]
    label: str


@dataclass(frozen=True)
class RelativeHoliday:
    """A day the package lacks, `days` after the holiday named `after` (same calendars)."""

    name: str
    after: str
    days: int



@dataclass(frozen=True)
class DefinedHoliday:
    """A holiday as a statute defines it, on one of three anchors, plus `offset_days`:
    `month`+`day` (a fixed date; with `sunday_to_monday`, a Sunday's holiday is kept on the
    Monday too: both days count, the stricter reading),
    `month`+`weekday`+`nth` (the nth weekday of the month, -1 for the last), or `easter`
    (Western Easter Sunday)."""

    name: str
    month: int = 0
    day: int = 0
    weekday: int | None = None
    nth: int = 0
    easter: bool = False
    offset_days: int = 0
    sunday_to_monday: bool = False

    def dates_in(self, year: int) -> tuple[date, ...]:
        if self.easter:
            anchor = easter(year)
        elif self.weekday is not None:
            anchor = _nth_weekday(year, self.month, self.weekday, self.nth)
        else:
            anchor = date(year, self.month, self.day)
        day = anchor + timedelta(days=self.offset_days)
        if self.sunday_to_monday and day.weekday() == 6:
            return day, day + timedelta(days=1)
        return (day,)


def _nth_weekday(year: int, month: int, weekday: int, nth: int) -> date:
    if nth > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (nth - 1))
    following = date(year + month // 12, month % 12 + 1, 1)
    last = following - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7 + 7 * (-nth - 1))


@functools.lru_cache(maxsize=512)
def calendar_dates(calendar: HolidayCalendar, year: int) -> Mapping[date, str]:
    """Shared between rules (the federal calendar backs several states)."""
    return dict(
        holidays.country_holidays(
            calendar.country,
            subdiv=calendar.subdiv or None,
            years=year,
            categories=calendar.categories,
        )
    )
