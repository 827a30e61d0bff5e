"""The console's suppression list over HTTP, with the real SQLite store, sessions and
sign-in: who sees what, who may change what, and that every change is one audit entry
naming the person and the reason, or else nothing changed at all."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from gateway.auth.sessions import Sessions
from gateway.config.settings import Config
from gateway.model import Suppression
from gateway.runtime.clock import Clock
from gateway.runtime.metrics import Metrics
from gateway.server import configured_rules
from gateway.services.people import People
from gateway.services.suppressions import Suppressions
from gateway.store.base import Store, StoreUnavailable
from gateway.web.consents_page import ConsentsPage
from gateway.web.console import Console
from gateway.web.console_lists import PAGE_SIZE
from gateway.web.people_sign_in import SESSION_COOKIE, PeopleSignIn
from gateway.web.suppressions_page import SuppressionsPage
from tests.conftest import MANAGER_SECRET
from tests.web.console_helpers import csrf_of, person_session
from tests.web.test_review import NOW, SSO

ADMIN = "ann@acme.example"
MANAGER = "max@acme.example"
REP = "rita@acme.example"


def console_app(store: Store, config: Config, clock: Clock) -> web.Application:
    """The sign-in and the two console list pages, wired as the gateway wires them."""
    app = web.Application()
    sessions = Sessions(store, clock)
    sign_in = PeopleSignIn(store, People(store, sessions, clock), sessions, clock,
                           lambda: config.accounts, lambda: SSO, False)
    sign_in.register(app)
    console = Console(sign_in)
    rules = configured_rules(config)
    suppressions = Suppressions(store, clock, Metrics(), lambda: rules.mailboxes)
    SuppressionsPage(console, suppressions).register(app)
    ConsentsPage(console).register(app)
    return app


async def session_of(store: Store, clock: Clock, email: str) -> str:
    """A cookie for a person signed in through the configured provider."""
    sessions = Sessions(store, clock)
    group = {ADMIN: "admins", MANAGER: "managers", REP: "reps"}[email]
    return await person_session(People(store, sessions, clock), sessions, email, group)


@dataclass
class Person:
    """A test client with one person's session cookie on every request."""

    client: TestClient
    token: str

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {"Cookie": f"{SESSION_COOKIE}={self.token}", **(extra or {})}

    async def get(self, path: str, **params: str) -> ClientResponse:
        return await self.client.get(path, params=params, headers=self._headers(None),
                                     allow_redirects=False)

    async def page(self, path: str, **params: str) -> str:
        response = await self.get(path, **params)
        assert response.status == 200, await response.text()
        return await response.text()

    async def post(self, path: str, data: Any, *, csrf: str | None = "",
                   headers: dict[str, str] | None = None) -> ClientResponse:
        """With this session's CSRF token unless `csrf` is given (None: no token)."""
        if csrf == "":
            csrf = csrf_of(await self.page("/review/suppressions"))
        if csrf is not None and isinstance(data, dict):
            data = {"csrf": csrf, **data}
        elif csrf is not None:
            data.add_field("csrf", csrf)
        return await self.client.post(path, data=data, headers=self._headers(headers),
                                      allow_redirects=False)


@pytest.fixture
async def people(
    store: Store, config_factory: Callable[..., Config]
) -> AsyncIterator[dict[str, Person]]:
    clock = Clock(NOW)
    async with TestClient(TestServer(console_app(store, config_factory(), clock))) as client:
        yield {email: Person(client, await session_of(store, clock, email))
               for email in (ADMIN, MANAGER, REP)}


def entry(address: str, source: str = "import", reason: str = "list import") -> Suppression:
    return Suppression(address, source, reason, NOW, actor="ops")


def post_forms(page: str) -> list[str]:
    return re.findall(r'<form method="post" action="([^"]+)"', page)


def rows(page: str) -> list[str]:
    body = page.split("<tbody>")[1].split("</tbody>")[0]
    return re.findall(r"<tr>\s*<td>([^<]*)", body)


