"""The Activity page in a real browser (Chromium through Playwright, no JavaScript needed)
against a running gateway: a manager and an admin sign in, search with part of a recipient
in mixed case, open a decision, download the CSV export through its link (read back with
the csv module: a formula subject is written as text), and open the printable evidence of an
allowed text and of a blocked call."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import aiosmtplib
import pytest

from gateway.model import Channel, DecisionOutcome, DecisionRecord, Purpose, Reason, Suppression
from gateway.server import Gateway
from tests.browser import browser_missing, launch_options
from tests.conftest import DEMO_SECRET, MANAGER_SECRET
from tests.ingress.smtp.test_submission import first_touch

# `make screenshots` sets this to docs/; otherwise the picture stays out of the tree.
SCREENSHOT_DIR_ENV = "GATEWAY_SCREENSHOT_DIR"
ADMIN_SECRET = "admin-secret-0123456789"
ADMIN = f"""
[[accounts]]
name = "ada"
secret = "{ADMIN_SECRET}"
role = "admin"
sender_domains = []
"""
FORMULA = '=HYPERLINK("http://x")'
MIXED = "Mixed.Case@Client.example.net"


def texted(gateway: Gateway) -> DecisionRecord:
    """An allowed marketing text, with the evidence the pipeline records for one."""
    return DecisionRecord(
        time=gateway.clock.now() - timedelta(minutes=5), channel=Channel.SMS, account="demo",
        sender="+14155550100", recipient="+12125550143", purpose=Purpose.MARKETING,
        outcome=DecisionOutcome.ALLOWED, reasons=(), rules_version="test", upstream_id="SM9",
        gateway_id="gw-text",
        evidence={
            "ingress": "twilio",
            "zones": [{"zone": "America/New_York", "local_time": "2026-03-10T10:15:00-04:00"}],
            "rules": [{"id": "US.calling.window", "citation": "47 CFR 64.1200(c)(1)",
                       "confidence": "high"},
                      {"id": "US.consent.marketing", "citation": "FCC 24-17",
                       "confidence": "high", "consent": {"kind": "express-written",
                                                         "obtained_at": "2026-01-05"}}],
            "consent": {"subject": "+12125550143", "kind": "express-written",
                        "obtained_at": "2026-01-05", "rule": "US.consent.marketing",
                        "evidence": "web form row 12"},
            "suppression": [], "upstream": {"upstream": "outbox", "accepted": True, "id": "SM9"},
            "rewrites": [{"kind": "sms_notice", "text": "Reply STOP to opt out"}],
        },
    )


def called(gateway: Gateway) -> DecisionRecord:
    """A marketing call refused at 7 a.m. the callee's time."""
    return DecisionRecord(
        time=gateway.clock.now() - timedelta(minutes=4), channel=Channel.CALL, account="demo",
        sender="+14155550100", recipient="+12125550144", purpose=Purpose.MARKETING,
        outcome=DecisionOutcome.BLOCKED,
        reasons=(Reason("QUIET_HOURS", "7:00 in America/New_York is outside 8:00-21:00",
                        "US.calling.window"),),
        rules_version="test", gateway_id="gw-call",
        evidence={
            "ingress": "twilio-calls",
            "zones": [{"zone": "America/New_York", "local_time": "2026-03-10T07:00:00-04:00"}],
            "rules": [{"id": "US.calling.window", "citation": "47 CFR 64.1200(c)(1)",
                       "confidence": "high"}],
            "consent": None, "suppression": [], "rewrites": [], "upstream": None,
        },
    )


