"""End to end over real sockets: an SMTP client submits, the gateway decides and forwards."""

from __future__ import annotations

import asyncio
import smtplib
from email import message_from_bytes, policy
from email.message import EmailMessage

import aiohttp
import aiosmtplib
import pytest

from gateway.config.settings import load_config
from gateway.model import Suppression
from gateway.server import Gateway
from gateway.store.base import BlockQuery
from tests.conftest import DEMO_SECRET, outbox_messages, write_config
from tests.fakes.smtp_sink import SmtpSink, make_self_signed_cert
from tests.fakes.store import FlakyStore


def first_touch(
    to: str | list[str] = "bob@client.example.net",
    subject: str = "Fleet maintenance costs",
    sender: str = "katie@example.com",
    body: str = "Hi Bob,\n\nWould a 15 minute call next week work?\n\nKatie\n",
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Katie <{sender}>"
    message["To"] = ", ".join(to) if isinstance(to, list) else to
    message["Subject"] = subject
    message["Message-ID"] = "<first-touch-1@example.com>"
    message.set_content(body)
    return message


async def client(gateway: Gateway, login: bool = True) -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=gateway.smtp_port, start_tls=False)
    await smtp.connect()
    if login:
        await smtp.login("demo", DEMO_SECRET)
    return smtp


def parsed(raw: bytes) -> EmailMessage:
    """As a mail reader sees it: Python's parser keeps CRLF inside bodies, readers do not."""
    return message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=policy.default)  # type: ignore[return-value]