async def test_a_manager_searches_and_pages_without_forms(
    store: Store, people: dict[str, Person]
) -> None:
    await store.add_suppressions(
        [entry(f"lead{i:03}@example.org") for i in range(PAGE_SIZE + 10)]
        + [entry("+14155550100", "sms-stop", "STOP")]
    )
    manager = people[MANAGER]

    first = await manager.page("/review/suppressions")
    link = re.search(r'href="(/review/suppressions\?after=[^"]+)" rel="next"', first)
    assert link
    second = await manager.page(link.group(1).replace("&amp;", "&"))

    assert rows(first)[:2] == ["+14155550100", "lead000@example.org"]
    assert len(rows(first)) == PAGE_SIZE and len(rows(second)) == 11
    assert set(rows(first)).isdisjoint(rows(second))
    assert 'rel="next"' not in second and "First page" in second
    assert post_forms(first) == ["/auth/logout"]
    assert "/review/suppressions/add" not in first and "Lift" not in first

    found = await manager.page("/review/suppressions", q="LEAD05")
    assert rows(found) == [f"lead05{i}@example.org" for i in range(10)]
    assert rows(await manager.page("/review/suppressions", q="5550100")) == ["+14155550100"]
    assert "No entries match" in await manager.page("/review/suppressions", q="nobody")
    assert 'aria-current="page"' in found and "STOP" in first and "sms-stop" in first


async def test_a_rep_is_refused_and_a_stranger_sent_to_sign_in(
    people: dict[str, Person],
) -> None:
    refused = await people[REP].get("/review/suppressions")
    assert refused.status == 403
    assert "manager role" in await refused.text()
    stranger = await people[REP].client.get("/review/suppressions", allow_redirects=False)
    assert stranger.status == 303
    assert stranger.headers["Location"] == "/review/login"


async def test_an_admin_adds_addresses_with_one_audit_entry(
    store: Store, people: dict[str, Person]
) -> None:
    admin = people[ADMIN]
    before = len(await store.audit_events())
    response = await admin.post("/review/suppressions/add", {
        "addresses": "Lead@Example.org\r\n+1 415 555 0100, lead@example.org",
        "reason": "asked by phone",
    })
    assert response.status == 303
    shown = await admin.page(response.headers["Location"])

    assert "2 suppressed, 2 of them not suppressed before." in shown
    stored = await store.list_suppressions()
    assert [(e.address, e.source, e.reason, e.actor) for e in stored] == [
        ("+14155550100", "console", "asked by phone", ADMIN),
        ("lead@example.org", "console", "asked by phone", ADMIN),
    ]
    events = (await store.audit_events())[before:]
    assert [(e.action, e.actor, e.details["reason"]) for e in events] == [
        ("suppression.add", ADMIN, "asked by phone")]
    assert "lead@example.org" in events[0].subject


async def test_an_admin_lifts_one_with_a_reason(
    store: Store, people: dict[str, Person]
) -> None:
    await store.add_suppressions([entry("lead@example.org"), entry("+14155550100")])
    admin = people[ADMIN]
    listed = await admin.page("/review/suppressions")
    assert 'href="/review/suppressions?lift=lead%40example.org#lift"' in listed
    assert 'value="lead@example.org"' in await admin.page(
        "/review/suppressions", lift="lead@example.org")
    before = len(await store.audit_events())

    response = await admin.post("/review/suppressions/remove", {
        "address": "LEAD@example.org", "reason": "opted back in by letter"})
    assert response.status == 303
    assert "Suppression lifted" in await admin.page(response.headers["Location"])
    assert [e.address for e in await store.list_suppressions()] == ["+14155550100"]
    events = (await store.audit_events())[before:]
    assert [(e.action, e.actor, e.details["reason"]) for e in events] == [
        ("suppression.remove", ADMIN, "opted back in by letter")]
    assert events[0].details["removed"][0]["address"] == "lead@example.org"

    again = await admin.post("/review/suppressions/remove", {
        "address": "lead@example.org", "reason": "twice"})
    assert again.status == 404
    assert "lead@example.org is not on the suppression list" in await again.text()
    assert len(await store.audit_events()) == before + 1


@pytest.mark.parametrize(("path", "form", "problem"), [
    ("/review/suppressions/add", {"addresses": "not an address", "reason": "x"},
     "addresses: &#39;not an address&#39; is not a valid address or number"),
    ("/review/suppressions/add", {"addresses": "a@example.org, +1 999", "reason": "x"},
     "addresses: &#39;+1 999&#39;"),
    ("/review/suppressions/add", {"addresses": "a@example.org", "reason": "  "},
     "reason: required"),
    ("/review/suppressions/add", {"addresses": " ", "reason": "x"}, "addresses: required"),
    ("/review/suppressions/add", {"addresses": "a@example.org", "reason": "r" * 501},
     "reason: longer than 500 characters"),
    ("/review/suppressions/remove", {"address": "lead@example.org", "reason": ""},
     "reason: required"),
    ("/review/suppressions/remove", {"address": "nobody", "reason": "x"},
     "address: &#39;nobody&#39; is not a valid address"),
])
async def test_bad_input_is_named_and_changes_nothing(
    store: Store, people: dict[str, Person], path: str, form: dict[str, str], problem: str
) -> None:
    await store.add_suppressions([entry("lead@example.org")])
    before = await store.list_suppressions(), len(await store.audit_events())

    response = await people[ADMIN].post(path, form)

    assert response.status == 400
    assert problem in await response.text()
    assert (await store.list_suppressions(), len(await store.audit_events())) == before


