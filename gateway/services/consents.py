"""Consent records: when each kind expires, and reading them from a CSV file.

CASL: express consent does not expire; implied consent from a purchase or contract lasts
two years, from an inquiry or application six months (S.C. 2010 c.23 s10(10), (9)(b)). A US
established business relationship from a purchase lasts 18 months (47 CFR 64.1200(f)(5)).
Express written consent lasts until revoked.
"""

from __future__ import annotations

import calendar
import csv
import io
from datetime import UTC, datetime

from gateway.addresses import InvalidAddress, suppression_key
from gateway.model import Channel, Consent, ConsentKind
from gateway.services.csv_cells import read_cell

IMPLIED_MONTHS = {
    ConsentKind.IMPLIED_PURCHASE: 24, ConsentKind.IMPLIED_INQUIRY: 6, ConsentKind.EBR: 18,
}
CSV_COLUMNS = ("subject", "channel", "kind", "obtained_at", "source", "evidence")


class ConsentError(ValueError):
    pass


def add_months(instant: datetime, months: int) -> datetime:
    """Same day of the month `months` later; the 31st (or Feb 29) becomes the month's last."""
    index = instant.month - 1 + months
    year, month = instant.year + index // 12, index % 12 + 1
    day = min(instant.day, calendar.monthrange(year, month)[1])
    return instant.replace(year=year, month=month, day=day)


def consent_expiry(kind: ConsentKind, obtained_at: datetime) -> datetime | None:
    months = IMPLIED_MONTHS.get(kind)
    return None if months is None else add_months(obtained_at, months)


def make_consent(
    subject: str, channel: str, kind: str, obtained_at: datetime, source: str, evidence: str = ""
) -> Consent:
    try:
        key = suppression_key(subject)
        consent_channel, consent_kind = Channel(channel), ConsentKind(kind)
    except (InvalidAddress, ValueError) as exc:
        raise ConsentError(str(exc)) from exc
    if obtained_at.tzinfo is None:
        raise ConsentError("obtained_at needs a time zone offset")
    if not source.strip():
        raise ConsentError("a consent needs a source (where it was obtained)")
    try:  # in UTC (as stored) and with its expiry, a date of years 1 to 9999
        obtained_at.astimezone(UTC)
        expiry = consent_expiry(consent_kind, obtained_at)
    except (ValueError, OverflowError):  # it was a 500 from the console
        raise ConsentError("obtained_at is too close to year 1 or 9999 to be stored") from None
    if "\x00" in source or "\x00" in evidence:
        # PostgreSQL's text cannot hold it: the same consent was stored on SQLite and
        # failed on PostgreSQL.
        raise ConsentError("source and evidence must not contain NUL characters")
    return Consent(
        subject=key,
        channel=consent_channel,
        kind=consent_kind,
        obtained_at=obtained_at,
        expires_at=expiry,
        source=source,
        evidence=evidence,
    )


def read_consents_csv(text: str) -> list[Consent]:
    """Every row is checked before any is used; errors name their line numbers. Cells a
    formula-safe export wrote (`'+14155550100`) read as they were (`csv_cells.read_cell`).
    A file the csv module cannot read (a cell over its field limit, a stray quote) is a
    ConsentError naming the line, as a row missing a required cell is."""
    rows = csv.DictReader(io.StringIO(text))
    try:
        fieldnames = rows.fieldnames
        missing = [c for c in CSV_COLUMNS[:5] if c not in (fieldnames or [])]
        if missing:
            raise ConsentError(f"CSV header lacks columns: {', '.join(missing)}")
        consents, errors = [], []
        for raw in rows:
            line = rows.line_num
            row = {name: read_cell(value) if isinstance(value, str) else value
                   for name, value in raw.items()}
            try:
                short = [c for c in CSV_COLUMNS[:5] if row.get(c) is None]
                if short:
                    raise ConsentError(f"no cell for {', '.join(short)}")
                obtained = datetime.fromisoformat(row["obtained_at"])
                consents.append(make_consent(
                    row["subject"], row["channel"], row["kind"], obtained, row["source"],
                    row.get("evidence") or "",
                ))
            except (ConsentError, ValueError, TypeError) as exc:
                errors.append(f"line {line}: {exc}")
    except csv.Error as exc:
        raise ConsentError(f"not readable as CSV after line {rows.line_num}: {exc}") from None
    if errors:
        raise ConsentError(f"{len(errors)} bad rows, nothing imported: " + "; ".join(errors[:10]))
    return consents