async def test_authenticated_message_is_rewritten_and_delivered(gateway: Gateway) -> None:
    smtp = await client(gateway)
    errors, reply = await smtp.send_message(first_touch())
    await smtp.quit()
    assert errors == {}
    assert reply.startswith("2.0.0 OK")
    [raw] = outbox_messages(gateway)
    delivered = parsed(raw)
    body = delivered.get_content()
    assert body.startswith("Hi Bob,")
    assert "548 Market St #12345" in body
    assert "https://gw.example.com/u/" in body
    unsubscribe = delivered["List-Unsubscribe"]
    assert unsubscribe.startswith("<https://gw.example.com/u/")
    assert "<mailto:unsubscribe@gw.example.com?subject=unsubscribe%20" in unsubscribe
    assert delivered["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert len(delivered.get_all("List-Unsubscribe")) == 1
    assert b"\r\nList-Unsubscribe: <https://gw.example.com/u/" in raw
    assert b"=?" not in raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw


async def test_standard_library_client_with_auth_login(gateway: Gateway) -> None:
    def send() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as smtp:
            smtp.ehlo()
            smtp.user, smtp.password = "demo", DEMO_SECRET
            code, _ = smtp.auth("LOGIN", smtp.auth_login)
            assert code == 235
            return smtp.send_message(first_touch())

    assert await asyncio.to_thread(send) == {}
    assert len(outbox_messages(gateway)) == 1


async def test_recipient_refused_before_auth_with_530(gateway: Gateway) -> None:
    smtp = await client(gateway, login=False)
    await smtp.mail("katie@example.com")
    response = await smtp.execute_command(b"RCPT", b"TO:<bob@client.example.net>")
    assert response.code == 530
    assert "5.7.0" in response.message
    await smtp.quit()
    assert outbox_messages(gateway) == []


async def test_bad_credentials_535(gateway: Gateway) -> None:
    smtp = await client(gateway, login=False)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
        await smtp.login("demo", "wrong-password-123")
    assert refused.value.code == 535
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await smtp.login("boss", DEMO_SECRET)
    await smtp.quit()


async def test_suppressed_recipient_refused_at_rcpt_others_delivered(gateway: Gateway) -> None:
    store = gateway.services.store
    await gateway.services.suppressions.add(
        ["Bob@Client.Example.NET"], source="test", reason="asked", actor="test"
    )
    smtp = await client(gateway)
    message = first_touch(to=["bob@client.example.net", "ann@client.example.net"])
    errors, _ = await smtp.send_message(message)
    await smtp.quit()
    assert set(errors) == {"bob@client.example.net"}
    code, text = errors["bob@client.example.net"]
    assert code == 550
    assert "5.7.1 SUPPRESSED" in text
    delivered = [parsed(raw) for raw in outbox_messages(gateway)]
    assert len(delivered) == 1
    assert delivered[0]["Delivered-To"] == "ann@client.example.net"
    blocks = await store.query_blocks(BlockQuery())
    assert [(b.recipient, [r.code for r in b.reasons]) for b in blocks] == [
        ("bob@client.example.net", ["SUPPRESSED"])
    ]
    assert blocks[0].rules_version == gateway.services.ruleset.version


async def test_every_recipient_gets_their_own_unsubscribe_link(gateway: Gateway) -> None:
    smtp = await client(gateway)
    await smtp.send_message(first_touch(to=["bob@client.example.net", "ann@client.example.net"]))
    await smtp.quit()
    tokens = gateway.services.unsubscribe.tokens
    recipients = set()
    for raw in outbox_messages(gateway):
        link = parsed(raw)["List-Unsubscribe"].split(">")[0].removeprefix("<")
        claims = tokens.verify(link.rsplit("/", 1)[1])
        assert claims is not None
        recipients.add(claims.recipient)
    assert recipients == {"bob@client.example.net", "ann@client.example.net"}


async def test_deceptive_subject_blocked_at_data_and_recorded(gateway: Gateway) -> None:
    smtp = await client(gateway)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await smtp.send_message(first_touch(subject="RE: our call yesterday"))
    await smtp.quit()
    assert refused.value.code == 550
    assert "DECEPTIVE_SUBJECT" in refused.value.message
    assert outbox_messages(gateway) == []
    [block] = await gateway.services.store.query_blocks(BlockQuery(reason="DECEPTIVE_SUBJECT"))
    assert block.subject == "RE: our call yesterday"
    assert block.message_id == "<first-touch-1@example.com>"
    assert block.reasons[0].rule == "email.subject.deceptive"


async def test_reply_with_in_reply_to_is_allowed(gateway: Gateway) -> None:
    message = first_touch(subject="Re: our call yesterday")
    message["In-Reply-To"] = "<their-message@client.example.net>"
    smtp = await client(gateway)
    errors, _ = await smtp.send_message(message)
    await smtp.quit()
    assert errors == {}
    assert len(outbox_messages(gateway)) == 1


async def test_foreign_envelope_sender_refused_per_recipient(gateway: Gateway) -> None:
    smtp = await client(gateway)
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await smtp.send_message(first_touch(), sender="katie@competitor.example.org")
    await smtp.quit()
    [error] = refused.value.recipients
    assert error.code == 550
    assert "SENDER_NOT_ALLOWED" in error.message


async def test_foreign_from_header_blocked_at_data(gateway: Gateway) -> None:
    smtp = await client(gateway)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await smtp.send_message(
            first_touch(sender="ceo@bank.example.org"), sender="katie@example.com"
        )
    await smtp.quit()
    assert refused.value.code == 550
    assert "SENDER_NOT_ALLOWED" in refused.value.message


async def test_unknown_charset_is_malformed_and_process_keeps_serving(gateway: Gateway) -> None:
    raw = (
        b"From: katie@example.com\r\nTo: bob@client.example.net\r\nSubject: hi\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\n"
        b"hello\r\n"
    )
    smtp = await client(gateway)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await smtp.sendmail("katie@example.com", ["bob@client.example.net"], raw)
    assert refused.value.code == 550
    assert "MESSAGE_MALFORMED" in refused.value.message
    assert "x-no-such-charset" in refused.value.message
    errors, _ = await smtp.send_message(first_touch())
    await smtp.quit()
    assert errors == {}
    assert len(outbox_messages(gateway)) == 1


async def test_oversized_message_552(gateway: Gateway) -> None:
    smtp = await client(gateway)
    big = first_touch(body="x" * 70 + "\n" * 1)
    big.set_content(("y" * 76 + "\n") * 4000)
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await smtp.send_message(big)
    assert refused.value.code == 552
    errors, _ = await smtp.send_message(first_touch())
    await smtp.quit()
    assert errors == {}


async def test_too_many_recipients_452(gateway_factory) -> None:
    gateway = await gateway_factory("")
    smtp = await client(gateway)
    await smtp.mail("katie@example.com")
    for index in range(gateway.config.smtp.max_recipients):
        response = await smtp.rcpt(f"r{index}@client.example.net")
        assert response.code == 250
    extra = await smtp.execute_command(b"RCPT", b"TO:<one-too-many@client.example.net>")
    assert extra.code == 452
    await smtp.quit()


async def test_no_open_relay_without_auth_even_for_allowed_domains(gateway: Gateway) -> None:
    smtp = await client(gateway, login=False)
    await smtp.mail("katie@example.com")
    for rcpt in (b"bob@client.example.net", b"katie@example.com", b"postmaster@example.com"):
        response = await smtp.execute_command(b"RCPT", b"TO:<" + rcpt + b">")
        assert response.code == 530
    await smtp.quit()


async def test_store_outage_is_a_temporary_failure_and_nothing_is_sent(
    config_factory, tmp_path
) -> None:
    from gateway.store import open_store

    config = config_factory()
    store = FlakyStore(open_store(config.store_url))
    gateway = Gateway(config, store=store)  # type: ignore[arg-type]
    await gateway.start()
    try:
        smtp = await client(gateway)  # signed in: AUTH itself needs the store (its counts)
        store.down = True
        await smtp.mail("katie@example.com")
        response = await smtp.execute_command(b"RCPT", b"TO:<bob@client.example.net>")
        assert response.code == 451
        assert "STORE_UNAVAILABLE" in response.message
        await smtp.rset()
        store.down = False
        await smtp.mail("katie@example.com")
        assert (await smtp.rcpt("bob@client.example.net")).code == 250
        store.down = True
        with pytest.raises(aiosmtplib.SMTPDataError) as failed:
            await smtp.data(first_touch().as_bytes())
        assert failed.value.code == 451
        store.down = False
        await smtp.quit()
        assert outbox_messages(gateway) == []
    finally:
        await gateway.stop()


SMTP_UPSTREAM = """
[upstream.email]
kind = "smtp"
host = "127.0.0.1"
port = {port}
starttls = false
timeout_s = 2
"""


async def test_smtp_upstream_receives_rewritten_message(gateway_factory) -> None:
    async with SmtpSink() as sink:
        gateway = await gateway_factory(SMTP_UPSTREAM.format(port=sink.port))
        smtp = await client(gateway)
        both = ["bob@client.example.net", "ann@client.example.net"]
        await smtp.send_message(first_touch(to=both))
        await smtp.quit()
        assert sorted(m.rcpt_tos for m in sink.accepted) == [
            ("ann@client.example.net",), ("bob@client.example.net",)
        ]
        for received in sink.accepted:
            assert received.mail_from == "katie@example.com"
            assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in received.data
            assert b"548 Market St" in received.data
        assert sink.connection_count == 1


async def test_upstream_temporary_failure_is_451_and_retry_sends_no_duplicate(
    gateway_factory,
) -> None:
    async with SmtpSink() as sink:
        gateway = await gateway_factory(SMTP_UPSTREAM.format(port=sink.port))
        message = first_touch(to=["bob@client.example.net", "ann@client.example.net"])
        smtp = await client(gateway)
        sink.fail_next("rcpt", 451, "4.3.0 try later")
        sink.fail_next("rcpt", 250, "ok")
        with pytest.raises(aiosmtplib.SMTPDataError) as failed:
            await smtp.send_message(message)
        assert failed.value.code == 451
        assert "try later" in failed.value.message
        assert len(sink.accepted) == 1
        first_recipient = sink.accepted[0].rcpt_tos
        errors, _ = await smtp.send_message(message)
        await smtp.quit()
        assert errors == {}
        delivered = [m.rcpt_tos for m in sink.accepted]
        assert sorted(delivered) == [("ann@client.example.net",), ("bob@client.example.net",)]
        assert delivered.count(first_recipient) == 1


async def test_upstream_permanent_refusal_passes_upstream_text(gateway_factory) -> None:
    async with SmtpSink() as sink:
        gateway = await gateway_factory(SMTP_UPSTREAM.format(port=sink.port))
        sink.fail_next("rcpt", 550, "5.1.1 mailbox unavailable")
        smtp = await client(gateway)
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await smtp.send_message(first_touch())
        await smtp.quit()
        assert refused.value.code == 550
        assert "mailbox unavailable" in refused.value.message


async def test_upstream_down_is_451(gateway_factory, unused_tcp_port) -> None:
    gateway = await gateway_factory(SMTP_UPSTREAM.format(port=unused_tcp_port))
    smtp = await client(gateway)
    with pytest.raises(aiosmtplib.SMTPDataError) as failed:
        await smtp.send_message(first_touch())
    await smtp.quit()
    assert failed.value.code == 451
    assert "UPSTREAM_UNAVAILABLE" in failed.value.message


async def test_metrics_count_outcomes_and_reasons(gateway: Gateway) -> None:
    await gateway.services.store.add_suppressions(
        [Suppression("bob@client.example.net", "test", "t", gateway.clock.now())]
    )
    smtp = await client(gateway)
    await smtp.send_message(first_touch(to=["bob@client.example.net", "ann@client.example.net"]))
    await smtp.quit()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{gateway.http_port}/metrics") as response:
            text = await response.text()
    assert (
        'gateway_messages_total{channel="email",outcome="blocked",reason="SUPPRESSED"} 1.0'
        in text
    )
    assert 'gateway_messages_total{channel="email",outcome="allowed",reason=""} 1.0' in text
    assert "gateway_decision_duration_seconds_bucket" in text
    assert (
        'gateway_upstream_duration_seconds_count{result="accepted",upstream="outbox"} 1.0'
        in text
    )


async def test_health_and_readiness(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{gateway.http_port}"
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with http.get(f"{base}/readyz") as response:
            body = await response.json()
            assert response.status == 200
            assert body["checks"]["store"] == "ok"
            assert body["checks"]["rules"] == gateway.services.ruleset.version


async def test_oversized_reply_names_the_problem(gateway: Gateway) -> None:
    smtp = await client(gateway)
    raw = first_touch().as_bytes() + b"z" * 76 * 3000
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await smtp.sendmail("katie@example.com", ["bob@client.example.net"], raw)
    await smtp.quit()
    assert refused.value.code == 552
    assert "MESSAGE_TOO_LARGE" in refused.value.message


async def test_header_line_over_998_octets_is_refused_and_session_continues(
    gateway: Gateway,
) -> None:
    raw = (
        b"From: katie@example.com\r\nTo: bob@client.example.net\r\n"
        b"Subject: " + b"long " * 400 + b"\r\n\r\nbody\r\n"
    )
    smtp = await client(gateway)
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await smtp.sendmail("katie@example.com", ["bob@client.example.net"], raw)
    assert refused.value.code == 500
    assert "MESSAGE_MALFORMED" in refused.value.message
    errors, _ = await smtp.send_message(first_touch())
    await smtp.quit()
    assert errors == {}
    assert len(outbox_messages(gateway)) == 1


async def test_raw_8bit_header_that_is_not_utf8_is_malformed(gateway: Gateway) -> None:
    raw = (
        b"From: katie@example.com\r\nTo: bob@client.example.net\r\n"
        b"Subject: Gr\xfc\xdfe aus K\xf6ln\r\n\r\nbody\r\n"
    )
    smtp = await client(gateway)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await smtp.sendmail("katie@example.com", ["bob@client.example.net"], raw)
    await smtp.quit()
    assert refused.value.code == 550
    assert "MESSAGE_MALFORMED" in refused.value.message
    assert outbox_messages(gateway) == []


async def test_raw_utf8_headers_without_smtputf8_are_relayed_re_encoded(
    gateway: Gateway,
) -> None:
    """What every MTA relays (RFC 6532 headers from a client that did not say SMTPUTF8)
    is repaired, not refused; the upstream gets ASCII headers with the same meaning."""
    raw = (
        "From: Katie Müller <katie@example.com>\r\nTo: bob@client.example.net\r\n"
        "Subject: Grüße aus Köln\r\n\r\nbody\r\n"
    ).encode()
    smtp = await client(gateway)
    await smtp.sendmail("katie@example.com", ["bob@client.example.net"], raw)
    await smtp.quit()
    [sent] = outbox_messages(gateway)
    head = sent.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    relayed = message_from_bytes(sent, policy=policy.default)
    assert relayed["Subject"] == "Grüße aus Köln"
    assert relayed["From"].addresses[0].display_name == "Katie Müller"


async def test_bare_lf_message_is_accepted_and_rewritten(gateway: Gateway) -> None:
    raw = (
        b"From: katie@example.com\nTo: bob@client.example.net\nSubject: hello\n"
        b"Message-ID: <lf@example.com>\n\nHi Bob,\nline two\n"
    )
    smtp = await client(gateway)
    errors, _ = await smtp.sendmail("katie@example.com", ["bob@client.example.net"], raw)
    await smtp.quit()
    assert errors == {}
    delivered = parsed(outbox_messages(gateway)[0])
    body = delivered.get_content()
    assert body.startswith("Hi Bob,\nline two\n")
    assert "548 Market St" in body


async def test_bcc_header_is_not_forwarded(gateway: Gateway) -> None:
    message = first_touch()
    message["Bcc"] = "secret-watcher@client.example.net"
    smtp = await client(gateway)
    await smtp.sendmail(
        "katie@example.com", ["bob@client.example.net", "secret-watcher@client.example.net"],
        message.as_bytes(),
    )
    await smtp.quit()
    copies = outbox_messages(gateway)
    assert len(copies) == 2
    assert all(b"\r\nBcc:" not in c for c in copies)
    assert all(parsed(c)["Bcc"] is None for c in copies)


async def test_starttls_with_tls_1_2_or_later_then_auth(tmp_path) -> None:
    tls = make_self_signed_cert(tmp_path)
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace(
        "max_message_bytes = 200000",
        f'max_message_bytes = 200000\ntls_cert = "{tls.cert}"\ntls_key = "{tls.key}"',
    ))
    gateway = Gateway(load_config(path))
    await gateway.start()
    try:
        smtp = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=gateway.smtp_port, start_tls=False,
            tls_context=tls.client_context(),
        )
        await smtp.connect()
        await smtp.ehlo()
        assert smtp.supports_extension("starttls")
        await smtp.starttls()
        version = smtp.transport.get_extra_info("ssl_object").version()
        assert version in ("TLSv1.2", "TLSv1.3")
        await smtp.login("demo", DEMO_SECRET)
        errors, _ = await smtp.send_message(first_touch())
        await smtp.quit()
        assert errors == {}
        assert len(outbox_messages(gateway)) == 1
    finally:
        await gateway.stop()


