"""The Twilio-shaped API driven by the official `twilio` SDK, and a fake Twilio upstream."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from gateway.model import Suppression
from gateway.runtime.clock import Clock
from gateway.server import Gateway
from gateway.store.base import BlockQuery
from gateway.store.sqlite import SqliteStore
from gateway.web.webhooks.twilio import OPT_IN_REORDER_WINDOW
from tests.conftest import DEMO_SECRET, record_written_consents
from tests.fakes.clock import SteppingClock

SID = "AC00000000000000000000000000000000"
AUTH_TOKEN = "gateway-twilio-auth-token-0123"
NY = "+12125550123"
FL = "+13055550123"
FROM = "+14155550100"
# A Tuesday, 16:00 UTC: noon in New York, 09:00 in California.
NOON_NY = datetime(2026, 6, 2, 16, 0, tzinfo=UTC)
# 22:30 in New York: past every calling window.
LATE_NY = datetime(2026, 6, 3, 2, 30, tzinfo=UTC)
TRANSACTIONAL_SECRET = "transactional-secret-0123"
DEMO_AUTH = {"Authorization": "Basic " + base64.b64encode(f"demo:{DEMO_SECRET}".encode()).decode()}

TWILIO_CONFIG = f"""
[upstream.twilio]
kind = "outbox"
account_sid = "{SID}"
auth_token = "{AUTH_TOKEN}"

[twilio]
twiml_hosts = ["agent.example.com", "a.example.com"]

[[accounts]]
name = "notifier"
secret = "{TRANSACTIONAL_SECRET}"
role = "rep"
purpose = "transactional"
sender_domains = []
"""


def sdk(gateway: Gateway, user: str = "demo", password: str = DEMO_SECRET,
        account_sid: str = SID) -> Client:
    client = Client(user, password, account_sid=account_sid)
    client.api.base_url = f"http://127.0.0.1:{gateway.http_port}"
    return client


async def start(gateway_factory, now: datetime = NOON_NY, extra: str = "") -> Gateway:
    gateway = await gateway_factory(TWILIO_CONFIG + extra, clock=Clock(now))
    await record_written_consents(gateway)
    return gateway


def outbox(gateway: Gateway) -> list[dict]:
    directory = gateway.config.data_dir / "outbox" / "twilio"
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


async def send_sms(client: Client, to: str = NY, body: str = "Hi, a quick question?",
                   **kwargs):
    return await asyncio.to_thread(
        client.messages.create, to=to, from_=FROM, body=body, **kwargs
    )


async def refused(call) -> TwilioRestException:
    with pytest.raises(TwilioRestException) as error:
        await call
    return error.value


async def test_text_is_forwarded_with_opt_out_notice_once(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    client = sdk(gateway)
    first = await send_sms(client, media_url=["https://example.com/a.png",
                                              "https://example.com/b.png"])
    assert first.sid.startswith("SM") and len(first.sid) == 34
    assert first.status == "queued"
    assert first.to == NY
    second = await send_sms(client, body="Following up")
    by_length = sorted(outbox(gateway), key=lambda f: len(f["Body"]), reverse=True)
    [forwarded_first, forwarded_second] = by_length
    assert forwarded_first["Body"] == "Hi, a quick question?\nExample Corp: Reply STOP to opt out."
    assert forwarded_first["MediaUrl"] == ["https://example.com/a.png", "https://example.com/b.png"]
    assert forwarded_first["To"] == NY
    assert forwarded_second["Body"] == "Following up"
    assert second.sid != first.sid


class NoticeRecordHeld(SqliteStore):
    """A store whose opt-out notice records wait until the test lets them through."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.release = asyncio.Event()

    async def mark_notice_sent(self, recipient: str, at: datetime) -> None:
        await self.release.wait()
        await super().mark_notice_sent(recipient, at)