@pytest.mark.parametrize(("csrf", "headers"), [
    (None, {}), ("0" * 64, {}), ("", {"Origin": "https://evil.example"}),
])
async def test_a_change_without_the_token_or_from_another_site_is_refused(
    store: Store, people: dict[str, Person], csrf: str | None, headers: dict[str, str]
) -> None:
    await store.add_suppressions([entry("lead@example.org")])
    before = await store.list_suppressions(), len(await store.audit_events())
    admin = people[ADMIN]

    added = await admin.post("/review/suppressions/add",
                             {"addresses": "new@example.org", "reason": "x"},
                             csrf=csrf, headers=headers)
    removed = await admin.post("/review/suppressions/remove",
                               {"address": "lead@example.org", "reason": "x"},
                               csrf=csrf, headers=headers)

    assert (added.status, removed.status) == (403, 403)
    assert (await store.list_suppressions(), len(await store.audit_events())) == before


async def test_a_manager_may_not_post_a_change(
    store: Store, people: dict[str, Person]
) -> None:
    await store.add_suppressions([entry("lead@example.org")])
    manager = people[MANAGER]
    for path, form in (("/review/suppressions/add", {"addresses": "x@example.org"}),
                       ("/review/suppressions/remove", {"address": "lead@example.org"})):
        response = await manager.post(path, {**form, "reason": "because"})
        assert response.status == 403
        assert "admin role" in await response.text()
    assert [e.address for e in await store.list_suppressions()] == ["lead@example.org"]


async def test_a_store_outage_is_a_503_and_changes_nothing(
    store: Store, people: dict[str, Person], monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = people[ADMIN]
    csrf = csrf_of(await admin.page("/review/suppressions"))
    before = len(await store.audit_events())

    async def unavailable(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("down")

    monkeypatch.setattr(store, "add_suppressions", unavailable)
    monkeypatch.setattr(store, "suppression_page", unavailable)
    added = await admin.post("/review/suppressions/add",
                             {"addresses": "new@example.org", "reason": "x"}, csrf=csrf)
    listed = await admin.get("/review/suppressions")

    assert (added.status, listed.status) == (503, 503)
    assert "Nothing was changed" in await added.text()
    assert added.headers["Retry-After"] == "60"
    monkeypatch.undo()
    assert await store.list_suppressions() == []
    assert len(await store.audit_events()) == before


async def test_stored_markup_is_shown_as_text(
    store: Store, people: dict[str, Person]
) -> None:
    await store.add_suppressions([
        entry("lead@example.org", '<script>alert("source")</script>',
              '<img src=x onerror=alert(1)>'),
    ])
    page = await people[ADMIN].page("/review/suppressions", q='"><b>x')

    assert "<script>alert" not in page and "<img src=x" not in page and "<b>x" not in page
    page = await people[ADMIN].page("/review/suppressions")
    assert "&lt;script&gt;alert(&#34;source&#34;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


async def test_a_page_link_not_given_out_is_refused(people: dict[str, Person]) -> None:
    for cursor in ("nonsense", "WyJhIl0="):  # the second is ["a"]: one value, not two
        response = await people[MANAGER].get("/review/suppressions", after=cursor)
        assert response.status == 400
        assert "after: not a page link this console gave out" in await response.text()


async def test_the_running_gateway_serves_both_pages(gateway: Any) -> None:
    """Wired in gateway/server.py with the gateway's own `Suppressions`."""
    base = f"http://127.0.0.1:{gateway.http_port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.post(f"{base}/review/login", data={"secret": MANAGER_SECRET},
                             allow_redirects=False) as response:
            cookie = {"Cookie": response.headers["Set-Cookie"].split(";", 1)[0]}
        for path in ("/review/suppressions", "/review/consents"):
            async with http.get(f"{base}{path}", headers=cookie) as page:
                assert page.status == 200
                assert 'aria-current="page"' in await page.text()
        async with http.post(f"{base}/review/suppressions/add", headers=cookie,
                             data={"addresses": "a@example.org", "reason": "x"}) as refused:
            assert refused.status == 403
