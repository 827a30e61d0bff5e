"""Agents (postmarker SDK, SMTP) → gateway → a fake Postmark: what Postmark would receive."""

from __future__ import annotations

import asyncio
import base64
import sys

import pytest
from postmarker.exceptions import ClientError

from gateway.server import Gateway
from tests.conftest import DEMO_SECRET
from tests.fakes.postmark import SERVER_TOKEN, FakePostmark, suppression_entry
from tests.ingress.smtp.test_submission import client as smtp_client
from tests.ingress.smtp.test_submission import first_touch
from tests.ingress.test_postmark import PNG, client, send


def postmark_upstream(fake: FakePostmark) -> str:
    return f"""
[upstream.email]
kind = "postmark"
server_token = "{SERVER_TOKEN}"
base_url = "{fake.url}"
timeout_s = 2
"""


async def start(gateway_factory, fake: FakePostmark) -> Gateway:
    return await gateway_factory(postmark_upstream(fake))


async def test_forwarded_with_gateway_token_footer_and_headers(gateway_factory) -> None:
    async with FakePostmark() as fake:
        gateway = await start(gateway_factory, fake)
        answer = await send(
            gateway,
            HtmlBody="<html><body><p>Hi Bob</p></body></html>",
            Attachments=[("logo.png", base64.b64encode(PNG).decode(), "image/png")],
            Tag="outreach",
            Headers={"X-Campaign": "q3",
                     "DKIM-Signature": "v=1; a=rsa-sha256; d=agent.example; s=a1; bh=x; b=y"},
        )
        [request] = fake.requests_to("/email")
        assert answer["ErrorCode"] == 0 and answer["MessageID"]
        assert request.headers["X-Postmark-Server-Token"] == SERVER_TOKEN
        assert DEMO_SECRET not in str(dict(request.headers))
        body = request.json
        assert body["To"] == "bob@client.example.net"
        assert "548 Market St" in body["TextBody"]
        assert body["HtmlBody"].index("548 Market St") < body["HtmlBody"].index("</body>")
        headers = {h["Name"]: h["Value"] for h in body["Headers"]}
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert headers["List-Unsubscribe"].startswith("<https://gw.example.com/u/")
        assert headers["X-Campaign"] == "q3"
        assert "DKIM-Signature" not in headers, "Postmark signs what it builds; this would fail"
        assert body["Tag"] == "outreach"
        [attachment] = body["Attachments"]
        assert base64.b64decode(attachment["Content"]) == PNG


async def test_smtp_submission_reaches_postmark_api(gateway_factory) -> None:
    async with FakePostmark() as fake:
        gateway = await start(gateway_factory, fake)
        smtp = await smtp_client(gateway)
        errors, _ = await smtp.send_message(first_touch())
        await smtp.quit()
        assert errors == {}
        [request] = fake.requests_to("/email")
        assert request.json["Subject"] == "Fleet maintenance costs"
        assert "548 Market St" in request.json["TextBody"]


async def test_inactive_recipient_answer_passes_back_and_suppresses(gateway_factory) -> None:
    async with FakePostmark() as fake:
        gateway = await start(gateway_factory, fake)
        fake.answer_next(422, {"ErrorCode": 406, "Message": "You tried to send to a recipient "
                               "that has been marked as inactive."})
        with pytest.raises(ClientError) as refused:
            await send(gateway)
        assert refused.value.error_code == 406
        assert "marked as inactive" in str(refused.value)
        assert await gateway.services.store.suppressed(["bob@client.example.net"])


async def test_postmark_outage_is_503_and_nothing_is_retried(gateway_factory) -> None:
    async with FakePostmark() as fake:
        gateway = await start(gateway_factory, fake)
        fake.answer_next(500, {"ErrorCode": 500, "Message": "boom"})
        with pytest.raises(ClientError):
            await send(gateway)
        assert len(fake.requests_to("/email")) == 1


async def test_template_without_footer_is_blocked_with_footer_sent(gateway_factory) -> None:
    async with FakePostmark() as fake:
        gateway = await start(gateway_factory, fake)
        fake.add_template(1, alias="bare", html_body="<p>Hi {{name}}</p>", text_body="Hi")
        fake.add_template(2, alias="good", html_body="<p>Hi</p>{{{compliance_footer_html}}}",
                          text_body="Hi\n{{compliance_footer_text}}")
        sdk = client(gateway)
        with pytest.raises(ClientError) as refused:
            await asyncio.to_thread(
                sdk.emails.send_with_template, TemplateAlias="bare", TemplateModel={},
                From="katie@example.com", To="bob@client.example.net",
            )
        assert refused.value.error_code == 300
        assert "TEMPLATE_WITHOUT_FOOTER" in str(refused.value)
        assert fake.requests_to("/email/withTemplate") == []
        answer = await asyncio.to_thread(
            sdk.emails.send_with_template, TemplateAlias="good", TemplateModel={"name": "Bob"},
            From="katie@example.com", To="bob@client.example.net",
        )
        assert answer["ErrorCode"] == 0
        [request] = fake.requests_to("/email/withTemplate")
        model = request.json["TemplateModel"]
        assert "548 Market St" in model["compliance_footer_text"]
        assert model["name"] == "Bob"


async def test_a_template_with_its_footer_only_in_comments_is_blocked(gateway_factory) -> None:
    """Both footer placeholders are there, but in HTML comments no reader sees (the text
    body has none): refused as a template without a footer, and nothing reaches Postmark."""
    async with FakePostmark() as fake:
        gateway = await start(gateway_factory, fake)
        fake.add_template(
            3, alias="hidden",
            html_body="<p>Hi {{name}}</p><!-- {{{compliance_footer_html}}} -->"
                      "<!--[if mso]>{{compliance_footer_text}}<![endif]-->",
            text_body="Hi {{name}}",
        )
        with pytest.raises(ClientError) as refused:
            await asyncio.to_thread(
                client(gateway).emails.send_with_template, TemplateAlias="hidden",
                TemplateModel={"name": "Bob"}, From="katie@example.com",
                To="bob@client.example.net",
            )
        assert refused.value.error_code == 300
        assert "TEMPLATE_WITHOUT_FOOTER" in str(refused.value)
        assert "not inside an HTML comment" in str(refused.value)
        assert fake.requests_to("/email/withTemplate") == []


async def test_suppress_import_from_postmark(gateway_factory, tmp_path) -> None:
    async with FakePostmark() as fake:
        gateway = await start(gateway_factory, fake)
        fake.suppressions["outbound"] += [
            suppression_entry("gone@client.example.net", reason="HardBounce"),
            suppression_entry("angry@client.example.net", reason="SpamComplaint"),
        ]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "suppress", "import", "--from-postmark",
            "outbound", "--config", str(gateway.config.source),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        assert "imported 2" in out.decode()
        listed = await gateway.services.store.list_suppressions()
        assert {(s.address, s.source) for s in listed} == {
            ("gone@client.example.net", "postmark:HardBounce"),
            ("angry@client.example.net", "postmark:SpamComplaint"),
        }
