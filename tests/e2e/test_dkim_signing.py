"""Through the running gateway: mail that leaves as MIME carries the operator's DKIM
signature over the final bytes (footer and one-click headers included), verified with the
DNS record `check dkim` prints, by dkimpy and by Perl's Mail::DKIM."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiosmtplib
import dkim
import pytest
from postmarker.core import PostmarkClient

from gateway.rewrite.dkim import sign
from gateway.server import Gateway
from tests.conftest import outbox_messages
from tests.rewrite.test_dkim import AGENT_KEY, KEYS, mail_dkim_results, rsa_pem, signature_tags

SIGNER_SECRET = "signer-secret-0123456789"
DKIM_TABLE = f"""
[[accounts]]
name = "signer"
secret = "{SIGNER_SECRET}"
sender_domains = ["example.com", "news.example.com", "other.test"]

[[dkim]]
domain = "example.com"
selector = "gw2026"
private_key = "dkim-example.pem"
"""
KEY_PEM = rsa_pem()


@pytest.fixture
async def signing_gateway(
    tmp_path: Path, gateway_factory: Callable[..., object]
) -> Gateway:
    (tmp_path / "dkim-example.pem").write_bytes(KEY_PEM)
    return await gateway_factory(DKIM_TABLE)  # type: ignore[misc]


def published_record(gateway: Gateway) -> str:
    """What the operator puts in DNS, as `check dkim` prints it."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "dkim", "--domain", "news.example.com",
         "--config", str(gateway.config.source)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "; mail from news.example.com is signed d=example.com s=gw2026"
    name, strings = lines[1].split(" IN TXT ", 1)
    assert name == "gw2026._domainkey.example.com."
    return "".join(re.findall(r'"([^"]*)"', strings))


def verify_both(message: bytes, record: str) -> None:
    """dkimpy against the published record, then the independent verifier."""
    answers = {**KEYS, "gw2026._domainkey.example.com": record}
    signatures = message.split(b"\r\n\r\n", 1)[0].lower().count(b"\r\ndkim-signature:") + (
        message.lower().startswith(b"dkim-signature:")
    )
    for index in range(signatures):
        assert dkim.DKIM(message).verify(
            idx=index, dnsfunc=lambda name, timeout=5: answers.get(
                name.decode().rstrip("."), "").encode()
        ), f"signature {index} fails dkimpy"
    results = mail_dkim_results(message, answers)
    assert results and all(r.startswith("pass") for r in results), results


def signed_header_names(message: bytes) -> list[bytes]:
    return signature_tags(message)[b"h"].replace(b" ", b"").lower().split(b":")


async def smtp_send(gateway: Gateway, raw: bytes) -> None:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=gateway.smtp_port, start_tls=False)
    await smtp.connect()
    await smtp.login("signer", SIGNER_SECRET)
    await smtp.sendmail("katie@example.com", ["bob@client.example.net"], raw)
    await smtp.quit()


COMMERCIAL = (
    b"From: Katie <katie@news.example.com>\r\nTo: bob@client.example.net\r\n"
    b"Subject: Spring offer\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/alternative; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain\r\n\r\nHi Bob\r\n"
    b"--b\r\nContent-Type: text/html\r\n\r\n<p>Hi Bob</p>\r\n--b--\r\n"
)


async def test_smtp_send_is_signed_over_footer_and_one_click_headers(
    signing_gateway: Gateway,
) -> None:
    await smtp_send(signing_gateway, COMMERCIAL.replace(b"news.example.com", b"example.com"))
    [sent] = outbox_messages(signing_gateway)
    assert b"548 Market St" in sent and b"List-Unsubscribe-Post:" in sent
    assert {b"list-unsubscribe", b"list-unsubscribe-post"} <= set(signed_header_names(sent))
    verify_both(sent, published_record(signing_gateway))


async def test_postmark_api_send_is_composed_then_signed(signing_gateway: Gateway) -> None:
    client = PostmarkClient(
        server_token=SIGNER_SECRET, root_api_url=f"http://127.0.0.1:{signing_gateway.http_port}/"
    )
    answer = await asyncio.to_thread(
        client.emails.send, From="katie@news.example.com", To="bob@client.example.net",
        Subject="Spring offer", TextBody="Hi Bob", HtmlBody="<p>Hi Bob</p>",
        Headers={"DKIM-Signature": "v=1; a=rsa-sha256; d=agent.example; s=a1; bh=x; b=y"},
    )
    assert answer["ErrorCode"] == 0
    [sent] = outbox_messages(signing_gateway)
    assert sent.lower().count(b"dkim-signature:") == 1, "the agent's cannot hold: removed"
    verify_both(sent, published_record(signing_gateway))


async def test_an_agent_signature_broken_by_the_footer_is_replaced_not_forwarded(
    signing_gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    agent_signed = sign(COMMERCIAL, AGENT_KEY)
    with caplog.at_level(logging.INFO, "gateway.pipeline.email_egress"):
        await smtp_send(signing_gateway, agent_signed)
    [sent] = outbox_messages(signing_gateway)
    head = sent.split(b"\r\n\r\n", 1)[0]
    assert b"d=agent.example" not in head
    assert head.lower().count(b"dkim-signature:") == 1
    verify_both(sent, published_record(signing_gateway))
    [removal] = [r for r in caplog.records if r.getMessage() == "dkim-signature-removed"]
    assert removal.fields["notes"] == [  # type: ignore[attr-defined]
        "agent DKIM-Signature d=agent.example removed: the rewrite changed the signed body "
        "(the footer)"
    ]


async def test_mail_from_a_domain_without_a_key_goes_unsigned(signing_gateway: Gateway) -> None:
    """The account may send from other domains (sender_domains); the provider signs those."""
    await smtp_send(signing_gateway, COMMERCIAL.replace(b"news.example.com", b"other.test"))
    outbox = outbox_messages(signing_gateway)
    assert all(b"DKIM-Signature" not in m for m in outbox)