async def test_managers_and_admins_search_open_export_and_print_evidence(
    gateway_factory: Callable[..., Awaitable[Gateway]], tmp_path: Path
) -> None:
    reason = browser_missing()
    if reason:
        print(f"browser test skipped: {reason}")
        pytest.skip(f"browser test skipped: {reason}")
    from playwright.async_api import async_playwright

    gateway = await gateway_factory(ADMIN)
    store = gateway.services.store
    await store.add_suppressions(
        [Suppression("ann@client.example.net", "test", "asked", gateway.clock.now())])
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=gateway.smtp_port, start_tls=False)
    await smtp.connect()
    await smtp.login("demo", DEMO_SECRET)
    recipients = [MIXED, "ann@client.example.net"]
    await smtp.sendmail("katie@example.com", recipients,
                        first_touch(to=recipients, subject=FORMULA).as_bytes())
    await smtp.quit()
    text_id, call_id = await store.record_decisions([texted(gateway), called(gateway)])

    base = f"http://127.0.0.1:{gateway.http_port}"
    screenshot = Path(os.environ.get(SCREENSHOT_DIR_ENV) or tmp_path) / "review-page.png"
    csp_errors: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(**launch_options())
        try:
            for secret, role in ((MANAGER_SECRET, "manager"), (ADMIN_SECRET, "admin")):
                context = await browser.new_context(
                    viewport={"width": 1280, "height": 900}, accept_downloads=True)
                page = await context.new_page()
                page.on("console", lambda m: csp_errors.append(m.text)
                        if "Content Security" in m.text else None)
                await page.goto(f"{base}/review")
                await page.get_by_label("Account secret").fill(secret)
                await page.get_by_role("button", name="Sign in").click()
                await page.get_by_role("heading", name="Activity").wait_for()
                assert f"({role})" in await page.content()
                audit_link = page.get_by_role("link", name="Audit log")
                assert await audit_link.count() == (1 if role == "admin" else 0)

                await page.get_by_label("Recipient", exact=True).fill("mIXED.case@CLIENT")
                await page.get_by_role("button", name="Apply filters").click()
                await page.wait_for_url("**/review?*recipient=mIXED.case*")
                rows = page.locator("table:has(caption:text('Decisions with these filters')) "
                                    "tbody tr")
                assert await rows.count() == 1
                assert MIXED in await rows.first.inner_text()
                assert "ann@client.example.net" not in await page.content()
                if role == "manager":
                    await page.screenshot(path=str(screenshot), full_page=True)

                async with page.expect_download() as download_info:
                    await page.get_by_role("link", name="CSV").click()
                download = await download_info.value
                saved = tmp_path / f"{role}.csv"
                await download.save_as(saved)
                with saved.open(newline="", encoding="utf-8") as handle:
                    exported = list(csv.DictReader(handle))
                assert [row["recipient"] for row in exported] == [MIXED]
                assert exported[0]["subject"] == "'" + FORMULA
                assert exported[0]["outcome"] == "allowed"

                await rows.first.get_by_role("link").click()
                await page.get_by_role("heading", name=re.compile(r"^Decision \d+$")).wait_for()
                detail = await page.content()
                assert MIXED in detail and "email.suppression" in detail
                assert "CAN-SPAM" in detail or "7704" in detail  # a citation of the rules
                await page.get_by_role("link", name="Printable evidence").click()
                await page.get_by_role("heading", name=re.compile("^Evidence for decision"))\
                    .wait_for()

                await page.goto(f"{base}/v1/decisions/{text_id}/evidence")
                evidence = await page.content()
                for text in ("America/New_York", "2026-03-10T10:15:00-04:00",
                             "47 CFR 64.1200(c)(1)", "FCC 24-17", "web form row 12",
                             "met by express-written consent of 2026-01-05",
                             "Reply STOP to opt out", "SM9"):
                    assert text in evidence, text
                assert "bytes" not in evidence

                await page.goto(f"{base}/v1/decisions/{call_id}/evidence")
                evidence = await page.content()
                for text in ("blocked", "QUIET_HOURS", "2026-03-10T07:00:00-04:00",
                             "47 CFR 64.1200(c)(1)", "None: nothing was handed to a provider"):
                    assert text in evidence, text
                await context.close()
        finally:
            await browser.close()
    assert screenshot.stat().st_size > 0
    assert csp_errors == []
