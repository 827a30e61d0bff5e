"""Replayed and reordered SMS keywords through the running gateway (issue 18, item 2).

Twilio's inbound-message webhook carries no timestamp, only `MessageSid`: every processed
sid is kept in the store (so every replica knows it), a replayed sid is acknowledged and
changes nothing, and a START lifts only a STOP the gateway received more than
`OPT_IN_REORDER_WINDOW` before it (Twilio's retries of one webhook end within 15 s).
Requests are signed as Twilio signs them (the SDK's RequestValidator).
"""

from __future__ import annotations

import asyncio
import itertools

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from gateway.server import Gateway
from gateway.store.base import StoreUnavailable
from gateway.store.sqlite import SqliteStore
from gateway.web.webhooks.twilio import KEYWORD_SOURCE, OPT_IN_REORDER_WINDOW
from tests.conftest import record_written_consents
from tests.fakes.clock import SteppingClock
from tests.ingress.test_twilio import (
    AUTH_TOKEN,
    FL,
    FROM,
    NOON_NY,
    NY,
    TWILIO_CONFIG,
    refused,
    sdk,
    send_sms,
)

WINDOW_S = OPT_IN_REORDER_WINDOW.total_seconds()
_sids = itertools.count(1)


def new_sid() -> str:
    return f"SM{next(_sids):032x}"


async def start(gateway_factory, **kwargs) -> tuple[Gateway, SteppingClock]:
    clock = SteppingClock(NOON_NY)
    gateway = await gateway_factory(TWILIO_CONFIG, clock=clock, **kwargs)
    await record_written_consents(gateway)
    return gateway, clock


def inbound(body: str, sender: str = NY, sid: str | None = None) -> dict[str, str]:
    """Twilio's inbound-message parameters (the ones the gateway reads, and a few others)."""
    sid = sid or new_sid()
    return {
        "MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid, "AccountSid": "AC" + "0" * 32,
        "From": sender, "To": FROM, "Body": body, "NumMedia": "0", "NumSegments": "1",
        "SmsStatus": "received", "ApiVersion": "2010-04-01",
    }


async def post(gateway: Gateway, params: dict[str, str]) -> tuple[int, str]:
    url = f"http://127.0.0.1:{gateway.http_port}/webhooks/twilio"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=params, headers={"X-Twilio-Signature": signature}) as r:
            return r.status, await r.text()


async def suppressed(gateway: Gateway, number: str = NY) -> bool:
    return bool(await gateway.services.store.suppressed([number]))


# --- replays ------------------------------------------------------------------------------


async def test_a_replayed_start_does_not_lift_a_later_stop(gateway_factory) -> None:
    """The issue's case: START (sid S) lifted a STOP; a later STOP holds; S signed again
    must not lift it. Today the replay lifts it."""
    gateway, clock = await start(gateway_factory)
    await post(gateway, inbound("STOP"))
    clock.advance(WINDOW_S + 1)
    resubscribe = inbound("START")
    status, reply = await post(gateway, resubscribe)
    assert status == 200 and "resubscribed" in reply
    assert not await suppressed(gateway)
    clock.advance(60)
    await post(gateway, inbound("STOP"))
    clock.advance(3600)

    status, reply = await post(gateway, resubscribe)

    assert status == 200, "acknowledged, so Twilio stops retrying"
    assert "<Message>" not in reply
    assert await suppressed(gateway)
    assert (await refused(send_sms(sdk(gateway)))).code == 21610


async def test_a_replayed_stop_changes_nothing(gateway_factory) -> None:
    """A replay is not a new opt-out either: after the START that followed it, the same
    STOP again leaves the number subscribed and sends no second confirmation."""
    gateway, clock = await start(gateway_factory)
    stop = inbound("STOP")
    status, reply = await post(gateway, stop)
    assert status == 200 and reply.count("<Message>") == 1
    clock.advance(WINDOW_S + 1)
    await post(gateway, inbound("START"))
    assert not await suppressed(gateway)

    status, reply = await post(gateway, stop)

    assert (status, "<Message>" in reply) == (200, False)
    assert not await suppressed(gateway)


async def test_every_processed_sid_is_kept_in_the_store(gateway_factory) -> None:
    """Keywords, HELP and ordinary replies alike: the store, not the process, knows them."""
    gateway, _ = await start(gateway_factory)
    sids = []
    for body in ("STOP", "HELP", "sounds good"):
        params = inbound(body, sender=FL)
        sids.append(params["MessageSid"])
        assert (await post(gateway, params))[0] == 200
    store = gateway.services.store
    assert [await store.inbound_seen(sid) for sid in sids] == [True, True, True]
    assert not await store.inbound_seen(new_sid())


async def test_a_replay_reaching_another_gateway_on_the_same_store_changes_nothing(
    gateway_factory,
) -> None:
    """Two gateways on one database stand for two replicas: the second knows the sid the
    first processed (the README's PostgreSQL replicas run the same check)."""
    first, clock = await start(gateway_factory)
    stop = inbound("STOP")
    await post(first, stop)
    clock.advance(WINDOW_S + 1)
    await post(first, inbound("START"))
    assert not await suppressed(first)

    second = await gateway_factory(TWILIO_CONFIG, clock=clock)  # the same configuration
    assert second.config.store_url == first.config.store_url
    status, reply = await post(second, stop)

    assert (status, "<Message>" in reply) == (200, False)
    assert not await suppressed(second)


# --- order --------------------------------------------------------------------------------


