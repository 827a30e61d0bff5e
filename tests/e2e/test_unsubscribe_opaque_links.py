"""Issue 21, item 2, end to end over real SMTP and HTTP: a sent message's unsubscribe links
carry the recipient's address in no form, and a link of the earlier signed format, as mail
already in mailboxes holds it, still shows its page and unsubscribes with one click."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime
from urllib.parse import quote, quote_plus, unquote

import aiohttp
import aiosmtplib
import pytest

from gateway.auth.unsubscribe_tokens import SEALED_TOKEN_SHAPE
from gateway.server import Gateway
from tests.conftest import outbox_messages
from tests.e2e.test_unsubscribe_flow import local, send_and_get_links, suppressed
from tests.ingress.smtp.test_submission import client, first_touch, parsed

RECIPIENT = "jonathan.smith@client-mail.net"
SENDER = "katie@example.com"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def old_format_link(gateway: Gateway, recipient: str, issued_at: datetime) -> str:
    """A link exactly as earlier versions wrote it into a footer, signed with this gateway's
    key: {public_url}/u/keyid.b64(json).b64(hmac[:16])."""
    tokens = gateway.services.unsubscribe.tokens
    key_id = tokens.active_key_id
    claims = {"r": recipient, "s": SENDER, "c": "email", "t": int(issued_at.timestamp()),
              "n": "Example Corp (2019)"}
    payload = b64(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(tokens.keys[key_id][0], f"{key_id}.{payload}".encode(), hashlib.sha256)
    return f"https://gw.example.com/u/{key_id}.{payload}.{b64(mac.digest()[:16])}"


def written_forms(text: str) -> set[str]:
    """`text` as a link could carry it: plain, lower case, percent-encoded, and base64
    (standard and URL-safe) at each of the three alignments it could start at, minus the
    characters its neighbours would change."""
    forms = {text, text.lower(), quote(text), quote(text, safe=""), quote_plus(text)}
    for pad in range(3):
        data = b"\x00" * pad + text.encode()
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(data).decode().rstrip("=")
            forms.add(encoded[(pad * 4 + 2) // 3:len(encoded) - 2])
    return forms


async def test_a_sent_messages_links_carry_the_recipient_in_no_form(gateway: Gateway) -> None:
    https, mailto = await send_and_get_links(gateway, to=RECIPIENT)
    message = parsed(outbox_messages(gateway)[-1])
    header = str(message["List-Unsubscribe"])
    token = https.removeprefix("https://gw.example.com/u/")
    assert SEALED_TOKEN_SHAPE.match(token)
    assert len(token) == 114  # 98 for the claims, 16 for the sender name "Example Corp"
    decoded = base64.urlsafe_b64decode(token.split(".")[1] + "==")
    assert RECIPIENT.encode() not in decoded
    for part in (RECIPIENT, *RECIPIENT.split("@"), SENDER, "Example Corp"):
        for form in written_forms(part):
            for carrier in (https, mailto, unquote(mailto), header):
                assert form not in carrier, (form, carrier)
    # The footer in the body holds the same opaque link.
    assert https in message.get_content()
    # ...and it works: its page names the recipient, its one-click POST suppresses them.
    async with aiohttp.ClientSession() as http:
        async with http.get(local(gateway, https)) as page:
            assert page.status == 200
            assert RECIPIENT in await page.text()
        async with http.post(local(gateway, https), data={"List-Unsubscribe": "One-Click"},
                             allow_redirects=False) as done:
            assert done.status == 200
    assert await suppressed(gateway, RECIPIENT)


def test_the_form_check_finds_what_it_looks_for() -> None:
    """Each form, written into a link, is caught (so the test above can fail)."""
    for form in (RECIPIENT, quote(RECIPIENT, safe=""),
                 b64(json.dumps({"r": RECIPIENT}).encode()),
                 base64.b64encode(b"xy" + RECIPIENT.encode()).decode()):
        link = f"https://gw.example.com/u/k1.{form}.sig"
        assert any(found in link for found in written_forms(RECIPIENT)), form


async def test_an_old_format_link_shows_its_page_and_one_click_unsubscribes(
    gateway: Gateway,
) -> None:
    link = old_format_link(gateway, RECIPIENT, datetime(2019, 3, 1, tzinfo=UTC))
    async with aiohttp.ClientSession() as http:
        async with http.get(local(gateway, link), allow_redirects=False) as page:
            text = await page.text()
            assert page.status == 200
            assert RECIPIENT in text
            assert "Example Corp (2019)" in text
            assert 'name="List-Unsubscribe" value="One-Click"' in text
        assert not await suppressed(gateway, RECIPIENT)
        async with http.post(local(gateway, link), data={"List-Unsubscribe": "One-Click"},
                             allow_redirects=False) as done:
            assert done.status == 200
            assert "unsubscribed" in (await done.text()).lower()
    assert await suppressed(gateway, RECIPIENT)
    smtp = await client(gateway)
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await smtp.send_message(first_touch(to=RECIPIENT))
    await smtp.quit()
    assert "SUPPRESSED" in refused.value.recipients[0].message


async def test_an_old_format_link_by_mailto_unsubscribes(gateway: Gateway) -> None:
    token = old_format_link(gateway, RECIPIENT, datetime(2019, 3, 1, tzinfo=UTC)).rsplit("/")[-1]
    smtp = await client(gateway, login=False)
    raw = f"From: {RECIPIENT}\r\nSubject: unsubscribe {token}\r\n\r\nstop\r\n".encode()
    errors, reply = await smtp.sendmail(RECIPIENT, ["unsubscribe@gw.example.com"], raw)
    await smtp.quit()
    assert errors == {} and "unsubscribed" in reply
    assert await suppressed(gateway, RECIPIENT)


async def test_a_tampered_old_format_link_changes_nothing(gateway: Gateway) -> None:
    link = old_format_link(gateway, RECIPIENT, datetime(2019, 3, 1, tzinfo=UTC))
    prefix, payload, signature = link.rsplit("/", 1)[1].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    other = b64(json.dumps({**claims, "r": "ann@client-mail.net"},
                           separators=(",", ":")).encode())
    forged = link.replace(payload, other)
    async with aiohttp.ClientSession() as http:
        async with http.get(local(gateway, forged)) as page:
            assert page.status == 404
        async with http.post(local(gateway, forged), data={"List-Unsubscribe": "One-Click"}
                             ) as done:
            assert done.status == 404
    assert await gateway.services.store.list_suppressions() == []
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", signature) and prefix
