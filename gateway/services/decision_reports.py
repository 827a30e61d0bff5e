"""How a decision and its evidence read outside the store: one shape for the admin API
(`GET /v1/decisions`, `GET /v1/decisions/{id}/evidence`) and the CLI (`evidence ID`).

The evidence document is what the operator shows a court or regulator: the decision, the
callee's candidate zones with their local times, the rules applied with their citations, the
consent record relied on, the suppression entries found, what the gateway added to the copy
and the upstream's answer, as they stood when the decision was made. CSV exports are
formula-safe (`services.csv_cells`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from gateway.model import DecisionRecord
from gateway.services.csv_cells import formula_safe_writer

DECISION_CSV_COLUMNS = (
    "id",
    "time",
    "channel",
    "outcome",
    "account",
    "key_id",
    "sender",
    "recipient",
    "purpose",
    "reasons",
    "rules_version",
    "upstream_id",
    "subject",
)

EVIDENCE_PARTS = ("zones", "rules", "consent", "suppression", "rewrites", "upstream")
"""The evidence document's parts beside `decision`, in the order the page shows them."""


class _Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


def decision_as_dict(record: DecisionRecord) -> dict[str, Any]:
    """`reasons` is the distinct codes (what a filter matches); `reason_details` keeps every
    reason with its message and rule."""
    return {
        "id": record.id,
        "time": record.time.isoformat(),
        "channel": record.channel.value,
        "outcome": record.outcome.value,
        "account": record.account,
        "key_id": record.key_id,
        "sender": record.sender,
        "recipient": record.recipient,
        "purpose": record.purpose.value,
        "reasons": list(dict.fromkeys(r.code for r in record.reasons)),
        "reason_details": [r.as_dict() for r in record.reasons],
        "rules_version": record.rules_version,
        "upstream_id": record.upstream_id,
        "subject": record.subject,
        "gateway_id": record.gateway_id,
    }


def evidence_document(record: DecisionRecord) -> dict[str, Any]:
    """The decision and its evidence: `zones` (list of {"zone", "local_time"}; empty for an
    email), `rules` (list of {"id", "citation", ...}), `consent` (the record used, or null),
    `suppression` (the keys found on the list, or empty), `rewrites` (footer, headers, SMS
    notice added), `upstream` (the provider's answer, or null when nothing went out), and
    what else the decision saw (`ingress`, `country`, `regions`, `problem`,
    `mime_repairs`)."""
    evidence = dict(record.evidence)
    document: dict[str, Any] = {"decision": decision_as_dict(record)}
    document.update(
        zones=evidence.pop("zones", []),
        rules=evidence.pop("rules", []),
        consent=evidence.pop("consent", None),
        suppression=evidence.pop("suppression", []),
        rewrites=evidence.pop("rewrites", []),
        upstream=evidence.pop("upstream", None),
    )
    document.update(sorted(evidence.items()))
    return document


def decision_csv_row(record: DecisionRecord) -> list[object]:
    """One cell per DECISION_CSV_COLUMNS entry, reason codes joined with commas."""
    fields = decision_as_dict(record)
    return [
        ",".join(fields[column]) if column == "reasons" else fields[column]
        for column in DECISION_CSV_COLUMNS
    ]


def write_decisions_csv(
    out: _Writable, records: Iterable[DecisionRecord], *, header: bool = True
) -> None:
    """Formula-safe: a subject `=HYPERLINK(…)` or a number `+1…` is written as text. With
    `header=False` a later page of a streamed export continues the same file."""
    writer = formula_safe_writer(out)
    if header:
        writer.writerow(DECISION_CSV_COLUMNS)
    writer.writerows(decision_csv_row(record) for record in records)
