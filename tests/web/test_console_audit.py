"""The console's audit log page (/review/audit) over HTTP, GET /v1/audit's filters and pages,
and the page once in a real browser (Chromium through Playwright)."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.auth.agent_keys import AgentKeys
from gateway.auth.authenticate import Authenticator
from gateway.auth.login_limits import LoginLimiter
from gateway.auth.sessions import Sessions
from gateway.config.settings import Config
from gateway.config.sso import SsoConfig
from gateway.model import Account, AuditEvent, Role
from gateway.runtime.clock import Clock
from gateway.runtime.metrics import Metrics
from gateway.services.people import People
from gateway.store.base import Store
from gateway.web.audit_page import VERIFY_ACTION, AuditLogPage
from gateway.web.console import Console
from gateway.web.people_sign_in import PeopleSignIn
from gateway.web.review import ReviewRoutes
from tests.browser import browser_missing, launch_options
from tests.conftest import MANAGER_SECRET
from tests.web.console_helpers import csrf_of
from tests.web.test_admin import ADMIN_SECRET, call, start
from tests.web.test_review import assert_protected, sign_in

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ADMIN = "kim"


def event(minutes_ago: float, actor: str, action: str, **details: object) -> AuditEvent:
    return AuditEvent(time=NOW - timedelta(minutes=minutes_ago), actor=actor, action=action,
                      subject=f"subject of {actor}", details=details)


def with_admin(config: Config) -> tuple[Account, ...]:
    admin = dataclasses.replace(config.accounts[0], name=ADMIN, secret=ADMIN_SECRET,
                                role=Role.ADMIN)
    return (*config.accounts, admin)


def audit_app(store: Store, config: Config) -> web.Application:
    """The console with its sign-in and the audit page, as the gateway wires them."""
    app = web.Application()
    clock = Clock(NOW)
    accounts = lambda: with_admin(config)  # noqa: E731
    limits = LoginLimiter(config.login_limits, clock, Metrics(), store, store.append_audit)
    sessions = Sessions(store, clock)
    people_sign_in = PeopleSignIn(
        store, People(store, sessions, clock), sessions, clock, accounts, SsoConfig, False
    )
    people_sign_in.register(app)
    console = Console(people_sign_in)
    ReviewRoutes(console, Authenticator(accounts, AgentKeys(store, clock), limits)).register(app)
    AuditLogPage(console).register(app)
    return app


@pytest.fixture
async def client(
    store: Store, config_factory: Callable[..., Config]
) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(audit_app(store, config_factory()))) as test_client:
        yield test_client


@pytest.fixture
async def admin(client: TestClient) -> TestClient:
    await sign_in(client, ADMIN_SECRET)
    return client


async def page_of(client: TestClient, **params: str) -> str:
    response = await client.get("/review/audit", params=params)
    assert response.status == 200, await response.text()
    assert_protected(response)
    return await response.text()


def entry_ids(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<td class="num">(\d+)</td>', page)]


ROW_ACTOR = re.compile(r'<td class="num">\d+</td>\n<td><time[^>]*>[^<]*</time></td>\n'
                       r"<td>([^<]*)</td>")


def actors(page: str) -> list[str]:
    return ROW_ACTOR.findall(page)


def older_link(page: str) -> str | None:
    match = re.search(r'<a href="([^"]+)">Older entries</a>', page)
    return match.group(1).replace("&amp;", "&") if match else None


async def verify(client: TestClient) -> str:
    """Press "Verify the chain now"; the page it leads back to."""
    page = await page_of(client)
    response = await client.post("/review/audit/verify", data={"csrf": csrf_of(page)},
                                 allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (303, "/review/audit")
    return await page_of(client)


# --- who may see it -----------------------------------------------------------------------


async def test_a_visitor_who_is_not_signed_in_is_sent_to_sign_in(client: TestClient) -> None:
    for method in ("GET", "POST"):
        path = "/review/audit" if method == "GET" else "/review/audit/verify"
        response = await client.request(method, path, allow_redirects=False)
        assert (response.status, response.headers["Location"]) == (303, "/review/login")


async def test_a_manager_is_refused_with_the_role_needed(
    client: TestClient, store: Store
) -> None:
    await store.append_audit(event(1, "secret-actor", "suppression.add"))
    await sign_in(client, MANAGER_SECRET)
    for response in (await client.get("/review/audit"),
                     await client.post("/review/audit/verify", data={})):
        page = await response.text()
        assert response.status == 403
        assert "needs the admin role or higher" in page
        assert "secret-actor" not in page
    assert [e for e in await store.audit_events() if e.action == VERIFY_ACTION] == []
    review = await (await client.get("/review")).text()
    assert 'href="/review/audit"' not in review, "the nav hides what the role cannot open"


# --- filters and pages --------------------------------------------------------------------


async def test_filters_by_actor_in_part_without_case_and_by_action(
    admin: TestClient, store: Store
) -> None:
    for n, (actor, action) in enumerate([
        ("Ada.Lovelace@acme.example", "suppression.add"),
        ("grace@acme.example", "suppression.remove"),
        ("ADA-bot", "consent.add"),
        ("olga", "suppression.import"),
    ]):
        await store.append_audit(event(10 - n, actor, action))

    assert actors(await page_of(admin, actor="ada")) == ["ADA-bot", "Ada.Lovelace@acme.example"]
    assert actors(await page_of(admin, action="suppression.remove")) == ["grace@acme.example"]
    assert actors(await page_of(admin, action="suppression.")) == [
        "olga", "grace@acme.example", "Ada.Lovelace@acme.example"]
    assert actors(await page_of(admin, actor="ADA", action="suppression.")) == [
        "Ada.Lovelace@acme.example"]
    assert actors(await page_of(admin, since="2026-03-10T11:51:30", until="2026-03-10T11:52:30")
                  ) == ["ADA-bot"]

    page = await page_of(admin, action="suppression.", actor="")
    assert '<option value="suppression." selected>suppression.*</option>' in page
    assert "<option>consent.add</option>" in page, "every action logged is offered"
    assert '<input id="actor" name="actor" value="" ' in page
    assert 'aria-current="page">Audit log</a>' in page


async def test_a_bad_filter_is_named_and_nothing_is_listed(
    admin: TestClient, store: Store
) -> None:
    await store.append_audit(event(1, "olga", "suppression.add"))
    response = await admin.get("/review/audit", params={"since": "last tuesday"})
    page = await response.text()
    assert response.status == 400
    assert 'role="alert">Filter not applied: since:' in page
    assert entry_ids(page) == []
    assert 'value="last tuesday"' in page, "the form keeps what was typed"
    response = await admin.get("/review/audit", params={"cursor": "not-a-cursor"})
    assert response.status == 400
    assert "cursor: not a cursor this API gave out" in await response.text()


async def test_pages_follow_each_other_without_repeats_or_gaps(
    admin: TestClient, store: Store
) -> None:
    appended = [await store.append_audit(event(100 - n, f"actor-{n % 3}", "suppression.add"))
                for n in range(11)]
    seen: list[int] = []
    page = await page_of(admin, action="suppression.add", limit="4")
    pages = 1
    while (link := older_link(page)) is not None:
        assert "action=suppression.add&limit=4" in link
        seen += entry_ids(page)
        await store.append_audit(event(0, "actor-0", "suppression.add"))  # a write meanwhile
        response = await admin.get(link)
        page = await response.text()
        pages += 1
    seen += entry_ids(page)
    assert seen == [e.id for e in reversed(appended)]
    assert pages == 3
    assert ('<a href="/review/audit?action=suppression.add&amp;limit=4">Newest entries</a>'
            in page)

    filtered = await page_of(admin, actor="actor-1", limit="2")
    link = older_link(filtered)
    assert link is not None and "actor=actor-1" in link
    rest = entry_ids(await (await admin.get(link)).text())
    assert entry_ids(filtered) + rest == [e.id for e in reversed(appended) if e.actor == "actor-1"]


async def test_details_are_a_list_of_text_and_markup_is_shown_as_text(
    admin: TestClient, store: Store
) -> None:
    await store.append_audit(AuditEvent(
        time=NOW, actor='<script>alert("actor")</script>', action="suppression.add",
        subject="<b>bold</b>",
        details={"reason": "<img src=x onerror=alert(1)>", "count": 3, "list": ["a", "b"],
                 "nested": {"k": "<i>v</i>"}},
    ))
    page = await page_of(admin)
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "<i>" not in page
    assert "&lt;script&gt;alert(&#34;actor&#34;)&lt;/script&gt;" in page
    assert "<dt>count</dt><dd>3</dd>" in page
    assert '<dt>list</dt><dd>[&#34;a&#34;, &#34;b&#34;]</dd>' in page
    assert "<dt>reason</dt><dd>&lt;img src=x onerror=alert(1)&gt;</dd>" in page
    page = await page_of(admin, actor='"><script>')
    assert "<script" not in page
    assert 'value="&#34;&gt;&lt;script&gt;"' in page


# --- the chain's verification ----------------------------------------------------------


async def test_verification_is_run_on_request_and_recorded(
    admin: TestClient, store: Store
) -> None:
    for n in range(5):
        await store.append_audit(event(10 - n, f"actor-{n}", "suppression.add"))
    assert "Not verified yet" in await page_of(admin)

    page = await verify(admin)

    assert "<strong>Verified intact:</strong>" in page
    # the admin's own sign-in is an entry too
    assert re.search(r"Verified intact:</strong> 6 entries,\nstarting from the beginning", page)
    assert f"by {ADMIN};" in page
    (run,) = [e for e in await store.audit_events() if e.action == VERIFY_ACTION]
    assert run.actor == ADMIN
    assert (run.details["intact"], run.details["entries"]) == (True, 6)
    assert run.details["method"] == "account-secret"


async def test_after_pruning_the_chain_says_where_it_starts(
    client: TestClient, store: Store
) -> None:
    for n in range(5):
        await store.append_audit(event(10 - n, f"actor-{n}", "suppression.add"))
    await store.prune_audit(NOW - timedelta(minutes=7, seconds=30))  # entries 1 to 3
    await sign_in(client, ADMIN_SECRET)

    page = await verify(client)

    assert re.search(r"Verified intact:</strong> 3 entries,\nstarting after entry 3, the last",
                     page)


async def test_a_tampered_entry_is_named(
    admin: TestClient, store: Store, db_path: Path
) -> None:
    for n in range(5):
        await store.append_audit(event(10 - n, f"actor-{n}", "suppression.add"))
    with contextlib.closing(sqlite3.connect(db_path)) as db, db:
        db.execute("UPDATE audit SET actor = 'mallory' WHERE id = 3")

    page = await verify(admin)

    assert ('role="alert">Broken at entry 3: content does not match its hash. The 2 entries '
            "before it verified.") in page
    assert "Verified intact" not in page
    link = re.search(r'<a href="([^"]+)">Show the log from entry 3</a>', page)
    assert link is not None
    assert entry_ids(await (await admin.get(link.group(1).replace("&amp;", "&"))).text()) == [
        3, 2, 1]


async def test_verification_needs_the_pages_own_form(admin: TestClient, store: Store) -> None:
    refused = await admin.post("/review/audit/verify", data={"csrf": "forged"})
    assert refused.status == 403
    cross_site = await admin.post("/review/audit/verify",
                                  data={"csrf": csrf_of(await page_of(admin))},
                                  headers={"Origin": "https://evil.example"})
    assert cross_site.status == 403
    assert [e for e in await store.audit_events() if e.action == VERIFY_ACTION] == []


# --- GET /v1/audit --------------------------------------------------------------------------


async def test_the_api_pages_and_filters_the_log(
    gateway_factory: Callable[..., Any],
) -> None:
    gateway = await start(gateway_factory)
    store = gateway.services.store
    for n in range(7):
        await store.append_audit(event(10 - n, "Olga" if n % 2 else "ada",
                                       "suppression.add" if n < 5 else "consent.add"))
    before = [e.id for e in reversed(await store.audit_events())]

    listed: list[int] = []
    params = {"limit": "3"}
    while True:
        reply = await call(gateway, "GET", "/v1/audit", ADMIN_SECRET, params=params)
        assert reply.status == 200, reply.text
        body = reply.json()
        listed += [e["id"] for e in body["events"]]
        if body["next_cursor"] is None:
            break
        params = {"limit": "3", "cursor": body["next_cursor"]}
    assert listed == before

    olga = (await call(gateway, "GET", "/v1/audit", ADMIN_SECRET,
                       params={"actor": "olg", "action": "suppression."})).json()
    assert [(e["actor"], e["action"]) for e in olga["events"]] == [
        ("Olga", "suppression.add"), ("Olga", "suppression.add")]
    assert olga["next_cursor"] is None
    for params, name in (({"actor": ""}, "actor"), ({"action": "x" * 201}, "action"),
                         ({"since": "2026-03-10T12:00", "until": "2026-03-10T11:00"}, "until"),
                         ({"cursor": "b1:"}, "cursor"), ({"who": "ada"}, "who"),
                         ({"actor": "a\x00b"}, "actor")):
        bad = await call(gateway, "GET", "/v1/audit", ADMIN_SECRET, params=params)
        assert bad.status == 400 and bad.json()["error"].startswith(f"{name}:"), params

    page = await call(gateway, "GET", "/review/audit", None)
    assert page.status == 200 and 'action="/review/login"' in page.text, "the gateway serves it"


# --- in a browser -------------------------------------------------------------------------


async def test_browser_filters_the_log_and_sees_the_chain(
    store: Store, config_factory: Callable[..., Config]
) -> None:
    """Real Chromium: an admin filters by actor and action and verifies the chain; a
    manager is refused."""
    reason = browser_missing()
    if reason:
        print(f"browser test skipped: {reason}")
        pytest.skip(f"browser test skipped: {reason}")
    from playwright.async_api import async_playwright

    for n, (actor, action) in enumerate([
        ("grace@acme.example", "suppression.add"), ("Ada@acme.example", "suppression.remove"),
        ("ada@acme.example", "consent.add"), ("olga", "suppression.remove"),
    ]):
        await store.append_audit(event(10 - n, actor, action))
    runner = web.AppRunner(audit_app(store, config_factory()))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    csp_errors: list[str] = []
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(**launch_options())
            try:
                page = await browser.new_page()
                page.on(
                    "console",
                    lambda m: csp_errors.append(m.text) if "Content Security" in m.text else None,
                )
                await page.goto(f"{base}/review/login")
                await page.get_by_label("Account secret").fill(ADMIN_SECRET)
                await page.get_by_role("button", name="Sign in").click()
                await page.wait_for_url(f"{base}/review")
                await page.get_by_role("link", name="Audit log").click()
                await page.get_by_role("heading", name="Audit log").wait_for()
                assert "Not verified yet" in await page.content()

                await page.get_by_label("Actor").fill("ADA")
                await page.get_by_label("Action", exact=True).select_option("suppression.")
                await page.get_by_role("button", name="Apply filters").click()
                await page.wait_for_url("**/review/audit?*actor=ADA*")
                rows = page.locator("table:has(caption:text('newest first')) tbody tr")
                assert await rows.count() == 1
                assert "suppression.remove" in await rows.first.inner_text()
                assert "Ada@acme.example" in await rows.first.inner_text()

                await page.get_by_role("button", name="Verify the chain now").click()
                await page.wait_for_url(f"{base}/review/audit")
                status = await page.get_by_role("status").first.inner_text()
                assert status.startswith("Verified intact: 5 entries"), status
                await page.close()

                manager = await browser.new_page()
                await manager.goto(f"{base}/review/login")
                await manager.get_by_label("Account secret").fill(MANAGER_SECRET)
                await manager.get_by_role("button", name="Sign in").click()
                await manager.wait_for_url(f"{base}/review")
                response = await manager.goto(f"{base}/review/audit")
                assert response is not None and response.status == 403
                assert "needs the admin role" in await manager.get_by_role("alert").inner_text()
            finally:
                await browser.close()
    finally:
        await runner.cleanup()
    assert csp_errors == []