@pytest.mark.parametrize("later_s", [0, 5, 14.9, WINDOW_S - 0.5])
async def test_a_start_received_soon_after_a_stop_does_not_lift_it(
    gateway_factory, later_s
) -> None:
    """Reordered delivery: a START sent before a STOP reaches the gateway after it when
    Twilio retried it (its retries end within 15 s of the first attempt). Without a
    provider timestamp the gateway cannot tell it from a START sent just after the STOP,
    so within the window the STOP stands. Today the START lifts it."""
    gateway, clock = await start(gateway_factory)
    await post(gateway, inbound("STOP"))
    clock.advance(later_s)

    status, reply = await post(gateway, inbound("START"))

    assert (status, "<Message>" in reply) == (200, False)
    assert await suppressed(gateway)
    [row] = [s for s in await gateway.services.store.list_suppressions() if s.address == NY]
    assert row.source == KEYWORD_SOURCE


async def test_a_start_received_after_the_window_lifts_the_stop(gateway_factory) -> None:
    gateway, clock = await start(gateway_factory)
    await post(gateway, inbound("STOP"))
    clock.advance(WINDOW_S + 1)
    status, reply = await post(gateway, inbound("START"))
    assert status == 200 and "resubscribed" in reply
    assert not await suppressed(gateway)
    assert (await send_sms(sdk(gateway))).sid.startswith("SM")


async def test_a_repeated_stop_restarts_the_window(gateway_factory) -> None:
    gateway, clock = await start(gateway_factory)
    await post(gateway, inbound("STOP"))
    clock.advance(WINDOW_S + 1)
    await post(gateway, inbound("STOP"))
    clock.advance(5)
    await post(gateway, inbound("START"))
    assert await suppressed(gateway)


class HeldLift(SqliteStore):
    """A store whose keyword lifts wait until the test lets them through."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def remove_suppressions_from_source(self, *args, **kwargs) -> int:
        self.reached.set()
        await self.release.wait()
        return await super().remove_suppressions_from_source(*args, **kwargs)


async def test_a_start_received_before_a_stop_but_written_after_it_leaves_the_stop(
    gateway_factory, tmp_path
) -> None:
    """Two deliveries in flight at once (two replicas, a slow store): the START arrived
    first, the STOP arrived later and was written first. The START must not remove the
    later STOP's row. Today it does."""
    store = HeldLift(tmp_path / "held.db")
    gateway, clock = await start(gateway_factory, store=store)
    await post(gateway, inbound("STOP"))
    clock.advance(WINDOW_S + 1)
    starting = asyncio.create_task(post(gateway, inbound("START")))
    await asyncio.wait_for(store.reached.wait(), 10)
    clock.advance(2)
    status, reply = await post(gateway, inbound("stop texting me"))
    assert status == 200 and reply.count("<Message>") == 0  # still suppressed: no new one

    store.release.set()
    status, _ = await starting

    assert status == 200
    assert await suppressed(gateway)


async def test_a_stop_always_applies_even_right_after_a_start(gateway_factory) -> None:
    """An opt-out is never held back by order: when in doubt, the opt-out wins."""
    gateway, clock = await start(gateway_factory)
    await post(gateway, inbound("STOP"))
    clock.advance(WINDOW_S + 1)
    await post(gateway, inbound("START"))
    clock.advance(1)
    await post(gateway, inbound("STOP"))
    assert await suppressed(gateway)


async def test_a_keyword_without_a_message_sid(gateway_factory) -> None:
    """Twilio always sends MessageSid. Without one a STOP still applies (an opt-out is never
    refused), but a START cannot be checked for replay and lifts nothing."""
    gateway, clock = await start(gateway_factory)
    stop = inbound("STOP")
    del stop["MessageSid"], stop["SmsSid"], stop["SmsMessageSid"]
    assert (await post(gateway, stop))[0] == 200
    assert await suppressed(gateway)
    clock.advance(WINDOW_S + 1)
    start_ = {k: v for k, v in inbound("START").items() if not k.endswith("Sid")}
    status, reply = await post(gateway, start_)
    assert (status, "<Message>" in reply) == (200, False)
    assert await suppressed(gateway)


# --- the store unavailable ----------------------------------------------------------------


class Outage(SqliteStore):
    """A store whose named methods fail as an outage would, until the test lifts it."""

    failing: frozenset[str] = frozenset()

    def __getattribute__(self, name: str):
        if name != "failing" and name in object.__getattribute__(self, "failing"):
            async def down(*args, **kwargs):
                raise StoreUnavailable("injected outage")
            return down
        return object.__getattribute__(self, name)


@pytest.mark.parametrize(
    ("failing", "body"),
    [
        ("inbound_seen", "STOP"),
        ("inbound_seen", "START"),
        ("add_suppressions", "STOP"),
        ("remove_suppressions_from_source", "START"),
        ("record_inbound", "STOP"),
        ("record_inbound", "START"),
    ],
)
async def test_a_store_outage_answers_503_and_the_retry_is_processed(
    gateway_factory, tmp_path, failing, body
) -> None:
    """Fail closed: while the seen-sid check or a write cannot be done, Twilio gets a 5xx
    (it retries) and the sid is not recorded, so the retry is processed, not taken for a
    replay. A change made before the sid's record failed is one the retry makes anyway."""
    store = Outage(tmp_path / "outage.db")
    gateway, clock = await start(gateway_factory, store=store)
    if body == "START":
        await post(gateway, inbound("STOP"))
        clock.advance(WINDOW_S + 1)
    params = inbound(body)
    before = await suppressed(gateway)

    store.failing = frozenset({failing})
    status, _ = await post(gateway, params)
    assert status == 503
    if failing in ("inbound_seen", "add_suppressions", "remove_suppressions_from_source"):
        assert await suppressed(gateway) == before, "nothing changed"
    store.failing = frozenset()
    assert not await store.inbound_seen(params["MessageSid"])

    status, _ = await post(gateway, params)
    assert status == 200
    assert await suppressed(gateway) == (body == "STOP")
    assert await store.inbound_seen(params["MessageSid"])
