"""A one-line progress bar for long command-line jobs (a million-row import).

It draws only on a terminal: a log file or a pipe gets nothing, the job's summary at the end
says what happened. Updates are throttled, so callers may report as often as they like.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 30
REDRAW_EVERY_S = 0.1


class Progress:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._enabled = self._stream.isatty()
        self._label = ""
        self._total = 0
        self._unit = ""
        self._drawn_at = 0.0
        self._width = 0

    def start(self, label: str, total: int, unit: str) -> None:
        """A new phase (reading, writing): `total` units of `unit` ("MB" counts bytes)."""
        self._label, self._total, self._unit = label, total, unit
        self._drawn_at = 0.0
        self.update(0)

    def update(self, done: int) -> None:
        """Safe from a store's worker thread: at worst two redraws interleave."""
        if not self._enabled:
            return
        now = time.monotonic()
        if now - self._drawn_at < REDRAW_EVERY_S and done < self._total:
            return
        self._drawn_at = now
        fraction = min(done / self._total, 1.0) if self._total else 1.0
        filled = round(fraction * BAR_WIDTH)
        line = (
            f"{self._label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%}"
            f"  {_amount(done, self._unit)} of {_amount(self._total, self._unit)} {self._unit}"
        )
        self._stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        self._stream.flush()

    def done(self) -> None:
        """Finish the phase's line, so the next output starts on a line of its own."""
        if self._enabled and self._width:
            self.update(self._total)
            self._stream.write("\n")
            self._stream.flush()
            self._width = 0


def _amount(count: int, unit: str) -> str:
    return f"{count / 1e6:,.1f}" if unit == "MB" else f"{count:,}"
