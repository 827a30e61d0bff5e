"""What every command shares: exit statuses, one-line usage errors, the parser class."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from gateway.pipeline.dry_run import CheckError, parse_time

EXIT_ALLOW = 0
EXIT_BLOCK = 1
EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3
EXIT_IO = 74
"""Output or a file could not be written or read (sysexits.h EX_IOERR): the host's, not ours."""
EXIT_FAULT = 70
"""A fault of the gateway's own (sysexits.h EX_SOFTWARE): never read as allow or block."""


class UsageError(Exception):
    """Invalid input on the command line: one line on stderr, exit status 2."""


def parse_instant(value: str, *, now: datetime | None = None) -> datetime:
    try:
        return parse_time(value, now=now)
    except CheckError as exc:
        raise UsageError(str(exc)) from exc


class OneLineErrorParser(argparse.ArgumentParser):
    """Invalid input is one line on stderr and exit status 2, as scripts expect."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INVALID, f"error: {message} (see {self.prog} --help)\n")


def read_text(path: Path) -> str:
    """A file the operator named, or a usage error saying why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
