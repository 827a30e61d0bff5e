"""The console's suppression list at /review/suppressions: managers and up search and page
through it; admins and up (the admin API's roles for the same changes) add and lift
entries, with a reason, through the `Suppressions` service, whose own audit entry names
the person signed in."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlencode

from aiohttp import web

from gateway.model import Role
from gateway.services.suppressions import Suppressions
from gateway.store.base import ERASED_SOURCE, SuppressionQuery
from gateway.web.admin import ParameterError, address_key
from gateway.web.console import Console, refused
from gateway.web.console_lists import (
    PAGE_SIZE,
    added_counts,
    decode_cursor,
    encode_cursor,
    search_text,
    text_field,
)
from gateway.web.pages import Viewer, render_page, see_other

CONSOLE_SOURCE = "console"
MAX_REASON = 500
MAX_ADDRESSES = 1000
MAX_ADDRESS_FIELD = 64 * 1024
FORM_BYTES = 80 * 1024
_SEPARATORS = re.compile(r"[\r\n,;]+")


class SuppressionsPage:
    def __init__(self, console: Console, suppressions: Suppressions) -> None:
        self.console = console
        self.suppressions = suppressions

    def register(self, app: web.Application) -> None:
        router = app.router
        router.add_get("/review/suppressions", self.console.page(Role.MANAGER, self.show))
        router.add_post("/review/suppressions/add", self.console.page(Role.ADMIN, self.add))
        router.add_post(
            "/review/suppressions/remove", self.console.page(Role.ADMIN, self.remove)
        )

    async def show(self, request: web.Request, viewer: Viewer) -> web.Response:
        try:
            search = search_text(request.query)
            after = decode_cursor(request.query, 2)
        except ParameterError as exc:
            return refused(viewer, str(exc), 400)
        rows = await self.console.store.suppression_page(SuppressionQuery(
            search or None, None if after is None else (after[0], after[1]), PAGE_SIZE + 1,
        ))
        entries = rows[:PAGE_SIZE]
        next_href = ""
        if len(rows) > PAGE_SIZE:
            last = entries[-1]
            cursor = encode_cursor((last.address, last.source))
            next_href = "/review/suppressions?" + urlencode(
                {k: v for k, v in (("q", search), ("after", cursor)) if v}
            )
        return render_page(
            "console/suppressions.html", "Suppressions", viewer=viewer,
            section="suppressions", entries=entries, search=search, next_href=next_href,
            first_href=("/review/suppressions?" + urlencode({"q": search}))
            if after is not None else "",
            can_change=viewer.role >= Role.ADMIN, lift=request.query.get("lift", "")[:320],
            done=confirmation(request.query), erased_source=ERASED_SOURCE,
        )

    async def add(self, request: web.Request, viewer: Viewer) -> web.Response:
        form = await self.console.form(request, viewer, FORM_BYTES)
        if isinstance(form, web.Response):
            return form
        try:
            typed = text_field(form, "addresses", MAX_ADDRESS_FIELD)
            reason = text_field(form, "reason", MAX_REASON)
            entries = [e.strip() for e in _SEPARATORS.split(typed) if e.strip()]
            if len(entries) > MAX_ADDRESSES:
                raise ParameterError("addresses", f"more than {MAX_ADDRESSES} at once")
            keys = list(dict.fromkeys(address_key("addresses", e) for e in entries))
        except ParameterError as exc:
            return refused(viewer, str(exc), 400)
        added = await self.suppressions.add(
            keys, source=CONSOLE_SOURCE, reason=reason, actor=viewer.actor
        )
        return see_other("/review/suppressions?" + urlencode({
            "done": "added", "n": len(keys), "new": added,
            **({"q": keys[0]} if len(keys) == 1 else {}),
        }))

    async def remove(self, request: web.Request, viewer: Viewer) -> web.Response:
        """Lifts the mailbox, as DELETE /v1/suppressions/{address} does; a key that is not
        suppressed changes nothing and writes no audit entry."""
        form = await self.console.form(request, viewer, FORM_BYTES)
        if isinstance(form, web.Response):
            return form
        try:
            key = address_key("address", text_field(form, "address", 320))
            reason = text_field(form, "reason", MAX_REASON)
        except ParameterError as exc:
            return refused(viewer, str(exc), 400)
        if not await self.console.store.suppressed(self.suppressions.lookup_keys([key])):
            return refused(viewer, f"{key} is not on the suppression list; nothing was changed.",
                           404)
        await self.suppressions.remove([key], actor=viewer.actor, reason=reason)
        return see_other(
            "/review/suppressions?" + urlencode({"done": "removed", "q": key})
        )


def confirmation(query: Mapping[str, str]) -> str:
    if query.get("done") == "removed":
        return "Suppression lifted: the list below shows what remains under that key."
    counts = added_counts(query)
    return "" if counts is None else (
        f"{counts[0]} suppressed, {counts[1]} of them not suppressed before."
    )
