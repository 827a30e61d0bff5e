"""Reading suppression lists from files: the gateway's CSV and the do-not-call registries.

The file is streamed and every row is checked before anything is written, so an import is
whole or not at all (`skip_bad` applies the valid rows and still reports the others), and
every bad row is reported with its line number. The write is one store transaction with one
audit entry. A million rows must import in well under a minute, so the shapes that fill real
lists take fast paths whose keys are exactly what `suppression_key` gives (the tests hold the
two together); anything else goes through the full parsers.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, TextIO

import phonenumbers

from gateway.addresses import InvalidAddress, MailboxRules, email_key, folded_key
from gateway.model import AuditEvent
from gateway.runtime.progress import Progress
from gateway.services.csv_cells import read_cell
from gateway.store.base import Store

# A US or Canadian number (NANP): area code and exchange each start with 2-9.
NANP_NUMBER = re.compile(r"\+?1?([2-9][0-9]{2}[2-9][0-9]{6})")
NANP_E164 = re.compile(r"\+1[2-9][0-9]{2}[2-9][0-9]{6}")
SEPARATORS = re.compile(r"[\s\-(),.]")
# email_validator's unquoted local part (RFC 5322 dot-atom) at an ASCII host name with a dot.
_ATEXT = r"a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~"
SIMPLE_EMAIL = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*@([a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+)")
EMAIL_MAX_LENGTH = 254
HEADER_WORDS = {"address", "email", "e-mail", "email_address", "phone", "number", "phone_number"}
MAX_REPORTED = 10
PROGRESS_EVERY_ROWS = 4096
READ_BUFFER_BYTES = 1 << 20


class SuppressionFileError(ValueError):
    """The file as a whole cannot be read (missing, not UTF-8, broken CSV quoting)."""


def validated_key(entry: str) -> str:
    """The suppression key of one entry; numbers must be possible E.164 numbers."""
    if "@" in entry:
        return email_key(entry)
    try:
        number = phonenumbers.parse(entry, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidAddress(f"not an E.164 number: {exc}") from exc
    if not phonenumbers.is_possible_number(number):
        raise InvalidAddress("not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def bulk_key(entry: str) -> str:
    """`validated_key` at import speed: a +1 number and a plain ASCII address skip the
    parsers (about 40 µs a row), and each domain is checked once by email_validator."""
    if NANP_E164.fullmatch(entry):
        return entry
    email = SIMPLE_EMAIL.fullmatch(entry)
    if (
        email is not None
        and len(entry) <= EMAIL_MAX_LENGTH
        and _normalized_domain(email.group(1)) == email.group(1).lower()
    ):
        return entry.lower()
    if not entry:
        raise InvalidAddress("no address or number")
    return validated_key(entry)


@functools.lru_cache(maxsize=1 << 16)
def _normalized_domain(domain: str) -> str:
    """The domain as `email_key` writes it; '' when email_validator refuses it (the full
    path then gives the row its exact error)."""
    try:
        return email_key(f"a@{domain}").partition("@")[2]
    except InvalidAddress:
        return ""


def registry_key(entry: str) -> str:
    """A do-not-call registry line: ten digits, separators and a leading 1 tolerated."""
    match = NANP_NUMBER.fullmatch(entry) or NANP_NUMBER.fullmatch(SEPARATORS.sub("", entry))
    if match is None:
        raise InvalidAddress(
            "not a 10-digit North American number (area code and exchange start with 2-9)"
        )
    return "+1" + match.group(1)


def _csv_entries(stream: TextIO) -> Iterator[tuple[int, str]]:
    """The first column, or the column a header row names; line numbers as in the file. A
    cell the gateway's own export made formula-safe (`'+14155550100`) reads as it was."""
    reader = csv.reader(stream)
    column = 0
    for row in reader:
        if reader.line_num == 1:
            names = [cell.strip().lower() for cell in row]
            header = next((i for i, name in enumerate(names) if name in HEADER_WORDS), None)
            if header is not None:
                column = header
                continue
        cell = read_cell(row[column].strip()).strip() if column < len(row) else ""
        if cell or any(other.strip() for other in row):
            yield reader.line_num, cell


def _registry_entries(stream: TextIO) -> Iterator[tuple[int, str]]:
    """US National DNC Registry and Canada's National DNCL downloads: one number a line."""
    for line, raw in enumerate(stream, start=1):
        entry = raw.strip()
        if entry:
            yield line, entry


@dataclass(frozen=True)
class FileFormat:
    entries: Callable[[TextIO], Iterator[tuple[int, str]]]
    key: Callable[[str], str]
    source: str


IMPORT_FORMATS = {
    "csv": FileFormat(_csv_entries, bulk_key, "import"),
    "dnc": FileFormat(_registry_entries, registry_key, "national-dnc"),
    "dncl": FileFormat(_registry_entries, registry_key, "canada-dncl"),
}


class _MeteredReader(io.RawIOBase):
    """The file's bytes as they are read: counted for the progress bar and hashed for the
    audit entry, in the one pass that parses them."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.bytes_read = 0
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = self._raw.readinto(buffer) or 0
        self.sha256.update(memoryview(buffer)[:count])
        self.bytes_read += count
        return count


@dataclass
class FileContents:
    """A checked file: its distinct keys, its row counts and its first bad rows."""

    keys: set[str] = field(default_factory=set)
    rows: int = 0
    bad: int = 0
    problems: list[str] = field(default_factory=list)
    sha256: str = ""


def read_suppression_file(path: Path, file_format: str, progress: Progress) -> FileContents:
    """Every row checked, nothing written. Raises SuppressionFileError if the file cannot
    be read at all; bad rows are counted and the first MAX_REPORTED described."""
    spec = IMPORT_FORMATS[file_format]
    contents = FileContents()
    try:
        with path.open("rb") as raw:
            metered = _MeteredReader(raw)
            progress.start(f"reading {path.name}", path.stat().st_size, "MB")
            stream = io.TextIOWrapper(
                io.BufferedReader(metered, READ_BUFFER_BYTES), encoding="utf-8-sig", newline=""
            )
            _check_rows(spec, stream, contents, lambda: progress.update(metered.bytes_read))
            progress.done()
            contents.sha256 = metered.sha256.hexdigest()
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SuppressionFileError(f"cannot read {path}: {exc}") from exc
    return contents


def _check_rows(
    spec: FileFormat, stream: TextIO, contents: FileContents, report: Callable[[], None]
) -> None:
    key, keys, problems = spec.key, contents.keys, contents.problems
    for line, entry in spec.entries(stream):
        contents.rows += 1
        try:
            keys.add(key(entry))
        except InvalidAddress as exc:
            contents.bad += 1
            if len(problems) < MAX_REPORTED:
                problems.append(f"line {line}: {entry!r}: {exc}")
        if contents.rows % PROGRESS_EVERY_ROWS == 0:
            report()


@dataclass(frozen=True)
class ImportSummary:
    """`applied` is False when bad rows stopped the import (nothing was written)."""

    rows: int
    bad: int
    distinct: int
    new: int
    problems: tuple[str, ...]
    applied: bool

    @property
    def valid(self) -> int:
        return self.rows - self.bad

    def line(self, name: str) -> str:
        present = self.distinct - self.new
        repeated = self.valid - self.distinct
        skipped = " (skipped)" if self.bad else ""
        return (
            f"imported {name}: {self.rows} rows read, {self.valid} valid ({self.new} new, "
            f"{present} already present, {repeated} repeated in the file), "
            f"{self.bad} bad{skipped}"
        )


async def import_suppression_file(
    store: Store,
    path: Path,
    file_format: str,
    *,
    reason: str,
    actor: str,
    now: datetime,
    skip_bad: bool,
    progress: Progress,
    mailboxes: MailboxRules,
) -> ImportSummary:
    """Check the whole file, then write its keys (source: the list and the file name), each
    email with its mailbox key, and one audit entry in one store transaction. A second import
    of the same file adds nothing new; it refreshes the entries' reason and time."""
    contents = read_suppression_file(path, file_format, progress)
    applied = skip_bad or not contents.bad
    source = f"{IMPORT_FORMATS[file_format].source}:{path.name}"

    def audit(new: int) -> AuditEvent:
        return AuditEvent(
            time=now, actor=actor, action="suppression.import", subject=source,
            details={
                "file": str(path), "sha256": contents.sha256, "format": file_format,
                "reason": reason, "rows": contents.rows, "bad": contents.bad,
                "count": len(contents.keys), "new": new,
            },
        )

    new = 0
    if applied and contents.keys:
        progress.start("writing", len(contents.keys), "entries")
        keys = list(contents.keys)
        new = await store.import_suppressions(
            keys, source=source, reason=reason, actor=actor, time=now,
            audit=audit, progress=progress.update,
            mailboxes={k: folded_key(k, mailboxes) for k in keys if "@" in k},
        )
        progress.done()
    return ImportSummary(
        rows=contents.rows, bad=contents.bad, distinct=len(contents.keys), new=new,
        problems=tuple(contents.problems), applied=applied,
    )
