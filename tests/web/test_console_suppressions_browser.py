"""The suppression and consent pages in real Chromium: an admin changes both lists through
the forms (CSRF token, post/redirect/get, no JavaScript), a manager reads them without
forms, a rep is refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from gateway.config.settings import Config
from gateway.runtime.clock import Clock
from gateway.store.base import Store
from gateway.web.people_sign_in import SESSION_COOKIE
from tests.browser import browser_missing, launch_options
from tests.web.test_console_suppressions import (
    ADMIN,
    MANAGER,
    REP,
    console_app,
    session_of,
)
from tests.web.test_review import NOW

CSV = (
    "subject,channel,kind,obtained_at,source,evidence\n"
    "+14155550111,sms,implied-inquiry,2025-01-15T10:00:00+00:00,trade fair,badge 4\n"
    "'+14155550112,call,ebr,2026-02-01T10:00:00+00:00,invoice,order 9\n"
)


async def test_an_admin_changes_both_lists_a_manager_reads_them_a_rep_is_refused(
    store: Store, config_factory: Callable[..., Config], tmp_path: Path,
) -> None:
    reason = browser_missing()
    if reason:
        pytest.skip(f"browser test skipped: {reason}")
    from playwright.async_api import BrowserContext, Page, async_playwright

    clock = Clock(NOW)
    tokens = {email: await session_of(store, clock, email) for email in (ADMIN, MANAGER, REP)}
    upload = tmp_path / "consents.csv"
    upload.write_text(CSV)
    runner = web.AppRunner(console_app(store, config_factory(), clock))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    csp_errors: list[str] = []

    async def signed_in(context: BrowserContext, email: str) -> Page:
        await context.add_cookies([{"name": SESSION_COOKIE, "value": tokens[email],
                                    "url": base}])
        page = await context.new_page()
        page.on("console", lambda m: csp_errors.append(m.text)
                if "Content Security" in m.text else None)
        return page

    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(**launch_options())
            try:
                admin = await signed_in(await browser.new_context(), ADMIN)
                await admin.goto(f"{base}/review/suppressions")
                await admin.get_by_label("Addresses or numbers").fill(
                    "Lead@Example.org\n+1 415 555 0100")
                await admin.get_by_label("Reason", exact=True).fill("asked at the desk")
                await admin.get_by_role("button", name="Suppress", exact=True).click()
                await admin.get_by_role("status").get_by_text("2 suppressed").wait_for()

                await admin.get_by_label("Address or number contains").fill("LEAD@")
                await admin.get_by_role("button", name="Search", exact=True).click()
                await admin.wait_for_url("**/review/suppressions?q=LEAD%40")
                rows = admin.locator("tbody tr")
                assert await rows.count() == 1
                cells = await rows.first.locator("td").all_inner_texts()
                assert cells[:2] == ["lead@example.org", "console"]
                assert cells[3:5] == ["asked at the desk", ADMIN]
                added = [e for e in await store.audit_events() if e.action == "suppression.add"]
                assert [(e.actor, e.details["reason"]) for e in added] == [
                    (ADMIN, "asked at the desk")]

                await admin.get_by_role("link", name="Lift lead@example.org").click()
                assert await admin.get_by_label("Address or number", exact=True).input_value() \
                    == "lead@example.org"
                await admin.get_by_label("Reason for lifting").fill("consent in writing")
                await admin.get_by_role("button", name="Lift suppression").click()
                await admin.get_by_role("status").get_by_text("Suppression lifted").wait_for()
                assert await admin.locator("tbody").inner_text() == "No entries match."
                lifted = [e for e in await store.audit_events()
                          if e.action == "suppression.remove"]
                assert [(e.actor, e.details["reason"]) for e in lifted] == [
                    (ADMIN, "consent in writing")]
                assert [e.address for e in await store.list_suppressions()] == ["+14155550100"]

                await admin.get_by_role("link", name="Consents").click()
                record = admin.get_by_role("group", name="One consent")
                await record.get_by_label("Subject").fill("buyer@example.org")
                await record.get_by_label("Channel").select_option("email")
                await record.get_by_label("Kind").select_option("implied-purchase")
                await record.get_by_label("Obtained at").fill("2026-01-31T09:30:00+00:00")
                await record.get_by_label("Source").fill("web shop")
                await record.get_by_label("Evidence").fill("order 77")
                await admin.get_by_role("button", name="Record consent").click()
                await admin.get_by_role("status").get_by_text("1 consents recorded").wait_for()
                row = await admin.locator("tbody tr").first.locator("td").all_inner_texts()
                assert row == ["buyer@example.org", "email", "implied-purchase",
                               "2026-01-31 09:30:00 UTC", "2028-01-31 09:30:00 UTC",
                               "web shop", "order 77"]

                await admin.get_by_label("CSV file").set_input_files(str(upload))
                await admin.get_by_role("button", name="Import", exact=True).click()
                await admin.get_by_role("status").get_by_text("2 consents recorded").wait_for()
                await admin.get_by_label("Subject contains").fill("41555501")
                await admin.get_by_role("button", name="Search", exact=True).click()
                await admin.wait_for_url("**/review/consents?q=41555501*")
                expiries = {
                    cells[0]: cells[4]
                    for cells in [await r.locator("td").all_inner_texts()
                                  for r in await admin.locator("tbody tr").all()]
                }
                assert expiries == {"+14155550111": "expired 2025-07-15 10:00:00 UTC",
                                    "+14155550112": "2027-08-01 10:00:00 UTC"}
                consent_events = [e for e in await store.audit_events()
                                  if e.action == "consent.add"]
                assert [(e.actor, e.details["count"]) for e in consent_events] == [
                    (ADMIN, 1), (ADMIN, 2)]

                manager = await signed_in(await browser.new_context(), MANAGER)
                for path, entry in (("suppressions", "+14155550100"),
                                    ("consents", "buyer@example.org")):
                    await manager.goto(f"{base}/review/{path}")
                    assert entry in await manager.locator("tbody").inner_text()
                    assert await manager.locator("form[method=post]").count() == 1  # sign out
                    assert await manager.get_by_role("button", name="Sign out").count() == 1

                rep = await signed_in(await browser.new_context(), REP)
                for path in ("suppressions", "consents"):
                    response = await rep.goto(f"{base}/review/{path}")
                    assert response is not None and response.status == 403
                    assert "manager role" in await rep.content()
            finally:
                await browser.close()
    finally:
        await runner.cleanup()
    assert csp_errors == []
