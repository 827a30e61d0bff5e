"""The audit log in the console: `/review/audit`, admin and up.

Entries are read a page at a time (`query_audit`, newest first by id, the next page's
cursor in its link), filtered by actor (any part, without case), action (exactly, or a
family such as `suppression.`) and time, with `GET /v1/audit`'s parameters and checks.

Verifying the hash chain reads and hashes every entry, seconds for a log of millions, so
the page does not do it on each view: an admin asks with the "Verify the chain now" button
(a POST to /review/audit/verify), and the run is appended to the log itself as
`audit.verify` with what it found. The page shows the latest run, found with one index
seek: when and by whom, and either how many entries verified and where the chain starts
after pruning, or the first broken entry and its problem. So a stale result says how
stale it is, and the log records who checked it and when.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDict

from gateway.model import AuditEvent, Role
from gateway.store.base import AuditChain, AuditQuery
from gateway.web.admin import AUDIT_CURSOR, ParameterError, audit_page, audit_query
from gateway.web.console import Console
from gateway.web.pages import Viewer, render_page, see_other

VERIFY_ACTION = "audit.verify"
PAGE = "/review/audit"
VERIFY_PATH = "/review/audit/verify"
FILTERS = ("actor", "action", "since", "until")


def as_text(value: object) -> str:
    """A detail's value as one line of text: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class Row:
    id: int | None
    time: datetime
    actor: str
    action: str
    subject: str
    details: list[tuple[str, str]]

    @classmethod
    def of(cls, event: AuditEvent) -> Row:
        return cls(
            event.id, event.time, event.actor, event.action, event.subject,
            [(key, as_text(value)) for key, value in sorted(event.details.items())],
        )


def check_details(chain: AuditChain) -> dict[str, object]:
    """What a verification run records of its result."""
    details: dict[str, object] = {"intact": chain.problem is None, "entries": chain.entries}
    if chain.anchor_entry_id is not None and chain.pruned_at is not None:
        details["starts_after_entry"] = chain.anchor_entry_id
        details["pruned_at"] = chain.pruned_at.isoformat()
    if chain.problem is not None:
        details["broken_entry"] = chain.problem.entry_id
        details["problem"] = chain.problem.problem
    return details


@dataclass(frozen=True)
class LastCheck:
    """The latest verification run, read back from its entry."""

    time: datetime
    actor: str
    intact: bool
    entries: str
    starts_after_entry: str
    pruned_at: str
    broken_entry: str
    problem: str
    broken_link: str
    """The log from the broken entry down, so it heads the page."""

    @classmethod
    def of(cls, event: AuditEvent) -> LastCheck:
        details = event.details
        broken = details.get("broken_entry")
        return cls(
            event.time, event.actor, details.get("intact") is True,
            *(as_text(details.get(key, "")) for key in (
                "entries", "starts_after_entry", "pruned_at", "broken_entry", "problem")),
            broken_link=(f"{PAGE}?{urlencode({'cursor': AUDIT_CURSOR.encode(broken + 1)})}"
                         if isinstance(broken, int) else ""),
        )


class AuditLogPage:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.store = console.store

    def register(self, app: web.Application) -> None:
        app.router.add_get(PAGE, self.console.page(Role.ADMIN, self.show))
        app.router.add_post(VERIFY_PATH, self.console.page(Role.ADMIN, self.verify))

    async def show(self, request: web.Request, viewer: Viewer) -> web.Response:
        # A form sends every field; an empty one filters nothing.
        given = MultiDict((k, v.strip()) for k, v in request.query.items() if v.strip())
        kept = [(k, v) for k, v in given.items() if k != "cursor"]
        problem, rows, next_link = "", [], ""
        try:
            query = audit_query(given, self.console.clock.now())
        except ParameterError as exc:
            problem = f"Filter not applied: {exc}"
        else:
            events, cursor = await audit_page(self.store, query)
            rows = [Row.of(event) for event in events]
            if cursor is not None:
                next_link = f"{PAGE}?{urlencode([*kept, ('cursor', cursor)])}"
        latest = await self.store.query_audit(AuditQuery(action=VERIFY_ACTION, limit=1))
        actions = await self.store.audit_actions()
        return render_page(
            "console/audit.html", "Audit log", status=400 if problem else 200,
            viewer=viewer, section="audit",
            filters={name: given.get(name, "") for name in FILTERS},
            actions=actions,
            families=sorted({action.split(".")[0] + "." for action in actions if "." in action}),
            rows=rows, problem=problem, next_link=next_link,
            first_link=f"{PAGE}?{urlencode(kept)}".rstrip("?") if "cursor" in given else "",
            last_check=LastCheck.of(latest[0]) if latest else None,
        )

    async def verify(self, request: web.Request, viewer: Viewer) -> web.Response:
        form = await self.console.form(request, viewer)
        if isinstance(form, web.Response):
            return form
        chain = await self.store.check_audit()
        await self.console.audit(request, viewer, VERIFY_ACTION, check_details(chain))
        return see_other(PAGE)