async def test_notice_record_in_flight_counts_and_is_written_before_shutdown(
    gateway_factory, tmp_path
) -> None:
    """The answer does not wait for the notice record; a second text meanwhile must still
    not repeat the notice, and stopping the gateway must not lose the record."""
    store = NoticeRecordHeld(tmp_path / "held.db")
    gateway = await gateway_factory(TWILIO_CONFIG, clock=Clock(NOON_NY), store=store)
    await record_written_consents(gateway)
    client = sdk(gateway)
    try:
        await send_sms(client, body="First")
        await send_sms(client, body="Second")
        assert await store.notice_sent_at([NY]) == {}  # still held
        bodies = sorted(f["Body"] for f in outbox(gateway))
        assert bodies == ["First\nExample Corp: Reply STOP to opt out.", "Second"]
        stopping = asyncio.create_task(gateway.stop())
        await asyncio.sleep(0.05)
        assert not stopping.done()  # waiting for the held record
    finally:
        store.release.set()
    await stopping
    reopened = SqliteStore(tmp_path / "held.db")
    await reopened.open()
    await reopened.use_data_cipher(gateway.services.data_keys.cipher)  # its rows are sealed
    try:
        assert list(await reopened.notice_sent_at([NY])) == [NY]
    finally:
        await reopened.close()


