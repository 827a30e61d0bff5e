"""The gateway's clock: real time, or real time shifted to start at `--now`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self, start: datetime | None = None) -> None:
        self._offset = timedelta(0)
        if start is not None:
            self._offset = start.astimezone(UTC) - datetime.now(UTC)
        self.shifted = start is not None

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()
