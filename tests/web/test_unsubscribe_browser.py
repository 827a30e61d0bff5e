"""The unsubscribe page in real Chromium (Playwright): a recipient follows a real message's
link, unsubscribes, comes back to "already unsubscribed", undoes it by mistake's button and
is sent mail again; a number opted out by a STOP text stays opted out through the same
steps. The page works with its Content-Security-Policy (no violations), without JavaScript,
and its controls are found by their accessible roles and names."""

from __future__ import annotations

import pytest

from gateway.model import Channel
from tests.browser import browser_missing, launch_options
from tests.e2e.test_unsubscribe_flow import local
from tests.web.test_twilio_webhook import inbound, post
from tests.web.test_twilio_webhook import start as start_with_twilio
from tests.web.test_unsubscribe_page import BOB, deliverable, link, removals, sources, suppressed


async def test_unsubscribe_then_undo_in_chromium(gateway_factory) -> None:
    reason = browser_missing()
    if reason:
        pytest.skip(f"browser test skipped: {reason}")
    from playwright.async_api import async_playwright

    gateway, _ = await start_with_twilio(gateway_factory)
    url = local(gateway, await link(gateway))
    number = "+12125550123"
    number_url = local(gateway, "https://gw.example.com/u/" + gateway.services.unsubscribe.tokens
                       .issue(number, "katie@example.com", Channel.SMS, gateway.clock.now()))
    csp_errors: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(**launch_options())
        try:
            page = await browser.new_page(java_script_enabled=False)
            page.on("console", lambda m: csp_errors.append(m.text)
                    if "Content Security" in m.text else None)

            # A link scanner's GET changed nothing; the person reads who the sender is.
            await page.goto(url)
            await page.get_by_role("heading", name="Unsubscribe", exact=True).wait_for()
            assert "Example Corp" in await page.locator("main").inner_text()
            assert not await suppressed(gateway)
            await page.get_by_role("button", name="Unsubscribe", exact=True).click()
            await page.get_by_role("heading", name="You are unsubscribed").wait_for()
            assert page.url == url  # no redirect
            assert await suppressed(gateway) and not await deliverable(gateway)

            # Coming back later.
            await page.goto(url)
            await page.get_by_role("heading", name="You are already unsubscribed").wait_for()
            assert await page.get_by_role("button", name="Unsubscribe", exact=True).count() == 0
            await page.get_by_role("button", name="I unsubscribed by mistake").click()
            await page.get_by_role("heading", name="You are subscribed again").wait_for()
            assert page.url == url + "/undo"
            assert not await suppressed(gateway)
            assert await deliverable(gateway)
            [removal] = await removals(gateway)
            assert removal["actor"] == "recipient via /u" and removal["subject"] == BOB

            # A number unsubscribed through a link, then texted STOP: the undo lifts the
            # link's opt-out and says the other request stays.
            await page.goto(number_url)
            await page.get_by_role("button", name="Unsubscribe", exact=True).click()
            await page.get_by_role("heading", name="You are unsubscribed").wait_for()
            status, _ = await post(gateway, inbound("STOP", sender=number))
            assert status == 200
            await page.get_by_role("button", name="I unsubscribed by mistake").click()
            await page.get_by_role("heading", name="Your unsubscribe was undone").wait_for()
            assert "stays unsubscribed" in await page.locator("main").inner_text()
            await page.goto(number_url)
            await page.get_by_role("heading", name="You are already unsubscribed").wait_for()
            assert await page.get_by_role("button", name="I unsubscribed by mistake").count() == 0
        finally:
            await browser.close()
    # The STOP-family entry is in force; the undo removed only the link's own entry.
    assert await sources(gateway, number) == ["sms-keyword"]
    assert await suppressed(gateway, number)
    assert csp_errors == []
