"""`evidence ID`: print a decision's evidence document, the JSON `GET
/v1/decisions/{id}/evidence` returns. `ID` is the decision's id or the `upstream_id` the
agent was given (a Twilio sid, a Postmark MessageID, an SMTP queue id). An SMTP message to
several recipients has one queue id: every decision under it is printed, as a JSON array.
"""

from __future__ import annotations

import argparse
import json

from gateway.cli.common import OneLineErrorParser, UsageError
from gateway.model import DecisionRecord
from gateway.server import Services
from gateway.services.decision_reports import evidence_document
from gateway.store.base import DecisionQuery

MOST_DECISIONS_PER_ID = 1000
"""More than any message has recipients (SMTP takes at most a few hundred)."""


def add_evidence_commands(
    commands: argparse._SubParsersAction[OneLineErrorParser], common: argparse.ArgumentParser
) -> None:
    evidence = commands.add_parser(
        "evidence", parents=[common],
        help="print a decision's evidence as JSON (by decision id or upstream id)",
    )
    evidence.add_argument("id", metavar="DECISION_OR_UPSTREAM_ID")


async def run_evidence(services: Services, args: argparse.Namespace) -> int:
    found = await decisions_named(services, args.id.strip())
    if not found:
        raise UsageError(f"no decision has the id or upstream id {args.id!r}")
    documents = [evidence_document(record) for record in found]
    print(json.dumps(documents[0] if len(documents) == 1 else documents, indent=2,
                     ensure_ascii=False, default=str))
    return 0


async def decisions_named(services: Services, name: str) -> list[DecisionRecord]:
    """The decision with id `name` if there is one, else those with that upstream id
    (oldest first), each with its evidence."""
    store = services.store
    if name.isascii() and name.isdigit() and len(name) <= 18:
        record = await store.get_decision(int(name))
        if record is not None:
            return [record]
    if not name or len(name) > 200:
        return []
    listed = await store.query_decisions(
        DecisionQuery(upstream_id=name, limit=MOST_DECISIONS_PER_ID)
    )
    records = [await store.get_decision(d.id) for d in reversed(listed) if d.id is not None]
    return [record for record in records if record is not None]
