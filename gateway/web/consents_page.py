"""The console's consent registry at /review/consents: managers and up search and page
through it with each consent's expiry; admins and up (POST /v1/consents's role) record one
consent, or import a CSV file in the CLI's `consent import` format. Each change is one
`consent.add` audit entry naming the person signed in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from urllib.parse import urlencode

from aiohttp import web

from gateway.model import Channel, Consent, ConsentKind, Role
from gateway.services.consents import ConsentError, make_consent, read_consents_csv
from gateway.store.base import ConsentKey, ConsentQuery
from gateway.web.admin import ParameterError, parse_field_time
from gateway.web.console import Console, Form, refused
from gateway.web.console_lists import (
    PAGE_SIZE,
    added_counts,
    decode_cursor,
    encode_cursor,
    search_text,
    text_field,
)
from gateway.web.pages import Viewer, render_page, see_other

FORM_BYTES = 16 * 1024
MAX_IMPORT_BYTES = 512 * 1024
"""About five thousand rows; a larger file goes through the CLI's `consent import`."""
MAX_SUBJECT = 320
MAX_TEXT = 2000


class ConsentsPage:
    def __init__(self, console: Console) -> None:
        self.console = console

    def register(self, app: web.Application) -> None:
        router = app.router
        router.add_get("/review/consents", self.console.page(Role.MANAGER, self.show))
        router.add_post("/review/consents/add", self.console.page(Role.ADMIN, self.add))
        router.add_post("/review/consents/import", self.console.page(Role.ADMIN, self.upload))

    async def show(self, request: web.Request, viewer: Viewer) -> web.Response:
        try:
            search = search_text(request.query)
            channel_name = request.query.get("channel", "")
            channel = channel_of(channel_name) if channel_name else None
            after = consent_key(decode_cursor(request.query, 4))
        except ParameterError as exc:
            return refused(viewer, str(exc), 400)
        rows = await self.console.store.consent_page(
            ConsentQuery(search or None, channel, after, PAGE_SIZE + 1)
        )
        consents = rows[:PAGE_SIZE]
        filters = {k: v for k, v in (("q", search), ("channel", channel_name)) if v}
        next_href = ""
        if len(rows) > PAGE_SIZE:
            last = consents[-1]
            cursor = encode_cursor((last.subject, last.channel.value, last.kind.value,
                                    last.obtained_at.isoformat()))
            next_href = "/review/consents?" + urlencode({**filters, "after": cursor})
        return render_page(
            "console/consents.html", "Consents", viewer=viewer, section="consents",
            consents=consents, search=search, channel=channel_name,
            channels=[c.value for c in Channel], kinds=[k.value for k in ConsentKind],
            next_href=next_href,
            first_href=("/review/consents?" + urlencode(filters)) if after else "",
            can_change=viewer.role >= Role.ADMIN, now=self.console.clock.now(),
            done=confirmation(request.query),
            max_import_kib=MAX_IMPORT_BYTES // 1024,
        )

    async def add(self, request: web.Request, viewer: Viewer) -> web.Response:
        """One consent, checked as POST /v1/consents checks it."""
        form = await self.console.form(request, viewer, FORM_BYTES)
        if isinstance(form, web.Response):
            return form
        try:
            consent = consent_from_form(form)
        except (ParameterError, ConsentError) as exc:
            return refused(viewer, str(exc), 400)
        return await self._record(request, viewer, [consent])

    async def upload(self, request: web.Request, viewer: Viewer) -> web.Response:
        """A CSV file as `consent import` reads it: every row is checked before any is
        recorded, and a bad row refuses the whole file."""
        if (request.content_length or 0) > MAX_IMPORT_BYTES:
            return too_large(viewer)
        form = await self.console.form(request, viewer, MAX_IMPORT_BYTES)
        if isinstance(form, web.Response):
            return form
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return refused(viewer, "file: choose a CSV file to import", 400)
        data = upload.file.read(MAX_IMPORT_BYTES + 1)
        if len(data) > MAX_IMPORT_BYTES:
            return too_large(viewer)
        try:
            consents = read_consents_csv(data.decode("utf-8-sig"))
        except UnicodeDecodeError:
            return refused(viewer, "file: not UTF-8 text", 400)
        except ConsentError as exc:
            return refused(viewer, f"file: {exc}", 400)
        if not consents:
            return refused(viewer, "file: no consents in it, nothing imported", 400)
        return await self._record(request, viewer, consents)

    async def _record(
        self, request: web.Request, viewer: Viewer, consents: Sequence[Consent]
    ) -> web.Response:
        """Stored, then audited, as the API and the CLI record consents."""
        added = await self.console.store.add_consents(consents)
        subjects = sorted({c.subject for c in consents})
        await self.console.audit(
            request, viewer, "consent.add", {"count": len(consents), "new": added},
            subject=",".join(subjects)[:2000],
        )
        return see_other("/review/consents?" + urlencode({
            "done": "added", "n": len(consents), "new": added,
            **({"q": subjects[0]} if len(subjects) == 1 else {}),
        }))


def consent_from_form(form: Form) -> Consent:
    obtained_at = parse_field_time("obtained_at", text_field(form, "obtained_at", 64), None)
    return make_consent(
        text_field(form, "subject", MAX_SUBJECT),
        text_field(form, "channel", 16),
        text_field(form, "kind", 32),
        obtained_at,
        text_field(form, "source", MAX_TEXT),
        text_field(form, "evidence", MAX_TEXT, required=False),
    )


def channel_of(name: str) -> Channel:
    try:
        return Channel(name)
    except ValueError:
        raise ParameterError("channel", f"one of {', '.join(c.value for c in Channel)}") from None


def consent_key(cursor: list[str] | None) -> ConsentKey | None:
    if cursor is None:
        return None
    subject, channel, kind, obtained_at = cursor
    try:
        key = (subject, Channel(channel), ConsentKind(kind), datetime.fromisoformat(obtained_at))
    except ValueError:
        raise ParameterError("after", "not a page link this console gave out") from None
    if key[3].tzinfo is None:
        raise ParameterError("after", "not a page link this console gave out")
    return key


def too_large(viewer: Viewer) -> web.Response:
    return refused(viewer, f"file: larger than {MAX_IMPORT_BYTES // 1024} KiB, nothing imported;"
                   " split it, or import it with `compliance-gateway consent import`.", 413)


def confirmation(query: Mapping[str, str]) -> str:
    counts = added_counts(query)
    return "" if counts is None else f"{counts[0]} consents recorded, {counts[1]} of them new."
