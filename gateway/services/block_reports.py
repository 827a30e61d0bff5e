"""How a block record reads outside the store: one shape for the CLI and the admin API.

Both print the same JSON object and the same CSV columns, so a report built from one can
be checked against the other. The CSV is formula-safe (`services.csv_cells`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from gateway.model import BlockRecord
from gateway.services.csv_cells import formula_safe_writer

BLOCK_CSV_COLUMNS = (
    "id",
    "time",
    "channel",
    "account",
    "recipient",
    "reasons",
    "rules_version",
    "subject",
)


class _Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


def block_as_dict(record: BlockRecord) -> dict[str, Any]:
    """`reasons` is the distinct codes (what a filter matches); `reason_details` keeps every
    reason with its message and rule."""
    return {
        "id": record.id,
        "time": record.time.isoformat(),
        "channel": record.channel.value,
        "account": record.account,
        "sender": record.sender,
        "recipient": record.recipient,
        "reasons": list(dict.fromkeys(r.code for r in record.reasons)),
        "reason_details": [r.as_dict() for r in record.reasons],
        "rules_version": record.rules_version,
        "message_id": record.message_id,
        "subject": record.subject,
        "size": record.size,
        "gateway_id": record.gateway_id,
        "evidence": dict(record.evidence),
    }


def block_csv_row(record: BlockRecord) -> list[str]:
    """One cell per `BLOCK_CSV_COLUMNS` entry; the reason codes are joined with commas. As
    stored: `write_blocks_csv` makes the cells formula-safe."""
    fields = block_as_dict(record)
    return [_cell(fields[column]) for column in BLOCK_CSV_COLUMNS]


def write_blocks_csv(
    out: _Writable, records: Iterable[BlockRecord], *, header: bool = True
) -> None:
    """Formula-safe: a cell an agent wrote (`=HYPERLINK(…)` as a subject) is text."""
    writer = formula_safe_writer(out)
    if header:
        writer.writerow(BLOCK_CSV_COLUMNS)
    writer.writerows(block_csv_row(record) for record in records)


def _cell(value: object) -> str:
    if value is None:
        return ""
    return ",".join(value) if isinstance(value, list) else str(value)
