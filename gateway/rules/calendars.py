"""Holiday calendars of the `holidays` package, and days it lacks defined relative to them.

Pure functions of the year: a restricted-day rule asks for a year's dates and memoises them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import holidays


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
