"""Every CSV file the gateway writes, formula-safe, and reading its own cells back.

A spreadsheet opening a CSV file runs a cell that begins with `=`, `+`, `-` or `@` as a
formula (`=HYPERLINK(…)`, DDE payloads), and a cell that begins with a tab or a carriage
return may be trimmed to one that does. Agents control some of what the gateway exports
(subjects, senders, recipients), so every CSV writer goes through `formula_safe_writer`,
which writes such a cell with a leading apostrophe (OWASP, "CSV Injection"): spreadsheets
show it as text. `+14155550100` is written `'+14155550100`.

Beyond OWASP's first-character rule, a cell whose first character after leading whitespace
(spaces, tabs, line breaks, any Unicode space) is one of those gets the apostrophe too: an
import that trims cells before it reads them (LibreOffice's "Trim spaces", scripts that
strip every field) would otherwise turn ` =1+1` into a formula. So does the full-width form
of each (U+FF1D, U+FF0B, U+FF0D, U+FF20), which spreadsheets with East Asian input settings may take
for the ASCII one. What this costs: such cells show one more character.

The apostrophe is reversible: a cell is written with one exactly when
`needs_apostrophe(cell)`, and that holds for a cell that already begins with apostrophes
followed by a trigger (`'=x` is written `''=x`), so `read_cell` strips one apostrophe exactly
when the writer added one, and every import the gateway offers (suppression lists, consent
records) takes the gateway's own exports back unchanged.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, Protocol

TRIGGERS = frozenset("=+-@\t\r" + "\uff1d\uff0b\uff0d\uff20")
"""What makes a spreadsheet read a cell as a formula: OWASP's `= + - @`, tab and carriage
return, and their full-width forms."""
APOSTROPHE = "'"


class _Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


def needs_apostrophe(cell: str) -> bool:
    """Whether the writer prefixes `cell`: its first character, or its first after leading
    whitespace, is a trigger, or it is apostrophes followed by such a cell."""
    rest = cell.lstrip(APOSTROPHE)
    return bool(rest) and (rest[0] in TRIGGERS or rest.lstrip()[:1] in TRIGGERS)


def formula_safe(value: object) -> str:
    """The cell as written: None as empty, anything else as text, with the apostrophe when
    `needs_apostrophe`."""
    cell = "" if value is None else str(value)
    return APOSTROPHE + cell if needs_apostrophe(cell) else cell


def read_cell(cell: str) -> str:
    """A cell of a CSV file the gateway wrote, as it was before `formula_safe`: one leading
    apostrophe goes exactly when the writer would have added it. Any other cell is left as
    it is (an address may begin with an apostrophe)."""
    if cell[:1] == APOSTROPHE and needs_apostrophe(cell[1:]):
        return cell[1:]
    return cell


class FormulaSafeWriter:
    """`csv.writer`'s `writerow` and `writerows`, every cell through `formula_safe`. Lines
    end in CRLF as RFC 4180 has them: the csv module quotes a cell holding a character of
    the line terminator, so a cell with a bare carriage return is quoted too (under a "\n"
    terminator it would be written raw, and a reader would split the row there)."""

    def __init__(self, out: _Writable) -> None:
        self._writer = csv.writer(out, lineterminator="\r\n")

    def writerow(self, row: Iterable[object]) -> None:
        self._writer.writerow([formula_safe(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        for row in rows:
            self.writerow(row)


def formula_safe_writer(out: _Writable) -> FormulaSafeWriter:
    """The writer every CSV export uses (block log, suppression list, decisions)."""
    return FormulaSafeWriter(out)
