"""The decision log in the admin API: `GET /v1/decisions` and
`GET /v1/decisions/{id}/evidence`, registered with the admin API's access rules
(`AdminRoutes.guarded`: a bearer token, or a /review session for reading).

| Endpoint                              | rep           | manager | admin | owner |
|---------------------------------------|---------------|---------|-------|-------|
| `GET /v1/decisions`                   | its account's | yes     | yes   | yes   |
| `GET /v1/decisions/{id}/evidence`     |               | yes     | yes   | yes   |

A rep (an agent's account) sees only its own account's decisions, so an agent can ask why
a contact was refused without a manager. Every filter is checked, and a bad one is a 400
naming it. `format=csv` streams the whole filtered log page by page (never built in
memory), formula-safe; with `limit` it is one page, the next page's cursor in
`X-Next-Cursor`. The evidence is JSON, or with `Accept: text/html` a printable page
(server-rendered, every value escaped, no script).
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from gateway.model import Account, Channel, DecisionOutcome, DecisionRecord, Role
from gateway.runtime.clock import Clock
from gateway.runtime.logs import log_event
from gateway.services.decision_reports import (
    decision_as_dict,
    evidence_document,
    write_decisions_csv,
)
from gateway.store.base import DecisionLog, DecisionQuery, StoreUnavailable
from gateway.web.admin import (
    Handler,
    PageCursor,
    ParameterError,
    json_error,
    only_parameters,
    page_limit,
    single,
    time_window,
    wants_csv,
)
from gateway.web.evidence_page import evidence_page

log = logging.getLogger("gateway.web.decisions")
Guard = Callable[[Role, Handler], Callable[[web.Request], Awaitable[Any]]]

DECISION_PARAMETERS = frozenset((
    "since", "until", "channel", "outcome", "reason", "account", "sender", "recipient", "q",
    "upstream_id", "limit", "cursor", "format",
))
TEXT_FILTERS = {"account": 200, "sender": 320, "recipient": 320, "q": 200, "upstream_id": 200}
"""Free-text filters and their longest value."""
REASON_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
EXPORT_PAGE = 1000
DECISION_CURSOR = PageCursor("d1:")
NOT_STORED = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
"""On every answer: the console links its exports here, and a browser or proxy cache kept
recipients, subjects and evidence on disk after sign-out (the pages send no-store too)."""


class ExportCutShort(Exception):
    """The store failed after a streamed export began: the connection is cut, so the
    client sees an incomplete download rather than a file that looks whole."""


class DecisionRoutes:
    def __init__(self, store: DecisionLog, clock: Clock, guarded: Guard) -> None:
        self.store = store
        self.clock = clock
        self.guarded = guarded

    def register(self, app: web.Application) -> None:
        router = app.router
        router.add_get("/v1/decisions", self.guarded(Role.REP, self.decisions))
        router.add_get(
            r"/v1/decisions/{decision_id:\d{1,18}}/evidence",
            self.guarded(Role.MANAGER, self.evidence),
        )

    async def decisions(self, request: web.Request, account: Account) -> web.StreamResponse:
        """One page newest first with the next page's cursor (null on the last page), or
        the CSV export."""
        try:
            query = decision_query(request.query, self.clock.now())
            as_csv = wants_csv(request)
        except ParameterError as exc:
            return json_error(400, str(exc))
        if account.role < Role.MANAGER:
            if query.account not in (None, account.name):
                return json_error(403, "account: a rep sees only its own account's decisions")
            query = replace(query, account=account.name)
        paged = as_csv and "limit" not in request.query
        size = EXPORT_PAGE if paged else query.limit
        found = await self.store.query_decisions(replace(query, limit=size + 1))
        page, more = found[:size], len(found) > size
        next_cursor = DECISION_CURSOR.encode(page[-1].id) if more and page else None
        if not as_csv:
            return web.json_response({
                "decisions": [decision_as_dict(record) for record in page],
                "next_cursor": next_cursor,
            }, headers=NOT_STORED)
        headers = {**NOT_STORED, "Content-Disposition": 'attachment; filename="decisions.csv"'}
        if not paged and next_cursor is not None:
            headers["X-Next-Cursor"] = next_cursor
        response = web.StreamResponse(headers=headers)
        response.content_type = "text/csv"
        response.charset = "utf-8"
        await response.prepare(request)
        await response.write(_csv(page, header=True))
        while paged and more:
            query = replace(query, before_id=page[-1].id, limit=size + 1)
            try:
                found = await self.store.query_decisions(query)
            except StoreUnavailable as exc:
                log_event(log, "decision-export-cut-short", logging.ERROR, error=str(exc))
                raise ExportCutShort(str(exc)) from exc
            page, more = found[:size], len(found) > size
            await response.write(_csv(page, header=False))
        await response.write_eof()
        return response

    async def evidence(self, request: web.Request, account: Account) -> web.Response:
        decision_id = int(request.match_info["decision_id"])
        record = await self.store.get_decision(decision_id)
        if record is None:
            return json_error(404, f"no decision {decision_id}")
        document = evidence_document(record)
        if prefers_html(request.headers.get("Accept", "")):
            return evidence_page(document)
        return web.json_response(document, headers=NOT_STORED)


def prefers_html(accept: str) -> bool:
    """A browser (or `Accept: text/html`) gets the page; JSON otherwise, and for */*."""
    return "text/html" in accept.lower()


def _csv(records: list[DecisionRecord], *, header: bool) -> bytes:
    text = io.StringIO()
    write_decisions_csv(text, records, header=header)
    return text.getvalue().encode()


def decision_query(query: MultiMapping[str], now: datetime) -> DecisionQuery:
    """Every filter checked; the error names the first bad one."""
    only_parameters(query, DECISION_PARAMETERS)
    text: dict[str, str | None] = {}
    for name, longest in TEXT_FILTERS.items():
        value = single(query, name)
        if value is not None:
            if not value.strip():
                raise ParameterError(name, "must not be empty")
            if len(value) > longest:
                raise ParameterError(name, f"at most {longest} characters")
            if CONTROL.search(value):
                raise ParameterError(name, "must not contain control characters")
        text[name] = value
    reason = single(query, "reason")
    if reason is not None and not REASON_CODE.match(reason):
        raise ParameterError("reason", "must be a reason code such as QUIET_HOURS")
    since, until = time_window(query, now)
    cursor = single(query, "cursor")
    return DecisionQuery(
        since=since,
        until=until,
        channel=_choice(query, "channel", Channel),
        outcome=_choice(query, "outcome", DecisionOutcome),
        reason=reason,
        account=text["account"],
        sender=text["sender"],
        recipient=text["recipient"],
        text=text["q"],
        upstream_id=text["upstream_id"],
        limit=page_limit(query),
        before_id=None if cursor is None else DECISION_CURSOR.decode(cursor),
    )


def _choice(query: MultiMapping[str], name: str, kind: Any) -> Any:
    value = single(query, name)
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise ParameterError(name, f"must be one of {choices}") from None


