"""Issue 18 end to end: a recipient opts out with the one-click POST of a real message's
`List-Unsubscribe` link (or a Postmark webhook reports them), then agents write to other
spellings of the same mailbox over real SMTP (aiosmtplib) and through the Postmark API
(postmarker): every one is refused SUPPRESSED and nothing reaches the outbox."""

from __future__ import annotations

import re
from urllib.parse import unquote

import aiohttp
import aiosmtplib
import pytest
from postmarker.exceptions import ClientError

from gateway.server import Gateway
from gateway.store.base import BlockQuery
from tests.conftest import outbox_messages
from tests.e2e.test_unsubscribe_flow import local
from tests.ingress.smtp.test_submission import client, first_touch, parsed
from tests.ingress.test_postmark import WEBHOOK_CONFIG, hook, send

CASES = [
    ("carol@client.example.net",
     ["carol+promo@client.example.net", "Carol+News+2026@Client.Example.NET"]),
    ("Bob.Smith@gmail.com",
     ["bobsmith@gmail.com", "Bob.Smith@googlemail.com", "b.o.b.s.m.i.t.h+deals@GMAIL.COM"]),
    ("bob+old@client.example.net", ["bob@client.example.net", "BOB+new@client.example.net"]),
]


async def links(gateway: Gateway, recipient: str) -> list[str]:
    """The https and mailto links of a real message's List-Unsubscribe."""
    smtp = await client(gateway)
    await smtp.send_message(first_touch(to=recipient))
    await smtp.quit()
    header = parsed(outbox_messages(gateway)[-1])["List-Unsubscribe"]
    return re.findall(r"<([^>]+)>", header)


async def deliverable(gateway: Gateway, recipient: str) -> str:
    smtp = await client(gateway)
    try:
        _, reply = await smtp.send_message(first_touch(to=recipient))
    finally:
        await smtp.quit()
    return reply


async def one_click(gateway: Gateway, recipient: str) -> None:
    https, _ = await links(gateway, recipient)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            local(gateway, https), data={"List-Unsubscribe": "One-Click"}, allow_redirects=False
        ) as response:
            assert response.status == 200


async def refused_over_smtp(gateway: Gateway, recipient: str) -> str:
    smtp = await client(gateway)
    try:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await smtp.send_message(first_touch(to=recipient))
    finally:
        await smtp.quit()
    return refused.value.recipients[0].message


@pytest.mark.parametrize(("opted_out", "spellings"), CASES, ids=[c[0] for c in CASES])
async def test_one_click_opt_out_refuses_every_spelling_over_smtp_and_the_api(
    gateway: Gateway, opted_out: str, spellings: list[str]
) -> None:
    await one_click(gateway, opted_out)
    sent = len(outbox_messages(gateway))

    for spelling in [opted_out, *spellings]:
        assert "SUPPRESSED" in await refused_over_smtp(gateway, spelling), spelling
        with pytest.raises(ClientError) as api_refusal:
            await send(gateway, To=spelling)
        assert api_refusal.value.error_code == 406 and "SUPPRESSED" in str(api_refusal.value)

    assert len(outbox_messages(gateway)) == sent, "nothing reached the outbox"
    blocks = await gateway.services.store.query_blocks(BlockQuery(reason="SUPPRESSED"))
    assert {b.recipient for b in blocks} == {opted_out, *spellings}


async def test_a_message_to_a_spelling_and_to_someone_else_reaches_only_the_other(
    gateway: Gateway,
) -> None:
    await one_click(gateway, "Bob.Smith@gmail.com")
    sent = len(outbox_messages(gateway))
    smtp = await client(gateway)
    errors, _ = await smtp.send_message(
        first_touch(to=["bobsmith+q4@googlemail.com", "ann@client.example.net"])
    )
    await smtp.quit()
    assert "SUPPRESSED" in errors["bobsmith+q4@googlemail.com"][1]
    delivered = outbox_messages(gateway)[sent:]
    assert [parsed(raw)["Delivered-To"] for raw in delivered] == ["ann@client.example.net"]


async def test_a_postmark_spam_complaint_refuses_every_spelling(gateway_factory) -> None:
    gateway = await gateway_factory(WEBHOOK_CONFIG)
    status = await hook(gateway, {"RecordType": "SpamComplaint", "Email": "Bob.Smith+x@gmail.com"})
    assert status == 200
    for spelling in ("bobsmith@googlemail.com", "bob.smith@gmail.com"):
        assert "SUPPRESSED" in await refused_over_smtp(gateway, spelling)
    assert outbox_messages(gateway) == []


async def test_a_mailto_opt_out_refuses_every_spelling(gateway: Gateway) -> None:
    """The List-Unsubscribe mailto: mail to the gateway's mailbox with the token."""
    https_and_mailto = await links(gateway, "Jane.Roe+shop@me.com")
    address, _, query = https_and_mailto[1].removeprefix("mailto:").partition("?subject=")
    smtp = await client(gateway, login=False)
    raw = (
        f"From: jane.roe@me.com\r\nTo: {address}\r\nSubject: {unquote(query)}\r\n\r\nstop\r\n"
    ).encode()
    errors, reply = await smtp.sendmail("jane.roe@me.com", [address], raw)
    await smtp.quit()
    assert errors == {} and "unsubscribed" in reply
    for spelling in ("jane.roe@icloud.com", "Jane.Roe@mac.com", "jane.roe+x@me.com"):
        assert "SUPPRESSED" in await refused_over_smtp(gateway, spelling), spelling
    assert "SUPPRESSED" not in str(await deliverable(gateway, "janeroe@icloud.com"))
