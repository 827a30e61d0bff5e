"""The Postmark-shaped API driven by the official `postmarker` SDK, and Postmark's webhooks."""

from __future__ import annotations

import asyncio
import base64
import json
from email import message_from_bytes, policy

import aiohttp
import pytest
from postmarker.core import PostmarkClient
from postmarker.exceptions import ClientError

from gateway.model import Suppression
from gateway.server import Gateway
from gateway.store.base import BlockQuery
from tests.conftest import DEMO_SECRET, outbox_messages

WEBHOOK_USER, WEBHOOK_PASSWORD = "postmark-hooks", "webhook-password-0123"
WEBHOOK_CONFIG = f"""
[webhooks.postmark]
username = "{WEBHOOK_USER}"
password = "{WEBHOOK_PASSWORD}"
"""
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def client(gateway: Gateway, token: str = DEMO_SECRET) -> PostmarkClient:
    return PostmarkClient(server_token=token, root_api_url=f"http://127.0.0.1:{gateway.http_port}/")


def parsed(raw: bytes):
    return message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=policy.default)


async def send(gateway: Gateway, token: str = DEMO_SECRET, **fields):
    fields.setdefault("From", "katie@example.com")
    fields.setdefault("To", "bob@client.example.net")
    fields.setdefault("Subject", "Fleet maintenance costs")
    fields.setdefault("TextBody", "Hi Bob, would a call work?")
    return await asyncio.to_thread(client(gateway, token).emails.send, **fields)


async def test_single_send_is_rewritten_and_answered_like_postmark(gateway: Gateway) -> None:
    answer = await send(
        gateway,
        HtmlBody="<html><body><p>Hi Bob</p></body></html>",
        Tag="outreach",
        Metadata={"campaign": "q3"},
        Headers={"X-Campaign": "q3"},
        Attachments=[("logo.png", base64.b64encode(PNG).decode(), "image/png")],
        MessageStream="outbound",
        TrackOpens=True,
    )
    assert answer["ErrorCode"] == 0
    assert answer["Message"] == "OK"
    assert answer["To"] == "bob@client.example.net"
    assert answer["MessageID"]
    [raw] = outbox_messages(gateway)
    message = parsed(raw)
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "548 Market St" in text and "https://gw.example.com/u/" in text
    assert html.index("548 Market St") < html.index("</body>")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["X-PM-Tag"] == "outreach"
    assert message["X-PM-Metadata-campaign"] == "q3"
    assert message["X-PM-Message-Stream"] == "outbound"
    assert message["X-Campaign"] == "q3"
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content() == PNG


async def test_postmark_unsubscribe_placeholder_is_replaced_not_duplicated(gateway) -> None:
    await send(gateway, TextBody="Hi\n\nUnsubscribe: {{{ pm:unsubscribe }}}")
    text = parsed(outbox_messages(gateway)[0]).get_body(("plain",)).get_content()
    assert "pm:unsubscribe" not in text
    link = text.split("Unsubscribe: ", 1)[1].split()[0]
    assert link.startswith("https://gw.example.com/u/")


async def test_suppressed_recipient_is_422_406_and_recorded(gateway: Gateway) -> None:
    await gateway.services.store.add_suppressions(
        [Suppression("bob@client.example.net", "t", "t", gateway.clock.now())]
    )
    with pytest.raises(ClientError) as refused:
        await send(gateway)
    assert refused.value.error_code == 406
    assert "SUPPRESSED" in str(refused.value)
    [block] = await gateway.services.store.query_blocks(BlockQuery())
    assert block.recipient == "bob@client.example.net"
    assert outbox_messages(gateway) == []


async def test_other_policy_block_is_422_300(gateway: Gateway) -> None:
    with pytest.raises(ClientError) as refused:
        await send(gateway, Subject="RE: our call")
    assert refused.value.error_code == 300
    assert "DECEPTIVE_SUBJECT" in str(refused.value)


async def test_bad_token_is_401_code_10(gateway: Gateway) -> None:
    with pytest.raises(ClientError) as refused:
        await send(gateway, token="not-a-token")
    assert refused.value.error_code == 10
    assert outbox_messages(gateway) == []


