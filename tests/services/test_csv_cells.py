"""Formula-safe CSV cells: what gets the apostrophe, that reading it back is exact, and that
the gateway's imports take its own exports back."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.services.consents import CSV_COLUMNS, make_consent, read_consents_csv
from gateway.services.csv_cells import (
    TRIGGERS,
    formula_safe,
    formula_safe_writer,
    needs_apostrophe,
    read_cell,
)
from gateway.services.imports import _csv_entries

OWASP = ["=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "\t=1", "\r=1"]
# Characters a cell is made of in the property tests: triggers, apostrophes and whitespace
# are over-represented, so the interesting prefixes come up often.
CELLS = st.text(
    alphabet=st.one_of(
        st.sampled_from([*sorted(TRIGGERS), "'", " ", "\n", "\u3000", "a", ","]),
        st.characters(),
    ),
    max_size=12,
)


@pytest.mark.parametrize("cell", OWASP)
def test_owasp_triggers_get_one_apostrophe(cell: str) -> None:
    assert formula_safe(cell) == "'" + cell


@pytest.mark.parametrize(
    "cell",
    [" =1+1", "  @SUM(A1)", "\n-2", "\u3000+1", "\uff1dHYPERLINK(\"x\")", "\uff0b1"],
    ids=["space", "spaces", "newline", "ideographic-space", "fullwidth-equals",
         "fullwidth-plus"],
)
def test_a_trigger_after_whitespace_or_in_full_width_gets_one_too(cell: str) -> None:
    assert formula_safe(cell) == "'" + cell


@pytest.mark.parametrize(
    "cell",
    ["", "bob@client.example.net", "Hello =world", "'quoted@client.example.net", "'", "  ",
     "2026-06-01T12:00:00+00:00", "SUPPRESSED,QUIET_HOURS"],
)
def test_other_cells_are_written_as_they_are(cell: str) -> None:
    assert formula_safe(cell) == cell
    assert read_cell(cell) == cell


def test_an_apostrophe_before_a_trigger_is_kept_apart_from_the_one_added() -> None:
    assert formula_safe("'=1") == "''=1"
    assert read_cell("''=1") == "'=1"
    assert read_cell("'=1") == "=1"


def test_none_and_numbers_are_cells_too() -> None:
    assert formula_safe(None) == ""
    assert formula_safe(-5) == "'-5"
    assert formula_safe(42) == "42"


@given(CELLS)
def test_reading_back_gives_the_cell(cell: str) -> None:
    assert read_cell(formula_safe(cell)) == cell


@given(CELLS)
def test_no_written_cell_begins_like_a_formula(cell: str) -> None:
    written = formula_safe(cell)
    assert written[:1] not in TRIGGERS
    assert written.lstrip()[:1] not in TRIGGERS
    assert needs_apostrophe(cell) == (written != cell)


@given(st.lists(st.lists(CELLS, min_size=1, max_size=4), max_size=5))
def test_a_written_file_parses_back_with_the_csv_module(rows: list[list[str]]) -> None:
    out = io.StringIO()
    formula_safe_writer(out).writerows(rows)
    parsed = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert [[read_cell(c) for c in row] for row in parsed] == rows


def test_suppression_import_reads_an_export_back() -> None:
    out = io.StringIO()
    writer = formula_safe_writer(out)
    writer.writerow(["address", "source", "reason", "time", "mailbox"])
    entries = ["+14155550100", "=cmd@client.example.net", "-dash@client.example.net",
               "'quoted@client.example.net"]
    writer.writerows([entry, "cli", "-", "2026-06-01T12:00:00+00:00", ""] for entry in entries)
    assert out.getvalue().splitlines()[1].startswith("'+14155550100,cli,'-,")
    read = [cell for _, cell in _csv_entries(io.StringIO(out.getvalue(), newline=""))]
    assert read == entries


def test_consent_import_reads_an_export_back() -> None:
    obtained = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    rows = [
        ["+14155550100", "sms", "express-written", obtained.isoformat(), "-web form",
         "=signed at the booth"],
        ["=cmd@client.example.net", "email", "express", obtained.isoformat(), "@trade show",
         "+badge scan"],
    ]
    out = io.StringIO()
    writer = formula_safe_writer(out)
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    assert "'+14155550100" in out.getvalue()
    assert read_consents_csv(out.getvalue()) == [
        make_consent(subject, channel, kind, obtained, source, evidence)
        for subject, channel, kind, _, source, evidence in rows
    ]
