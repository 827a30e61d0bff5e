"""Every decision is recorded before the agent is answered (issue 20 item 1): allowed and
blocked, over SMTP (aiosmtplib), Postmark's API (postmarker, batch too) and Twilio's
(the official SDK: texts and calls), through the one pipeline, with its evidence; and a
decision log that cannot be written is a temporary failure, never a silent send.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import aiosmtplib
import pytest
from postmarker.exceptions import ClientError
from twilio.base.exceptions import TwilioRestException

from gateway.config.settings import Config
from gateway.model import DecisionOutcome, DecisionRecord, Suppression
from gateway.server import Gateway
from gateway.store import open_store
from gateway.store.base import DecisionQuery, StoreUnavailable
from tests.conftest import DEMO_SECRET, outbox_messages, record_written_consents
from tests.fakes.clock import SteppingClock
from tests.fakes.store import FlakyStore
from tests.ingress.smtp.test_submission import first_touch
from tests.ingress.test_postmark import client as postmark_client
from tests.ingress.test_postmark import send as postmark_send
from tests.ingress.test_twilio import (
    FROM,
    LATE_NY,
    NOON_NY,
    NY,
    TWILIO_CONFIG,
    outbox,
    sdk,
    send_sms,
)

BOB = "bob@client.example.net"
ANN = "ann@client.example.net"
CARL = "carl@client.example.net"
QUEUED = re.compile(r"2\.0\.0 OK queued as ([0-9a-f]+)")


async def decisions(gateway: Gateway, **filters: object) -> list[DecisionRecord]:
    """The log newest first, each decision with its evidence."""
    store = gateway.services.store
    found = await store.query_decisions(DecisionQuery(**filters))  # type: ignore[arg-type]
    full = [await store.get_decision(d.id) for d in found if d.id is not None]
    return [d for d in full if d is not None]


async def suppress(gateway: Gateway, address: str) -> None:
    await gateway.services.store.add_suppressions(
        [Suppression(address, "test", "asked", gateway.clock.now())]
    )


def rule_ids(record: DecisionRecord) -> set[str]:
    return {str(rule["id"]) for rule in record.evidence["rules"]}  # type: ignore[attr-defined]


# --- SMTP ---------------------------------------------------------------------------------


async def test_smtp_records_the_allowed_copy_under_the_queue_id_and_the_refused_rcpt(
    gateway: Gateway,
) -> None:
    await suppress(gateway, ANN)
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=gateway.smtp_port, start_tls=False)
    await smtp.connect()
    await smtp.login("demo", DEMO_SECRET)
    errors, reply = await smtp.sendmail(
        "katie@example.com", [BOB, ANN], first_touch(to=[BOB, ANN]).as_bytes()
    )
    await smtp.quit()

    assert errors[ANN][0] == 550
    match = QUEUED.fullmatch(reply)
    assert match is not None, reply
    queue_id = match.group(1)
    allowed, blocked = await decisions(gateway)  # the RCPT was decided first
    assert (allowed.recipient, allowed.outcome, allowed.upstream_id) == (
        BOB, DecisionOutcome.ALLOWED, queue_id
    )
    assert (allowed.channel.value, allowed.account, allowed.sender) == (
        "email", "demo", "katie@example.com"
    )
    assert allowed.subject == "Fleet maintenance costs" and allowed.reasons == ()
    evidence = allowed.evidence
    assert evidence["ingress"] == "smtp" and evidence["suppression"] == []
    assert evidence["consent"] is None and evidence["zones"] == []
    assert {"email.suppression", "email.footer.unsubscribe"} <= rule_ids(allowed)
    assert all(rule["citation"] for rule in evidence["rules"])  # type: ignore[attr-defined]
    kinds = [(r["kind"], r.get("name")) for r in evidence["rewrites"]]  # type: ignore[attr-defined]
    assert kinds == [
        ("footer", None), ("header", "List-Unsubscribe"), ("header", "List-Unsubscribe-Post")
    ]
    assert "548 Market St #12345" in evidence["rewrites"][0]["text"]  # type: ignore[index]
    upstream = evidence["upstream"]
    assert upstream["upstream"] == "outbox" and upstream["accepted"] is True  # type: ignore[index]
    assert "Hi Bob" not in repr(evidence), "never a body"

    assert (blocked.recipient, blocked.outcome, blocked.upstream_id) == (
        ANN, DecisionOutcome.BLOCKED, None
    )
    assert [r.code for r in blocked.reasons] == ["SUPPRESSED"]
    assert blocked.evidence["suppression"] == [ANN]
    assert blocked.evidence["rewrites"] == [] and blocked.evidence["upstream"] is None


async def test_an_smtp_retry_of_a_delivered_message_records_nothing_twice(
    gateway: Gateway,
) -> None:
    async def submit() -> str:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=gateway.smtp_port, start_tls=False)
        await smtp.connect()
        await smtp.login("demo", DEMO_SECRET)
        _, reply = await smtp.sendmail("katie@example.com", [BOB], first_touch().as_bytes())
        await smtp.quit()
        return reply

    first = await submit()
    again = await submit()

    assert QUEUED.fullmatch(first)
    assert again.endswith("(1 delivered by an earlier attempt, not sent again)")
    [only] = await decisions(gateway)
    assert only.upstream_id == QUEUED.fullmatch(first).group(1)  # type: ignore[union-attr]
    assert len(outbox_messages(gateway)) == 1


# --- Postmark-shaped HTTP -----------------------------------------------------------------


async def test_postmark_records_the_message_id_it_answers_and_the_block(gateway: Gateway) -> None:
    row, key = await gateway.services.agent_keys.create("demo", None)
    answer = await postmark_send(gateway, token=key, Subject="Fleet =HYPERLINK(1)")
    await suppress(gateway, ANN)
    with pytest.raises(ClientError) as refused:
        await postmark_send(gateway, To=ANN)
    assert refused.value.error_code == 406

    blocked, allowed = await decisions(gateway)
    assert allowed.upstream_id == answer["MessageID"]
    assert (allowed.key_id, allowed.subject) == (row.key_id, "Fleet =HYPERLINK(1)")
    assert allowed.evidence["ingress"] == "postmark"
    assert (blocked.recipient, blocked.key_id, blocked.upstream_id) == (ANN, None, None)
    assert blocked.evidence["suppression"] == [ANN]


async def test_a_postmark_batch_records_each_message(gateway: Gateway) -> None:
    await suppress(gateway, ANN)
    message = {"From": "katie@example.com", "Subject": "Fleet", "TextBody": "Hi"}
    answers = await asyncio.to_thread(
        postmark_client(gateway).emails.send_batch,
        {**message, "To": BOB}, {**message, "To": ANN},
        {"To": CARL, "Subject": "no From", "TextBody": "Hi"},
    )

    assert [a["ErrorCode"] for a in answers] == [0, 406, 300]
    found = {d.recipient: d for d in await decisions(gateway)}
    assert set(found) == {BOB, ANN, CARL}
    assert found[BOB].upstream_id == answers[0]["MessageID"]
    assert found[BOB].outcome is DecisionOutcome.ALLOWED
    assert [r.code for r in found[ANN].reasons] == ["SUPPRESSED"]
    assert [r.code for r in found[CARL].reasons] == ["MESSAGE_MALFORMED"]
    assert found[CARL].evidence["rules"] == [
        {"id": "postmark.request", "citation": None, "confidence": None}
    ]


# --- Twilio-shaped HTTP -------------------------------------------------------------------


async def twilio_gateway(gateway_factory, now) -> Gateway:  # type: ignore[no-untyped-def]
    gateway = await gateway_factory(TWILIO_CONFIG, clock=SteppingClock(now))
    await record_written_consents(gateway)
    return gateway


async def test_an_allowed_text_keeps_zones_local_times_rules_and_consent(
    gateway_factory,  # type: ignore[no-untyped-def]
) -> None:
    gateway = await twilio_gateway(gateway_factory, NOON_NY)
    message = await send_sms(sdk(gateway))

    [text] = await decisions(gateway)
    assert (text.channel.value, text.outcome, text.upstream_id) == (
        "sms", DecisionOutcome.ALLOWED, message.sid
    )
    assert (text.recipient, text.sender, text.purpose.value) == (NY, FROM, "marketing")
    evidence = text.evidence
    [zone] = evidence["zones"]  # type: ignore[misc]
    assert zone["zone"] == "America/New_York"
    assert zone["local_time"].startswith("2026-06-02T12:0")
    assert evidence["regions"] == ["US-NY"]
    rules = {r["id"]: r for r in evidence["rules"]}  # type: ignore[attr-defined]
    assert rules["tcpa.quiet_hours"]["citation"] == "47 CFR 64.1200(c)(1)"
    assert rules["state.NY.window"]["citation"]
    consent = evidence["consent"]
    assert consent["kind"] == "express-written"  # type: ignore[index]
    assert consent["subject"] == NY and consent["source"] == "test fixture"  # type: ignore[index]
    assert consent["rule"] == "tcpa.consent.marketing_text"  # type: ignore[index]
    [notice] = evidence["rewrites"]  # type: ignore[misc]
    assert notice["kind"] == "sms_notice" and "STOP" in notice["text"]
    assert evidence["upstream"]["id"] == message.sid  # type: ignore[index]
    assert "quick question" not in repr(evidence), "never a body"


async def test_a_blocked_call_keeps_its_reasons_zones_and_local_time(
    gateway_factory,  # type: ignore[no-untyped-def]
) -> None:
    gateway = await twilio_gateway(gateway_factory, LATE_NY)
    with pytest.raises(TwilioRestException) as refused:
        await asyncio.to_thread(
            sdk(gateway).calls.create, to=NY, from_=FROM, url="https://agent.example.com/voice"
        )
    assert refused.value.code == 30610

    [call] = await decisions(gateway)
    assert (call.channel.value, call.outcome, call.upstream_id) == (
        "call", DecisionOutcome.BLOCKED, None
    )
    assert "QUIET_HOURS" in {r.code for r in call.reasons}
    [zone] = call.evidence["zones"]  # type: ignore[misc]
    assert zone["local_time"].startswith("2026-06-02T22:3")
    assert "tcpa.quiet_hours" in rule_ids(call)
    assert call.evidence["rewrites"] == [] and call.evidence["upstream"] is None
    assert outbox(gateway) == []


# --- the decision log unavailable ---------------------------------------------------------


class DecisionLogDown(FlakyStore):
    """The real store; only the decision log refuses writes while `down`."""

    def __getattr__(self, name: str) -> object:
        attribute = getattr(self.inner, name)
        if name != "record_decisions":
            return attribute

        async def call(*args: object, **kwargs: object) -> object:
            if self.down:
                raise StoreUnavailable("injected outage")
            return await attribute(*args, **kwargs)

        return call


@pytest.fixture
async def log_down(config_factory) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    config: Config = config_factory(TWILIO_CONFIG)
    store = DecisionLogDown(open_store(config.store_url))
    gateway = Gateway(config, store=store, clock=SteppingClock(NOON_NY))  # type: ignore[arg-type]
    await gateway.start()
    await record_written_consents(gateway)
    store.down = True
    try:
        yield gateway
    finally:
        await gateway.stop()


async def test_a_decision_log_that_cannot_be_written_is_a_temporary_failure(
    log_down: Gateway,
) -> None:
    """A block is refused as unrecordable before anything is sent; a copy the upstream took
    is answered 503 saying it may be out (the agent must check before resending)."""
    await suppress(log_down, ANN)
    with pytest.raises(ClientError) as blocked:
        await postmark_send(log_down, To=ANN)
    assert "STORE_UNAVAILABLE" in str(blocked.value)
    with pytest.raises(ClientError) as sent:
        await postmark_send(log_down)
    assert "STORE_UNAVAILABLE" in str(sent.value) and "may have been sent" in str(sent.value)
    with pytest.raises(TwilioRestException) as text:
        await send_sms(sdk(log_down))
    assert text.value.status == 503


async def test_a_store_that_is_down_sends_nothing_on_any_channel(config_factory) -> None:  # type: ignore[no-untyped-def]
    config: Config = config_factory(TWILIO_CONFIG)
    store = FlakyStore(open_store(config.store_url))
    gateway = Gateway(config, store=store, clock=SteppingClock(NOON_NY))  # type: ignore[arg-type]
    await gateway.start()
    try:
        store.down = True
        with pytest.raises(ClientError):
            await postmark_send(gateway)
        with pytest.raises(TwilioRestException) as text:
            await send_sms(sdk(gateway))
        assert text.value.status == 503
        assert outbox_messages(gateway) == [] and outbox(gateway) == []
        store.down = False
        assert await decisions(gateway) == []
    finally:
        await gateway.stop()



class DurabilityWitness(FlakyStore):
    """The real store, noting how durably each batch of decisions was asked for."""

    def __init__(self, inner: object) -> None:
        super().__init__(inner)
        self.asked: list[tuple[list[str], bool]] = []

    def __getattr__(self, name: str) -> object:
        attribute = getattr(self.inner, name)
        if name != "record_decisions":
            return attribute

        async def call(records, *, durable: bool = True):  # type: ignore[no-untyped-def]
            self.asked.append(([r.outcome.value for r in records], durable))
            return await attribute(records, durable=durable)

        return call


async def test_a_block_is_recorded_durably_and_a_sent_copy_without_waiting_for_the_disk(
    config_factory,  # type: ignore[no-untyped-def]
) -> None:
    """A blocked recipient's decision is durable, as its block is; the decision of a copy
    the provider already has need not wait for an fsync (the send path's cost)."""
    config: Config = config_factory()
    store = DurabilityWitness(open_store(config.store_url))
    gateway = Gateway(config, store=store)  # type: ignore[arg-type]
    await gateway.start()
    try:
        await postmark_send(gateway)
        await suppress(gateway, ANN)
        with pytest.raises(ClientError):
            await postmark_send(gateway, To=ANN)
    finally:
        await gateway.stop()
    assert store.asked == [(["allowed"], False), (["blocked"], True)]