async def test_batch_answers_in_order_and_forwards_only_allowed(gateway: Gateway) -> None:
    await gateway.services.store.add_suppressions(
        [Suppression("ann@client.example.net", "t", "t", gateway.clock.now())]
    )
    messages = [
        {"From": "katie@example.com", "To": "bob@client.example.net", "Subject": "A",
         "TextBody": "one"},
        {"From": "katie@example.com", "To": "ann@client.example.net", "Subject": "B",
         "TextBody": "two"},
        {"From": "katie@example.com", "To": "cy@client.example.net", "Subject": "Fwd: C",
         "TextBody": "three"},
        {"From": "katie@example.com", "To": "dee@client.example.net", "Subject": "D",
         "TextBody": "four"},
    ]
    answers = await asyncio.to_thread(client(gateway).emails.send_batch, *messages)
    assert [a["ErrorCode"] for a in answers] == [0, 406, 300, 0]
    assert [a["To"] for a in answers if a["ErrorCode"] == 0] == [
        "bob@client.example.net", "dee@client.example.net"
    ]
    delivered = sorted(parsed(raw)["Delivered-To"] for raw in outbox_messages(gateway))
    assert delivered == ["bob@client.example.net", "dee@client.example.net"]


async def test_template_send_passes_footer_in_template_model(gateway: Gateway) -> None:
    answer = await asyncio.to_thread(
        client(gateway).emails.send_with_template,
        TemplateAlias="welcome", TemplateModel={"name": "Bob"},
        From="katie@example.com", To="bob@client.example.net",
    )
    assert answer["ErrorCode"] == 0
    [forwarded] = [json.loads(p.read_text()) for p in
                   (gateway.config.data_dir / "outbox" / "email").glob("*.json")]
    model = forwarded["TemplateModel"]
    assert model["name"] == "Bob"
    assert "548 Market St" in model["compliance_footer_html"]
    assert "548 Market St" in model["compliance_footer_text"]
    assert model["unsubscribe_url"].startswith("https://gw.example.com/u/")
    headers = {h["Name"]: h["Value"] for h in forwarded["Headers"]}
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["List-Unsubscribe"].startswith("<https://gw.example.com/u/")


async def raw_post(gateway: Gateway, path: str, body: bytes, token: str = DEMO_SECRET):
    url = f"http://127.0.0.1:{gateway.http_port}{path}"
    headers = {"X-Postmark-Server-Token": token, "Content-Type": "application/json",
               "Accept": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body, headers=headers) as response:
            return response.status, await response.json()


def item(**fields) -> dict:
    return {"From": "katie@example.com", "To": "bob@client.example.net", "Subject": "Hi",
            "TextBody": "Hello"} | fields


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", 402),
        (json.dumps(item(To=5)).encode(), 300),
        (json.dumps(item(To="not an address")).encode(), 300),
        (json.dumps(item(To=", ".join(f"r{i}@client.example.net" for i in range(51)))).encode(),
         300),
        (json.dumps(item(Subject="Hi\r\nBcc: victim@client.example.net")).encode(), 300),
        (json.dumps(item(From="katie@example.com\r\nX-Evil: 1")).encode(), 300),
        (json.dumps(item(Headers=[{"Name": "X-Ok", "Value": "a\r\nBcc: x@y.example.net"}]))
         .encode(), 300),
        (json.dumps(item(Headers=[{"Name": "From", "Value": "ceo@bank.example.org"}])).encode(),
         300),
        (json.dumps(item(TextBody=None)).encode(), 300),
        (json.dumps(item(Attachments=[{"Name": "a", "Content": "!!", "ContentType": "a/b"}]))
         .encode(), 300),
        (json.dumps(item(Unknown=1)).encode(), 300),
    ],
    ids=["invalid-json", "wrong-type", "bad-recipient", "51-recipients", "crlf-subject",
         "crlf-from", "crlf-header", "reserved-header", "no-body", "bad-attachment",
         "unknown-field"],
)
async def test_bad_requests_get_postmark_errors_and_nothing_is_sent(
    gateway: Gateway, body: bytes, code: int
) -> None:
    status, answer = await raw_post(gateway, "/email/", body)
    assert status == 422
    assert answer["ErrorCode"] == code
    assert answer["Message"]
    assert outbox_messages(gateway) == []
    if code == 300:
        blocks = await gateway.services.store.query_blocks(BlockQuery())
        assert blocks
        assert {b.reasons[0].code for b in blocks} == {"MESSAGE_MALFORMED"}


