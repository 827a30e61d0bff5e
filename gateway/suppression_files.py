"""Reading suppression lists from files: the gateway's CSV and the do-not-call registries.

Every line is validated before anything is applied, so an import is whole or not at all,
and every bad line is reported with its number.
"""

from __future__ import annotations

import csv
import io
import re

import phonenumbers

from gateway.addresses import InvalidAddress, suppression_key

NANP_DIGITS = re.compile(r"^\+?1?(\d{10})$")
SEPARATORS = re.compile(r"[\s\-(),.]")
HEADER_WORDS = {"address", "email", "phone", "number", "phone_number"}
MAX_REPORTED = 10


class SuppressionFileError(ValueError):
    pass


def _csv_entries(text: str) -> list[tuple[int, str]]:
    entries = []
    for line, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cell = row[0].strip() if row else ""
        if cell and not (line == 1 and cell.lower() in HEADER_WORDS):
            entries.append((line, cell))
    return entries


def _registry_entries(text: str) -> list[tuple[int, str]]:
    """US National DNC Registry and Canada's National DNCL downloads: one 10-digit NANP
    number per line (area code and number, separators tolerated)."""
    entries = []
    for line, raw in enumerate(text.splitlines(), start=1):
        digits = SEPARATORS.sub("", raw)
        if not digits:
            continue
        match = NANP_DIGITS.match(digits)
        entries.append((line, f"+1{match.group(1)}" if match else raw.strip()))
    return entries


IMPORT_FORMATS = {"csv": _csv_entries, "dnc": _registry_entries, "dncl": _registry_entries}
IMPORT_SOURCES = {"csv": "import", "dnc": "national-dnc", "dncl": "canada-dncl"}


def validated_key(entry: str) -> str:
    """The suppression key of one entry; numbers must be possible E.164 numbers."""
    if "@" not in entry:
        try:
            number = phonenumbers.parse(entry, None)
        except phonenumbers.NumberParseException as exc:
            raise InvalidAddress(f"not an E.164 number: {exc}") from exc
        if not phonenumbers.is_possible_number(number):
            raise InvalidAddress("not a possible phone number")
    return suppression_key(entry)


def read_suppression_file(text: str, file_format: str) -> list[str]:
    keys, errors = [], []
    for line, entry in IMPORT_FORMATS[file_format](text):
        try:
            keys.append(validated_key(entry))
        except InvalidAddress as exc:
            errors.append(f"line {line}: {entry!r}: {exc}")
    if errors:
        shown = "; ".join(errors[:MAX_REPORTED])
        more = f" (and {len(errors) - MAX_REPORTED} more)" if len(errors) > MAX_REPORTED else ""
        raise SuppressionFileError(f"{len(errors)} bad rows, nothing imported: {shown}{more}")
    return keys