async def test_unexpected_error_is_451_without_details_and_session_recovers(
    gateway: Gateway, monkeypatch
) -> None:
    egress = gateway.services.pipeline.egress["email"]
    original = egress.render

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals\r\n250 fake")

    monkeypatch.setattr(egress, "render", broken)
    smtp = await client(gateway)
    with pytest.raises(aiosmtplib.SMTPDataError) as failed:
        await smtp.send_message(first_touch())
    assert failed.value.code == 451
    assert "INTERNAL_ERROR" in failed.value.message
    assert "secret" not in failed.value.message
    monkeypatch.setattr(egress, "render", original)
    errors, _ = await smtp.send_message(first_touch())
    await smtp.quit()
    assert errors == {}
    assert len(outbox_messages(gateway)) == 1


async def test_partial_upstream_refusal_is_a_5xx_naming_both_sides(gateway_factory) -> None:
    async with SmtpSink() as sink:
        gateway = await gateway_factory(SMTP_UPSTREAM.format(port=sink.port))
        sink.fail_next("rcpt", 250, "ok")
        sink.fail_next("rcpt", 550, "5.1.1 no such user")
        smtp = await client(gateway)
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await smtp.send_message(
                first_touch(to=["bob@client.example.net", "ann@client.example.net"])
            )
        await smtp.quit()
        assert refused.value.code == 550
        assert "UPSTREAM_REJECTED" in refused.value.message
        assert "no such user" in refused.value.message
        assert len(sink.accepted) == 1
        assert sink.accepted[0].rcpt_tos[0] in refused.value.message


async def test_duplicate_rcpt_in_other_case_gets_one_copy(gateway: Gateway) -> None:
    smtp = await client(gateway)
    errors, _ = await smtp.sendmail(
        "katie@example.com", ["bob@client.example.net", "Bob@Client.Example.NET"],
        first_touch().as_bytes(),
    )
    await smtp.quit()
    assert errors == {}
    assert len(outbox_messages(gateway)) == 1