async def test_batch_over_500_is_refused_whole(gateway: Gateway) -> None:
    status, answer = await raw_post(gateway, "/email/batch", json.dumps([item()] * 501).encode())
    assert status == 422
    assert answer["ErrorCode"] == 300
    assert outbox_messages(gateway) == []


async def hook(gateway: Gateway, event: dict, credentials=(WEBHOOK_USER, WEBHOOK_PASSWORD)):
    url = f"http://127.0.0.1:{gateway.http_port}/webhooks/postmark"
    auth = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=event, headers={"Authorization": auth}) as response:
            return response.status


@pytest.mark.parametrize(
    ("event", "suppressed"),
    [
        ({"RecordType": "Bounce", "Type": "HardBounce", "Email": "Bob@Client.Example.NET"}, True),
        ({"RecordType": "Bounce", "Type": "SoftBounce", "Email": "bob@client.example.net"}, False),
        ({"RecordType": "SpamComplaint", "Email": "bob@client.example.net"}, True),
        ({"RecordType": "SubscriptionChange", "Recipient": "bob@client.example.net",
          "SuppressSending": True, "SuppressionReason": "ManualSuppression"}, True),
        ({"RecordType": "Delivery", "Recipient": "bob@client.example.net"}, False),
    ],
    ids=["hard-bounce", "soft-bounce", "spam-complaint", "unsubscribed", "delivery"],
)
async def test_webhook_events(gateway_factory, event, suppressed) -> None:
    gateway = await gateway_factory(WEBHOOK_CONFIG)
    assert await hook(gateway, event) == 200
    found = await gateway.services.store.suppressed(["bob@client.example.net"])
    assert bool(found) is suppressed


async def test_reactivation_lifts_only_postmark_suppressions(gateway_factory) -> None:
    gateway = await gateway_factory(WEBHOOK_CONFIG)
    await hook(gateway, {"RecordType": "SpamComplaint", "Email": "bob@client.example.net"})
    await gateway.services.suppressions.add(
        ["ann@client.example.net"], source="one-click", reason="u", actor="recipient"
    )
    for address in ("bob@client.example.net", "ann@client.example.net"):
        assert await hook(gateway, {"RecordType": "SubscriptionChange", "Recipient": address,
                                    "SuppressSending": False}) == 200
    store = gateway.services.store
    assert await store.suppressed(["bob@client.example.net", "ann@client.example.net"]) == {
        "ann@client.example.net"
    }


async def test_webhook_without_credentials_changes_nothing(gateway_factory) -> None:
    gateway = await gateway_factory(WEBHOOK_CONFIG)
    event = {"RecordType": "SpamComplaint", "Email": "bob@client.example.net"}
    assert await hook(gateway, event, credentials=("postmark-hooks", "wrong")) == 401
    assert await gateway.services.store.suppressed(["bob@client.example.net"]) == frozenset()


async def test_webhook_refused_when_not_configured(gateway: Gateway) -> None:
    event = {"RecordType": "SpamComplaint", "Email": "bob@client.example.net"}
    assert await hook(gateway, event) == 401


async def test_a_footer_hidden_by_the_agent_s_html_is_placed_outside_it(gateway) -> None:
    """`<div style="display:none"></body>` once swallowed the footer: it now follows the div
    as the body's last child."""
    await send(gateway, HtmlBody='<p>Hi</p><div style="display:none"></body>')
    [raw] = outbox_messages(gateway)
    html = parsed(raw).get_body(preferencelist=("html",)).get_content()
    hidden_div_closes = html.index('<div style="display:none"></div>')
    assert hidden_div_closes < html.index("data-compliance-footer") < html.index("548 Market St")


async def test_html_that_would_hide_the_footer_is_refused_and_recorded(gateway) -> None:
    with pytest.raises(ClientError) as refused:
        await send(gateway, HtmlBody='<body style="opacity:0"><p>Hi</p>')
    assert refused.value.error_code == 300
    assert "FOOTER_NOT_VISIBLE" in str(refused.value)
    assert outbox_messages(gateway) == []
    [block] = await gateway.services.store.query_blocks(BlockQuery())
    assert [r.code for r in block.reasons] == ["FOOTER_NOT_VISIBLE"]
