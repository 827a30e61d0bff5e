"""The console's consent registry over HTTP, with the real SQLite store, sessions and
sign-in: search and expiry for managers, recording and CSV import for admins, each change
one audit entry naming the person, and a refused change leaving nothing behind."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import FormData

from gateway.model import Channel, Consent, ConsentKind
from gateway.store.base import Store, StoreUnavailable
from gateway.web.consents_page import MAX_IMPORT_BYTES
from gateway.web.console_lists import PAGE_SIZE
from tests.web.console_helpers import csrf_of
from tests.web.test_console_suppressions import (  # noqa: F401
    ADMIN,
    MANAGER,
    REP,
    Person,
    people,
    post_forms,
)
from tests.web.test_review import NOW

CSV_HEADER = "subject,channel,kind,obtained_at,source,evidence\n"


def consent(
    subject: str, *, channel: Channel = Channel.SMS, kind: ConsentKind = ConsentKind.EXPRESS,
    at: datetime = NOW - timedelta(days=10), expires_at: datetime | None = None,
    source: str = "web form", evidence: str = "form 12",
) -> Consent:
    return Consent(subject, channel, kind, at, expires_at, source, evidence)


def rows(page: str) -> list[list[str]]:
    body = page.split("<tbody>")[1].split("</tbody>")[0]
    return [re.findall(r"<td>(.*?)</td>", row, re.S) for row in re.findall(r"<tr>(.*?)</tr>",
                                                                           body, re.S)]


def csv_upload(text: str | bytes, name: str = "consents.csv") -> FormData:
    form = FormData()
    form.add_field("file", text if isinstance(text, bytes) else text.encode(),
                   filename=name, content_type="text/csv")
    return form


async def test_a_manager_searches_pages_and_sees_expiry_without_forms(
    store: Store, people: dict[str, Person],  # noqa: F811
) -> None:
    await store.add_consents(
        [consent(f"+1415555{i:04}", at=NOW - timedelta(days=i)) for i in range(PAGE_SIZE + 5)]
        + [consent("Lead@Example.org".lower(), channel=Channel.EMAIL,
                   kind=ConsentKind.IMPLIED_INQUIRY, at=NOW - timedelta(days=400),
                   expires_at=NOW - timedelta(days=217)),
           consent("+14155550001", channel=Channel.CALL, kind=ConsentKind.EBR,
                   expires_at=NOW + timedelta(days=500))]
    )
    manager = people[MANAGER]

    first = await manager.page("/review/consents")
    link = re.search(r'href="(/review/consents\?after=[^"]+)" rel="next"', first)
    assert link
    second = await manager.page(link.group(1).replace("&amp;", "&"))

    assert len(rows(first)) == PAGE_SIZE and len(rows(second)) == 7
    assert [r[0] for r in rows(second)][-1] == "lead@example.org"
    assert post_forms(first) == ["/auth/logout"] and "consents/import" not in first
    assert rows(first)[0][:3] == ["+14155550000", "sms", "express"]
    assert rows(first)[0][4] == "does not expire"

    lead = rows(await manager.page("/review/consents", q="LEAD@EXAMPLE"))
    assert len(lead) == 1 and lead[0][2] == "implied-inquiry"
    assert lead[0][4].startswith("<strong>expired</strong>")
    assert "2025-08-05 12:00:00 UTC" in lead[0][4]
    calls = rows(await manager.page("/review/consents", q="5550001", channel="call"))
    assert [(r[0], r[1]) for r in calls] == [("+14155550001", "call")]
    assert "expired" not in calls[0][4] and "2027-07-23" in calls[0][4]
    assert [r[1] for r in rows(await manager.page("/review/consents", q="5550001"))] == [
        "call", "sms"]

    refused = await manager.get("/review/consents", channel="fax")
    assert refused.status == 400
    assert "channel: one of email, sms, call" in await refused.text()
    assert (await people[REP].get("/review/consents")).status == 403


async def test_an_admin_records_a_consent_with_its_audit_entry(
    store: Store, people: dict[str, Person],  # noqa: F811
) -> None:
    admin = people[ADMIN]
    before = len(await store.audit_events())
    response = await admin.post("/review/consents/add", {
        "subject": "+1 (415) 555-0100", "channel": "sms", "kind": "implied-purchase",
        "obtained_at": "2026-01-31T09:30:00-05:00", "source": "checkout", "evidence": "order 7",
    })
    assert response.status == 303
    shown = await admin.page(response.headers["Location"])

    assert "1 consents recorded, 1 of them new." in shown
    assert "2028-01-31 14:30:00 UTC" in shown
    found = await store.consents_for(["+14155550100"])
    assert [(c.kind, c.expires_at, c.source, c.evidence) for c in found["+14155550100"]] == [
        (ConsentKind.IMPLIED_PURCHASE, datetime(2028, 1, 31, 14, 30, tzinfo=UTC), "checkout",
         "order 7")]
    events = (await store.audit_events())[before:]
    assert [(e.action, e.actor, e.subject, e.details["count"], e.details["new"])
            for e in events] == [("consent.add", ADMIN, "+14155550100", 1, 1)]


async def test_an_admin_imports_a_csv_file(
    store: Store, people: dict[str, Person],  # noqa: F811
) -> None:
    admin = people[ADMIN]
    before = len(await store.audit_events())
    text = CSV_HEADER + (
        "'+14155550100,sms,express-written,2026-01-01T00:00:00+00:00,signup,'=HYPERLINK(1)\n"
        "lead@example.org,email,implied-inquiry,2025-01-01T00:00:00Z,fair,badge scan\n"
    )
    response = await admin.post("/review/consents/import", csv_upload("\ufeff" + text))
    assert response.status == 303
    shown = await admin.page(response.headers["Location"])

    assert "2 consents recorded, 2 of them new." in shown
    page = rows(await admin.page("/review/consents"))
    assert [(r[0], r[5], r[6]) for r in page] == [
        ("+14155550100", "signup", "=HYPERLINK(1)"), ("lead@example.org", "fair", "badge scan")]
    assert page[0][4] == "does not expire" and page[1][4].startswith("<strong>expired")
    events = (await store.audit_events())[before:]
    assert [(e.action, e.actor, e.subject, e.details["count"]) for e in events] == [
        ("consent.add", ADMIN, "+14155550100,lead@example.org", 2)]


@pytest.mark.parametrize(("path", "data", "status", "problem"), [
    ("/review/consents/add", {"subject": "+14155550100", "channel": "sms", "kind": "forever",
                              "obtained_at": "2026-01-01T00:00:00Z", "source": "x"},
     400, "&#39;forever&#39; is not a valid ConsentKind"),
    ("/review/consents/add", {"subject": "+14155550100", "channel": "sms", "kind": "express",
                              "obtained_at": "yesterday-ish", "source": "x"},
     400, "obtained_at: "),
    ("/review/consents/add", {"subject": "+14155550100", "channel": "sms", "kind": "express",
                              "obtained_at": "2026-01-01T00:00:00Z", "source": " "},
     400, "source: required"),
    ("/review/consents/add", {"subject": "+14155550100", "channel": "sms", "kind": "express",
                              "obtained_at": "2026-01-01T00:00:00Z", "source": "x",
                              "evidence": "e" * 2001},
     400, "evidence: longer than 2000 characters"),
    ("/review/consents/import", CSV_HEADER
     + "+14155550100,sms,express,2026-01-01T00:00:00Z,web,\n"
     + "+14155550101,sms,express,2026-01-01T00:00:00Z,,\n",
     400, "line 3: a consent needs a source"),
    ("/review/consents/import", "subject,channel\n+14155550100,sms\n",
     400, "CSV header lacks columns: kind, obtained_at, source"),
    ("/review/consents/import", b"subject\xff\n", 400, "file: not UTF-8 text"),
    ("/review/consents/import", CSV_HEADER, 400, "file: no consents in it"),
    ("/review/consents/import", CSV_HEADER + "x" * MAX_IMPORT_BYTES,
     413, "file: larger than 512 KiB, nothing imported"),
])
async def test_bad_input_is_named_and_nothing_is_recorded(
    store: Store, people: dict[str, Person], path: str,  # noqa: F811
    data: dict[str, str] | str | bytes, status: int, problem: str,
) -> None:
    before = len(await store.audit_events())

    form = data if isinstance(data, dict) else csv_upload(data)
    response = await people[ADMIN].post(path, form)

    assert response.status == status
    assert problem in await response.text()
    assert await store.consents_for(["+14155550100", "+14155550101"]) == {}
    assert len(await store.audit_events()) == before


async def test_an_import_without_a_file_is_refused(
    people: dict[str, Person],  # noqa: F811
) -> None:
    response = await people[ADMIN].post("/review/consents/import", FormData({"x": "1"}))
    assert response.status == 400
    assert "file: choose a CSV file" in await response.text()


@pytest.mark.parametrize(("who", "csrf", "headers", "status"), [
    (MANAGER, "", {}, 403),
    (ADMIN, None, {}, 403),
    (ADMIN, "0" * 32, {}, 403),
    (ADMIN, "", {"Origin": "http://evil.example"}, 403),
])
async def test_refused_changes_record_nothing(
    store: Store, people: dict[str, Person], who: str,  # noqa: F811
    csrf: str | None, headers: dict[str, str], status: int,
) -> None:
    before = len(await store.audit_events())
    person = people[who]
    added = await person.post("/review/consents/add", {
        "subject": "+14155550100", "channel": "sms", "kind": "express",
        "obtained_at": "2026-01-01T00:00:00Z", "source": "web"}, csrf=csrf, headers=headers)
    imported = await person.post(
        "/review/consents/import",
        csv_upload(CSV_HEADER + "+14155550100,sms,express,2026-01-01T00:00:00Z,web,\n"),
        csrf=csrf, headers=headers)

    assert (added.status, imported.status) == (status, status)
    assert await store.consents_for(["+14155550100"]) == {}
    assert len(await store.audit_events()) == before


async def test_a_store_outage_is_a_503_and_records_nothing(
    store: Store, people: dict[str, Person], monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    admin = people[ADMIN]
    csrf = csrf_of(await admin.page("/review/consents"))
    before = len(await store.audit_events())

    async def unavailable(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("down")

    monkeypatch.setattr(store, "add_consents", unavailable)
    monkeypatch.setattr(store, "consent_page", unavailable)
    added = await admin.post("/review/consents/add", {
        "subject": "+14155550100", "channel": "sms", "kind": "express",
        "obtained_at": "2026-01-01T00:00:00Z", "source": "web"}, csrf=csrf)
    listed = await admin.get("/review/consents")

    assert (added.status, listed.status) == (503, 503)
    monkeypatch.undo()
    assert await store.consents_for(["+14155550100"]) == {}
    assert len(await store.audit_events()) == before


async def test_stored_markup_is_shown_as_text(
    store: Store, people: dict[str, Person],  # noqa: F811
) -> None:
    await store.add_consents([consent(
        "+14155550100", source="<script>alert(1)</script>",
        evidence='"><img src=x onerror=alert(2)>')])

    page = await people[MANAGER].page("/review/consents", q="<svg onload=alert(3)>")
    assert "<svg" not in page
    page = await people[MANAGER].page("/review/consents")

    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in page