async def test_call_is_forwarded(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    call = await asyncio.to_thread(
        sdk(gateway).calls.create, to=NY, from_=FROM, url="https://agent.example.com/voice"
    )
    assert call.sid.startswith("CA")
    assert call.status == "queued"
    [forwarded] = outbox(gateway)
    assert forwarded == {"To": NY, "From": FROM, "Url": "https://agent.example.com/voice"}


async def test_opted_out_number_is_21610_and_recorded(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    await gateway.services.store.add_suppressions(
        [Suppression(NY, "test", "asked", NOON_NY)]
    )
    error = await refused(send_sms(sdk(gateway)))
    assert (error.status, error.code) == (400, 21610)
    assert "SUPPRESSED" in error.msg
    [block] = await gateway.services.store.query_blocks(BlockQuery())
    assert (block.recipient, block.channel.value) == (NY, "sms")
    assert outbox(gateway) == []


async def test_invalid_number_is_21211(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    error = await refused(send_sms(sdk(gateway), to="+1555"))
    assert (error.status, error.code) == (400, 21211)
    assert "INVALID_RECIPIENT" in error.msg


async def test_quiet_hours_is_30610_with_the_zone_in_the_message(gateway_factory) -> None:
    gateway = await start(gateway_factory, now=LATE_NY)
    error = await refused(asyncio.to_thread(
        sdk(gateway).calls.create, to=NY, from_=FROM, url="https://agent.example.com/voice"
    ))
    assert (error.status, error.code) == (400, 30610)
    assert "QUIET_HOURS" in error.msg
    assert "America/New_York" in error.msg
    [block] = await gateway.services.store.query_blocks(BlockQuery(reason="QUIET_HOURS"))
    assert block.reasons[0].rule.startswith(("tcpa", "state."))


async def test_transactional_is_exempt_from_windows_never_from_opt_outs(gateway_factory) -> None:
    gateway = await start(gateway_factory, now=LATE_NY)
    client = sdk(gateway, "notifier", TRANSACTIONAL_SECRET)
    await send_sms(client, body="Your code is 123456")
    assert outbox(gateway)[0]["Body"] == "Your code is 123456"
    await gateway.services.store.add_suppressions([Suppression(NY, "t", "t", LATE_NY)])
    error = await refused(send_sms(client, body="Your code is 654321"))
    assert error.code == 21610


async def test_wrong_credentials_and_wrong_account_sid(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    error = await refused(send_sms(sdk(gateway, password="not-the-secret")))
    assert (error.status, error.code) == (401, 20003)
    error = await refused(send_sms(sdk(gateway, account_sid="AC" + "1" * 32)))
    assert error.status == 404
    assert outbox(gateway) == []


async def test_sdk_style_credentials_account_sid_as_user(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    message = await send_sms(sdk(gateway, user=SID))
    assert message.sid.startswith("SM")


@pytest.mark.parametrize(
    ("channel", "form", "code"),
    [
        ("Messages", {"From": FROM, "Body": "x"}, 21604),
        ("Messages", {"To": NY, "Body": "x"}, 21603),
        ("Messages", {"To": NY, "From": FROM}, 21602),
        ("Messages", {"To": NY, "From": FROM, "Body": "x" * 1600}, 21617),
        ("Calls", {"From": FROM, "Url": "https://a.example.com"}, 21201),
        ("Calls", {"To": NY, "Url": "https://a.example.com"}, 21213),
        ("Calls", {"To": NY, "From": FROM}, 21205),
    ],
)
async def test_missing_or_oversized_fields(gateway_factory, channel, form, code) -> None:
    gateway = await start(gateway_factory)
    url = f"http://127.0.0.1:{gateway.http_port}/2010-04-01/Accounts/{SID}/{channel}.json"
    async with aiohttp.ClientSession(headers=DEMO_AUTH) as http:
        async with http.post(url, data=form) as response:
            body = await response.json()
    assert response.status == 400
    assert body["code"] == code
    assert body["status"] == 400
    assert set(body) == {"code", "message", "more_info", "status"}
    assert outbox(gateway) == []
    [block] = await gateway.services.store.query_blocks(BlockQuery())
    assert block.reasons[0].code == "MESSAGE_MALFORMED"


async def test_malformed_form_body_is_a_clear_400(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    url = f"http://127.0.0.1:{gateway.http_port}/2010-04-01/Accounts/{SID}/Messages.json"
    headers = {"Content-Type": "multipart/form-data; boundary=nothing-here"}
    async with aiohttp.ClientSession(headers=DEMO_AUTH) as http:
        async with http.post(url, data=b"garbage", headers=headers) as response:
            assert response.status == 400
            assert (await response.json())["code"] in (20001, 21604)
    assert outbox(gateway) == []


async def test_frequency_cap_holds_under_concurrency(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    url = f"http://127.0.0.1:{gateway.http_port}/2010-04-01/Accounts/{SID}/Messages.json"
    async with aiohttp.ClientSession(headers=DEMO_AUTH) as http:

        async def one(index: int) -> tuple[int, dict]:
            form = {"To": FL, "From": FROM, "Body": f"offer {index}"}
            async with http.post(url, data=form) as response:
                return response.status, await response.json()

        results = await asyncio.gather(*(one(i) for i in range(20)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] * 3 + [400] * 17
    capped = [body for status, body in results if status == 400]
    assert all("FREQUENCY_CAP" in body["message"] for body in capped)
    assert len(outbox(gateway)) == 3


def sign(url: str, params: dict[str, str]) -> str:
    return RequestValidator(AUTH_TOKEN).compute_signature(url, params)


_message_sids = itertools.count(1)


async def post_webhook(gateway: Gateway, params: dict[str, str], signature: str | None = None):
    """Signed as Twilio signs it, with a fresh `MessageSid` as every inbound message has."""
    params = {"MessageSid": f"SM{next(_message_sids):032x}", **params}
    url = f"http://127.0.0.1:{gateway.http_port}/webhooks/twilio"
    headers = {"X-Twilio-Signature": signature if signature is not None else sign(url, params)}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=params, headers=headers) as response:
            return response.status, await response.text()


@pytest.mark.parametrize("body", ["STOP", "stop", "Please STOP texting me!!", "opt out", "Revoke"])
async def test_signed_stop_opts_out_and_next_text_is_refused(gateway_factory, body) -> None:
    gateway = await start(gateway_factory)
    status, twiml = await post_webhook(gateway, {"From": NY, "To": FROM, "Body": body})
    assert status == 200
    assert twiml.count("<Message>") == 1
    assert await gateway.services.store.suppressed([NY]) == {NY}
    error = await refused(send_sms(sdk(gateway)))
    assert error.code == 21610


async def test_start_lifts_a_keyword_opt_out_but_never_an_operator_suppression(
    gateway_factory,
) -> None:
    clock = SteppingClock(NOON_NY)
    gateway = await gateway_factory(TWILIO_CONFIG, clock=clock)
    await post_webhook(gateway, {"From": NY, "To": FROM, "Body": "STOP"})
    clock.advance(OPT_IN_REORDER_WINDOW.total_seconds() + 1)  # tests/web/test_twilio_webhook
    await post_webhook(gateway, {"From": NY, "To": FROM, "Body": "START"})
    assert await gateway.services.store.suppressed([NY]) == frozenset()
    await gateway.services.suppressions.add([FL], source="cli", reason="legal", actor="op")
    status, twiml = await post_webhook(gateway, {"From": FL, "To": FROM, "Body": "START"})
    assert status == 200
    assert "<Message>" not in twiml
    assert await gateway.services.store.suppressed([FL]) == {FL}


async def test_ordinary_reply_changes_nothing(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    status, twiml = await post_webhook(gateway, {"From": NY, "To": FROM, "Body": "sounds good"})
    assert status == 200
    assert "<Message>" not in twiml
    assert await gateway.services.store.suppressed([NY]) == frozenset()


@pytest.mark.parametrize(
    "signature",
    ["", "not-a-signature", base64.b64encode(b"x" * 20).decode()],
    ids=["missing", "garbage", "wrong"],
)
async def test_forged_webhook_is_403_and_changes_nothing(gateway_factory, signature) -> None:
    gateway = await start(gateway_factory)
    status, _ = await post_webhook(gateway, {"From": NY, "Body": "STOP"}, signature=signature)
    assert status == 403
    assert await gateway.services.store.suppressed([NY]) == frozenset()


async def test_signature_over_other_params_is_refused(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    url = f"http://127.0.0.1:{gateway.http_port}/webhooks/twilio"
    signature = sign(url, {"From": FL, "Body": "hello"})
    status, _ = await post_webhook(gateway, {"From": NY, "Body": "STOP"}, signature=signature)
    assert status == 403


class FakeTwilio:
    """Twilio's REST API as far as the gateway uses it, recording every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, list[tuple[str, str]]]] = []
        self.answers: list[tuple[int, dict]] = []
        self.delays: list[float] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakeTwilio:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/{resource}", self.create)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def create(self, request: web.Request) -> web.Response:
        form = [(k, str(v)) for k, v in (await request.post()).items()]
        self.requests.append((request.path, request.headers.get("Authorization", ""), form))
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))
        if self.answers:
            status, body = self.answers.pop(0)
            return web.json_response(body, status=status)
        return web.json_response(
            {"sid": "SM" + "f" * 32, "status": "queued", "to": dict(form)["To"]}, status=201
        )


async def test_twilio_upstream_gets_gateway_credentials_and_errors_come_back(
    gateway_factory,
) -> None:
    async with FakeTwilio() as fake:
        extra = TWILIO_CONFIG.replace('kind = "outbox"', "kind = \"twilio\"\nbase_url = "
                                      f'"http://127.0.0.1:{fake.port}"')
        gateway = await gateway_factory(extra, clock=Clock(NOON_NY))
        await record_written_consents(gateway)
        client = sdk(gateway)
        message = await send_sms(client)
        assert message.sid == "SM" + "f" * 32
        path, authorization, form = fake.requests[0]
        assert path == f"/2010-04-01/Accounts/{SID}/Messages.json"
        assert authorization == "Basic " + base64.b64encode(f"{SID}:{AUTH_TOKEN}".encode()).decode()
        assert DEMO_SECRET not in authorization
        assert dict(form)["Body"].endswith("Reply STOP to opt out.")

        fake.answers.append((400, {"code": 21610, "message": "Attempt to send to unsubscribed "
                                   "recipient", "more_info": "x", "status": 400}))
        error = await refused(send_sms(client, to=FL))
        assert (error.status, error.code) == (400, 21610)
        assert await gateway.services.store.suppressed([FL]) == {FL}

        fake.answers.append((500, {"message": "boom"}))
        error = await refused(send_sms(client, to="+12025550123"))
        assert error.status == 503


async def post_form(gateway: Gateway, resource: str, form) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{gateway.http_port}/2010-04-01/Accounts/{SID}/{resource}.json"
    async with aiohttp.ClientSession(headers=DEMO_AUTH) as http:
        async with http.post(url, data=form) as response:
            return response.status, await response.json()


@pytest.mark.parametrize(
    ("resource", "form", "says"),
    [
        ("Messages", {"To": NY, "From": FROM, "Body": "x", "SendAt": "2026-06-03T07:00:00Z",
                      "ScheduleType": "fixed"}, "Scheduled"),
        ("Messages", [("To", NY), ("to", FL), ("From", FROM), ("Body", "x")], "to"),
        ("Messages", {"To": NY, "From": FROM, "ContentSid": "HX" + "0" * 32}, "ContentSid"),
        ("Calls", {"To": NY, "From": FROM, "Twiml": "<Response><Dial>+13055550199</Dial>"
                   "</Response>"}, "Dial"),
        ("Calls", {"To": NY, "From": FROM, "Twiml": "<Response><Redirect>https://agent.example"
                   ".com/next</Redirect></Response>"}, "Redirect"),
        ("Calls", {"To": NY, "From": FROM, "Twiml": '<Response><Gather action="https://agent.'
                   'example.com/g"><Say>Press 1</Say></Gather></Response>'}, "Gather action"),
        ("Calls", {"To": NY, "From": FROM, "Twiml": '<Response><Record action="/r"/>'
                   "</Response>"}, "Record action"),
        ("Calls", {"To": NY, "From": FROM, "Twiml": "<Response><Connect><Stream url=\"wss://"
                   "a.example.com\"/></Connect></Response>"}, "Connect"),
        ("Calls", {"To": NY, "From": FROM, "Twiml": "<Response><Refer><Sip>sip:b@x.example.com"
                   "</Sip></Refer></Response>"}, "Refer"),
        ("Calls", {"To": NY, "From": FROM, "Twiml": "<Response><Enqueue>q</Enqueue>"
                   "</Response>"}, "Enqueue"),
        ("Calls", {"To": NY, "From": FROM, "Twiml": "<Response><dial>+13055550199</dial>"
                   "</Response>"}, "dial"),
        ("Calls", {"To": NY, "From": FROM, "Twiml": '<!DOCTYPE r [<!ENTITY d "<Dial>1</Dial>">'
                   "]><Response>&d;</Response>"}, "DOCTYPE"),
        ("Calls", {"To": NY, "From": FROM, "Twiml": "<Response><Say>hi</Response>"},
         "not well-formed"),
        ("Calls", {"To": NY, "From": FROM, "Url": "https://elsewhere.example.net/voice"},
         "twiml_hosts"),
        ("Calls", {"To": NY, "From": FROM, "Url": "https://agent.example.com/voice",
                   "FallbackUrl": "https://elsewhere.example.net/voice"}, "FallbackUrl"),
        ("Calls", {"To": NY, "From": FROM, "ApplicationSid": "AP" + "0" * 32},
         "ApplicationSid"),
    ],
    ids=["scheduled", "lowercase-to", "content-template", "twiml-dial", "twiml-redirect",
         "twiml-gather-action", "twiml-record-action", "twiml-connect", "twiml-refer",
         "twiml-enqueue", "twiml-lowercase-dial", "twiml-entity", "twiml-malformed",
         "url-host", "fallback-url-host", "application-sid"],
)
async def test_parameters_that_would_escape_the_check_are_refused(
    gateway_factory, resource, form, says
) -> None:
    gateway = await start(gateway_factory)
    status, body = await post_form(gateway, resource, form)
    assert status == 400
    assert body["code"] == 20001
    assert says in body["message"]
    assert outbox(gateway) == []


async def test_media_only_marketing_text_gets_the_notice_as_body(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    status, _ = await post_form(
        gateway, "Messages", {"To": NY, "From": FROM, "MediaUrl": "https://e.example.com/a.png"}
    )
    assert status == 201
    [forwarded] = outbox(gateway)
    assert forwarded["Body"] == "Example Corp: Reply STOP to opt out."


async def test_notice_on_every_text_to_a_number_known_to_live_in_canada(gateway_factory) -> None:
    from gateway.model import KnownLocation

    gateway = await start(gateway_factory)
    await gateway.services.store.set_known_location(NY, KnownLocation(region="CA-ON"))
    client = sdk(gateway)
    await send_sms(client, body="first")
    await send_sms(client, body="second")
    bodies = sorted(f["Body"] for f in outbox(gateway))
    assert all(b.endswith("Reply STOP to opt out.") for b in bodies)


@pytest.mark.parametrize(
    ("number", "at"),
    [
        ("+16892000000", datetime(2026, 6, 3, 0, 30, tzinfo=UTC)),  # 20:30 in Orlando
        ("+18005550123", NOON_NY),  # toll-free: no state to check
    ],
    ids=["orlando-689-overlay", "toll-free"],
)
async def test_numbers_whose_state_or_zone_is_not_obvious_are_blocked(
    gateway_factory, number, at
) -> None:
    gateway = await start(gateway_factory, now=at)
    error = await refused(send_sms(sdk(gateway), to=number))
    assert error.code == 30610


async def test_start_never_lifts_a_dnc_listing_and_stop_confirms_once(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    await gateway.services.suppressions.add(
        [NY], source="national-dnc:dnc.txt", reason="DNC", actor="operator"
    )
    status, first = await post_webhook(gateway, {"From": NY, "To": FROM, "Body": "STOP"})
    assert status == 200
    assert "<Message>" not in first  # already suppressed: no new confirmation
    _, confirmed = await post_webhook(gateway, {"From": FL, "To": FROM, "Body": "STOP"})
    assert confirmed.count("<Message>") == 1
    _, again = await post_webhook(gateway, {"From": FL, "To": FROM, "Body": "stop texting me"})
    assert "<Message>" not in again
    _, start_reply = await post_webhook(gateway, {"From": NY, "To": FROM, "Body": "START"})
    assert "<Message>" not in start_reply
    assert await gateway.services.store.suppressed([NY]) == {NY}


async def test_cap_still_counts_a_send_that_timed_out_at_twilio(gateway_factory) -> None:
    async with FakeTwilio() as fake:
        extra = TWILIO_CONFIG.replace(
            'kind = "outbox"',
            f'kind = "twilio"\nbase_url = "http://127.0.0.1:{fake.port}"\ntimeout_s = 0.3',
        )
        gateway = await gateway_factory(extra, clock=Clock(NOON_NY))
        await record_written_consents(gateway)
        fake.delays.append(1.0)
        error = await refused(send_sms(sdk(gateway), to=FL))
        assert error.status == 503
        counts = await gateway.services.store.contact_counts([FL], NOON_NY.replace(hour=0))
        assert counts[FL] == 1, "Twilio may have sent it: the contact must still count"


async def test_block_detail_shows_the_callee_zones_and_local_times(gateway_factory) -> None:
    gateway = await start(gateway_factory, now=LATE_NY, extra="""
[[accounts]]
name = "lead"
secret = "lead-secret-0123456"
role = "manager"
sender_domains = []
""")
    await refused(send_sms(sdk(gateway)))
    [block] = await gateway.services.store.query_blocks(BlockQuery())
    url = f"http://127.0.0.1:{gateway.http_port}/v1/blocks/{block.id}"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={"Authorization": "Bearer lead-secret-0123456"}) as r:
            detail = await r.json()
    assert detail["evidence"]["zones"] == ["America/New_York"]
    assert detail["evidence"]["local_times"]["America/New_York"].startswith("2026-06-02T22:30")
    assert detail["evidence"]["regions"] == ["US-NY"]
    assert detail["reason_details"][0]["citation"]
