"""Issue 18 items 4, 6 and 7 through the running gateway: headers that must not mislead
(15 U.S.C. 7704(a)(1)-(2)). A first-touch "Re:" disguised with look-alike or invisible
characters is refused with DECEPTIVE_SUBJECT, and a Reply-To, or an address written into a
display name or comment, outside the account's sender_domains with SENDER_NOT_ALLOWED, over
SMTP (aiosmtplib) and the Postmark API (postmarker); nothing reaches the outbox, every
refusal is recorded, and the same messages undisguised and in order are delivered."""

from __future__ import annotations

import asyncio
import json

import aiosmtplib
import pytest
from postmarker.exceptions import ClientError

from gateway.server import Gateway
from gateway.store.base import BlockQuery
from tests.conftest import outbox_messages
from tests.ingress.smtp.test_submission import client as smtp_client
from tests.ingress.smtp.test_submission import first_touch
from tests.ingress.test_postmark import client as postmark_client
from tests.ingress.test_postmark import send

DISGUISED_SUBJECTS = {
    "combining grapheme joiner": "R\u034fe: our call",
    "modifier letter colon": "Re\ua789 our call",
    "Hangul filler": "\u3164Re: our call",
    "small capital E": "R\u1d07: our call",
    "Cherokee R, Cyrillic e, ratio colon": "\u13a1\u0435\u2236 our call",
    "zero-width space in Fwd": "F\u200bwd: intro",
}
FOREIGN_IDENTITIES = {
    "Reply-To elsewhere": ("Reply-To", "replies@elsewhere.example", "Reply-To address"),
    "Reply-To display name": (
        "Reply-To", '"ceo\uff20bank\u3002example" <katie@example.com>', "Reply-To display name"
    ),
    "From comment": ("From", "katie@example.com (ceo@bank.example)", "From comment"),
    "From display name with a joiner": (
        "From", '"ceo@ba\u200dnk.example" <katie@example.com>', "From display name"
    ),
}


def email_file_count(gateway: Gateway) -> int:
    return len(list((gateway.config.data_dir / "outbox" / "email").glob("*")))


async def smtp_refusal(gateway: Gateway, message) -> aiosmtplib.SMTPDataError:
    smtp = await smtp_client(gateway)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await smtp.send_message(message)
    await smtp.quit()
    return refused.value


@pytest.mark.parametrize("subject", DISGUISED_SUBJECTS.values(), ids=DISGUISED_SUBJECTS.keys())
async def test_smtp_refuses_a_disguised_first_touch_reply(gateway: Gateway, subject) -> None:
    refused = await smtp_refusal(gateway, first_touch(subject=subject))
    assert refused.code == 550
    assert "DECEPTIVE_SUBJECT" in refused.message
    assert outbox_messages(gateway) == []
    [block] = await gateway.services.store.query_blocks(BlockQuery(reason="DECEPTIVE_SUBJECT"))
    assert block.subject == subject


async def test_smtp_delivers_the_same_subject_on_a_real_reply(gateway: Gateway) -> None:
    message = first_touch(subject="R\u1d07: our call")
    message["In-Reply-To"] = "<their-message@client.example.net>"
    smtp = await smtp_client(gateway)
    errors, reply = await smtp.send_message(message)
    await smtp.quit()
    assert errors == {} and reply.startswith("2.0.0 OK")
    assert len(outbox_messages(gateway)) == 1


@pytest.mark.parametrize(("header", "value", "named"), FOREIGN_IDENTITIES.values(),
                         ids=FOREIGN_IDENTITIES.keys())
async def test_smtp_refuses_an_identity_outside_sender_domains(
    gateway: Gateway, header, value, named
) -> None:
    message = first_touch()
    if header in message:
        del message[header]
    message[header] = value
    refused = await smtp_refusal(gateway, message)
    assert refused.code == 550
    assert "SENDER_NOT_ALLOWED" in refused.message
    assert outbox_messages(gateway) == []
    [block] = await gateway.services.store.query_blocks(BlockQuery(reason="SENDER_NOT_ALLOWED"))
    assert named in block.reasons[0].message
    assert block.reasons[0].rule == "email.sender.domain"


async def test_smtp_delivers_a_reply_to_at_an_allowed_domain(gateway: Gateway) -> None:
    message = first_touch()
    message["Reply-To"] = "Sales team <sales@example.com>"
    smtp = await smtp_client(gateway)
    errors, reply = await smtp.send_message(message)
    await smtp.quit()
    assert errors == {} and reply.startswith("2.0.0 OK")
    assert len(outbox_messages(gateway)) == 1


async def postmark_refusal(gateway: Gateway, **fields) -> ClientError:
    with pytest.raises(ClientError) as refused:
        await send(gateway, **fields)
    return refused.value


@pytest.mark.parametrize("subject", DISGUISED_SUBJECTS.values(), ids=DISGUISED_SUBJECTS.keys())
async def test_postmark_api_refuses_a_disguised_first_touch_reply(gateway, subject) -> None:
    refused = await postmark_refusal(gateway, Subject=subject)
    assert refused.error_code == 300
    assert "DECEPTIVE_SUBJECT" in str(refused)
    assert email_file_count(gateway) == 0
    [block] = await gateway.services.store.query_blocks(BlockQuery(reason="DECEPTIVE_SUBJECT"))
    assert block.subject == subject


@pytest.mark.parametrize(("field", "value", "named"), [
    ("ReplyTo", "replies@elsewhere.example", "Reply-To address"),
    ("ReplyTo", "Sales <sales@example.com>, ceo@bank.example", "Reply-To address"),
    ("ReplyTo", '"ceo@b\u200bank\u2024example" <sales@example.com>', "Reply-To display name"),
    ("From", '"ceo\uff20bank.example" <katie@example.com>', "From display name"),
])
async def test_postmark_api_refuses_an_identity_outside_sender_domains(
    gateway: Gateway, field, value, named
) -> None:
    refused = await postmark_refusal(gateway, **{field: value})
    assert refused.error_code == 300
    assert "SENDER_NOT_ALLOWED" in str(refused) and named in str(refused)
    assert email_file_count(gateway) == 0


async def test_postmark_template_send_checks_reply_to_too(gateway: Gateway) -> None:
    def send_template(reply_to: str) -> dict:
        return postmark_client(gateway).emails.send_with_template(
            TemplateAlias="welcome", TemplateModel={"name": "Bob"},
            From="katie@example.com", To="bob@client.example.net", ReplyTo=reply_to,
        )

    with pytest.raises(ClientError) as refused:
        await asyncio.to_thread(send_template, "replies@elsewhere.example")
    assert "SENDER_NOT_ALLOWED" in str(refused.value)
    assert email_file_count(gateway) == 0
    answer = await asyncio.to_thread(send_template, "sales@example.com")
    assert answer["ErrorCode"] == 0
    [forwarded] = [json.loads(p.read_text()) for p in
                   (gateway.config.data_dir / "outbox" / "email").glob("*.json")]
    assert forwarded["ReplyTo"] == "sales@example.com"


async def test_postmark_api_delivers_an_allowed_reply_to(gateway: Gateway) -> None:
    answer = await send(gateway, ReplyTo="Sales <sales@example.com>")
    assert answer["ErrorCode"] == 0
    assert email_file_count(gateway) == 1
