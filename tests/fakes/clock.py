"""A clock a test moves forward instead of sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.runtime.clock import Clock

# A Tuesday, 12:00 in New York: inside every calling window.
WORKING_HOURS = datetime(2026, 6, 2, 16, 0, tzinfo=UTC)


class SteppingClock(Clock):
    """Real time from `start` on, plus whatever the test has skipped ahead."""

    def __init__(self, start: datetime = WORKING_HOURS) -> None:
        super().__init__(start)

    def advance(self, seconds: float) -> None:
        self._offset += timedelta(seconds=seconds)
